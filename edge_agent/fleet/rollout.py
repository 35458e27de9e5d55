"""``edge-agent rollout``: a new bundle to a canary share of agents, gated, then the rest.

Per agent: its configured bundle path comes from its ``config`` reply; the running bundle
is kept beside it as ``<bundle>.prev``, the new one is written to a temporary file and
renamed over the path (atomic), and the ``reload`` command makes the agent load it (a
bundle it cannot load is refused there, the old model keeps running). The gate: once
``min_labelled`` labelled predictions were made by the new model, their accuracy must not
be lower than the agent's rolling accuracy before the push (minus ``tolerance``). A canary
that fails, or any failure before the rest are touched, rolls every canary back (the
``.prev`` file renamed back, reload, version checked). Agents outside the canary share that
fail their own gate are rolled back one by one. The bundle path must be writable from
here (the same host, or a shared file system).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.bundle import BundleError
from edge_agent.bundle_io import from_bytes
from edge_agent.client import ClientError, StatusClient

log = logging.getLogger(__name__)


@dataclass
class Target:
    """One agent in a rollout and what happened to it."""

    endpoint: str
    canary: bool = False
    bundle_path: Path | None = None
    old_version: str = ""  # what it ran (calibration may have moved it)
    prev_version: str = ""  # its configured bundle's, what a rollback restores
    before: float | None = None  # rolling accuracy before the push
    base: tuple[int, int] = (0, 0)  # (labelled, correct) right after the reload
    after: float | None = None  # accuracy of the new model's labelled predictions
    state: str = "pending"  # pushed, passed, failed, rolled_back, rollback_failed
    written: bool = False  # the new bundle was written over its path
    reason: str = ""


@dataclass
class Report:
    """The outcome: ``ok`` when every agent runs the new bundle and passed its gate."""

    new_version: str
    targets: list[Target] = field(default_factory=list)
    ok: bool = False
    events: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "ok": self.ok,
            "new_version": self.new_version,
            "events": self.events,
            "agents": [
                {
                    **{k: v for k, v in t.__dict__.items() if k != "bundle_path"},
                    "bundle_path": str(t.bundle_path),
                }
                for t in self.targets
            ],
        }


def _request(ep: str, cmd: str, timeout_s: float) -> dict[str, Any]:
    with StatusClient(ep, timeout_s) as c:
        return c.request(cmd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{time.monotonic_ns()}")
    tmp.write_bytes(data)
    tmp.replace(path)


class Rollout:
    """One rollout run (see the module docstring)."""

    def __init__(
        self,
        bundle: Path,
        endpoints: list[str],
        canary_share: float = 0.2,
        min_labelled: int = 50,
        tolerance: float = 0.0,
        gate_timeout_s: float = 300.0,
        timeout_s: float = 60.0,
        poll_s: float = 0.5,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no agents given")
        if not 0 < canary_share <= 1:
            raise ValueError("canary share must be in (0, 1]")
        self.data = Path(bundle).read_bytes()
        try:
            new = from_bytes(self.data, str(bundle))
        except BundleError as exc:
            raise ValueError(f"not pushing it: {exc}") from None
        n = len(endpoints)
        k = max(1, math.ceil(canary_share * n))
        k = min(k, n - 1) if n > 1 and canary_share < 1 else k
        self.report = Report(
            new.model_version, [Target(ep, i < k) for i, ep in enumerate(endpoints)]
        )
        self.min_labelled, self.tolerance = min_labelled, tolerance
        self.gate_timeout_s, self.timeout_s, self.poll_s = gate_timeout_s, timeout_s, poll_s
        self.on_event = on_event

    def _event(self, msg: str) -> None:
        self.report.events.append(f"{time.strftime('%H:%M:%S')} {msg}")
        log.info("%s", msg)
        if self.on_event is not None:
            self.on_event(msg)

    def run(self) -> Report:
        """Canaries, gate, then the rest; roll back what fails."""
        r = self.report
        canaries = [t for t in r.targets if t.canary]
        rest = [t for t in r.targets if not t.canary]
        self._event(f"rollout of {r.new_version}: {len(canaries)} canaries, {len(rest)} more")
        for t in r.targets:
            self._inspect(t)
        if any(t.state == "failed" for t in r.targets):
            self._event("not starting: an agent could not be inspected")
            return r
        if not self._wave(canaries):
            self._event("canaries failed the gate: rolling back every canary")
            for t in canaries:
                self._rollback(t)
            return r
        self._event("canaries passed: rolling out to the rest")
        self._wave(rest)
        for t in rest:
            if t.state == "failed":
                self._rollback(t)
        r.ok = all(t.state == "passed" for t in r.targets)
        self._event(
            f"rollout {'complete' if r.ok else 'incomplete'}: "
            f"{sum(t.state == 'passed' for t in r.targets)}/{len(r.targets)} agents "
            f"run {r.new_version}"
        )
        return r

    def _inspect(self, t: Target) -> None:
        try:
            cfg = _request(t.endpoint, "config", self.timeout_s)["config"]
            st = _request(t.endpoint, "status", self.timeout_s)
        except (ClientError, KeyError) as exc:
            self._fail(t, f"cannot inspect: {exc}")
            return
        t.bundle_path = Path(cfg["model"]["bundle"])
        t.old_version = st["model"]["version"]
        t.before = st["accuracy"]["rolling"]
        if t.before is None:
            self._fail(t, "no labelled predictions yet: nothing to gate on")

    def _fail(self, t: Target, reason: str) -> None:
        t.state, t.reason = "failed", reason
        self._event(f"{t.endpoint}: {reason}")

    def _wave(self, targets: list[Target]) -> bool:
        """Push to ``targets`` and gate them together; True when all passed."""
        for t in targets:
            self._push(t)
        deadline = time.monotonic() + self.gate_timeout_s
        waiting = [t for t in targets if t.state == "pushed"]
        while waiting and time.monotonic() < deadline:
            time.sleep(self.poll_s)
            for t in list(waiting):
                if self._gate(t):
                    waiting.remove(t)
        for t in waiting:
            self._fail(
                t,
                f"gate: fewer than {self.min_labelled} labelled predictions within "
                f"{self.gate_timeout_s:.0f} s",
            )
        return all(t.state == "passed" for t in targets)

    def _push(self, t: Target) -> None:
        assert t.bundle_path is not None
        path = t.bundle_path
        try:
            prev = path.read_bytes()
            t.prev_version = from_bytes(prev, str(path)).model_version
            _write_atomic(path.with_name(path.name + ".prev"), prev)
            _write_atomic(path, self.data)
            t.written = True
            res = _request(t.endpoint, "reload", self.timeout_s)
            st = _request(t.endpoint, "status", self.timeout_s)
        except (OSError, ClientError, BundleError) as exc:
            self._fail(t, f"push failed: {exc}")
            return
        if st["model"]["version"] != self.report.new_version:
            self._fail(t, f"the agent did not load it: {res.get('error') or 'model unchanged'}")
            return
        acc = st["accuracy"]
        t.base, t.state = (acc["labelled_total"], acc["labelled_correct"]), "pushed"
        self._event(
            f"{t.endpoint}: runs {self.report.new_version} (was {t.old_version}); "
            f"gating against accuracy {t.before:.3f}"
        )

    def _gate(self, t: Target) -> bool:
        """True once the gate decided (passed or failed)."""
        try:
            st = _request(t.endpoint, "status", self.timeout_s)
        except ClientError as exc:
            self._fail(t, f"gate: {exc}")
            return True
        acc = st["accuracy"]
        n = acc["labelled_total"] - t.base[0]
        if st["model"]["version"] != self.report.new_version:
            self._fail(t, f"gate: the agent runs {st['model']['version']} now")
            return True
        if n < self.min_labelled:
            return False
        t.after = (acc["labelled_correct"] - t.base[1]) / n
        assert t.before is not None
        if t.after + self.tolerance >= t.before:
            t.state = "passed"
            self._event(
                f"{t.endpoint}: gate passed ({t.after:.3f} on {n} labelled vs "
                f"{t.before:.3f} before)"
            )
        else:
            self._fail(t, f"gate failed ({t.after:.3f} on {n} labelled vs {t.before:.3f} before)")
        return True

    def _rollback(self, t: Target) -> None:
        if t.bundle_path is None or not t.written or t.state == "rolled_back":
            return  # nothing of ours is on that agent
        prev = t.bundle_path.with_name(t.bundle_path.name + ".prev")
        try:
            _write_atomic(t.bundle_path, prev.read_bytes())
            _request(t.endpoint, "reload", self.timeout_s)
            version = _request(t.endpoint, "status", self.timeout_s)["model"]["version"]
        except (OSError, ClientError) as exc:
            t.state, t.reason = "rollback_failed", f"{t.reason}; rollback: {exc}"
            self._event(f"{t.endpoint}: ROLLBACK FAILED: {exc}")
            return
        if version != t.prev_version:
            t.state = "rollback_failed"
            self._event(f"{t.endpoint}: ROLLBACK FAILED: runs {version}, not {t.prev_version}")
            return
        t.state = "rolled_back"
        # a model the agent had recalibrated in place restarts from its configured bundle
        self._event(f"{t.endpoint}: rolled back to {t.prev_version}")
