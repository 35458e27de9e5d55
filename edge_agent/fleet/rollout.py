"""``edge-agent rollout``: a new bundle to a canary share of agents, gated, then the rest.

Per agent, everything goes over its status socket (ipc, or tcp with CURVE across the
LAN); nothing needs access to the agent's files. The ``push`` command carries the bundle
(at most the agent's ``status.max_push_bytes``, read from its ``config`` reply first):
the agent writes it into its state directory, loads and warms it up, and only then runs
it, keeping the bundle it replaced (a bundle it cannot load is refused, the old model
keeps running). The gate: once ``min_labelled`` labelled predictions were made by the
new model, their accuracy must not be lower than the agent's rolling accuracy before the
push (minus ``tolerance``). A canary that fails, or any failure before the rest are
touched, rolls every canary back (the ``rollback`` command: the agent runs the bundle the
push replaced again; the version is checked). Agents outside the canary share that fail
their own gate are rolled back one by one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.bundle import BundleError
from edge_agent.bundle_io import from_bytes
from edge_agent.client import AgentAddress, ClientError, status_client

log = logging.getLogger(__name__)

PUSH_EXTRA_S = 60.0  # on top of the request timeout: the agent loads and warms the bundle


@dataclass
class Target:
    """One agent in a rollout and what happened to it."""

    address: AgentAddress
    canary: bool = False
    max_push_bytes: int = 0  # the agent's status.max_push_bytes
    old_version: str = ""  # what it ran (calibration may have moved it)
    prev_version: str = ""  # the bundle the push replaced, what a rollback restores
    before: float | None = None  # rolling accuracy before the push
    base: tuple[int, int] = (0, 0)  # (labelled, correct) right after the push
    after: float | None = None  # accuracy of the new model's labelled predictions
    state: str = "pending"  # pushed, passed, failed, rolled_back, rollback_failed
    written: bool = False  # the agent took the new bundle
    reason: str = ""

    @property
    def endpoint(self) -> str:
        """The agent's status endpoint."""
        return self.address.endpoint


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
                    "endpoint": t.endpoint,
                    "curve": t.address.server_key is not None,
                    **{k: v for k, v in t.__dict__.items() if k != "address"},
                }
                for t in self.targets
            ],
        }


class Rollout:
    """One rollout run (see the module docstring)."""

    def __init__(
        self,
        bundle: Path,
        endpoints: Sequence[str | AgentAddress],
        canary_share: float = 0.2,
        min_labelled: int = 50,
        tolerance: float = 0.0,
        gate_timeout_s: float = 300.0,
        timeout_s: float = 60.0,
        poll_s: float = 0.5,
        on_event: Callable[[str], None] | None = None,
        client_key: tuple[bytes, bytes] | None = None,
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
        addresses = [a if isinstance(a, AgentAddress) else AgentAddress(a) for a in endpoints]
        self.report = Report(new.model_version, [Target(a, i < k) for i, a in enumerate(addresses)])
        self.client_key = client_key
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

    def _request(
        self, t: Target, cmd: str, bundle: bytes | None = None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        with status_client(t.address, timeout_s or self.timeout_s, self.client_key) as c:
            return c.request(cmd, bundle)

    def _inspect(self, t: Target) -> None:
        try:
            cfg = self._request(t, "config")["config"]
            st = self._request(t, "status")
            t.max_push_bytes = int(cfg["status"]["max_push_bytes"])
        except (ClientError, KeyError, TypeError, ValueError) as exc:
            self._fail(t, f"cannot inspect: {exc}")
            return
        t.old_version = st["model"]["version"]
        t.before = st["accuracy"]["rolling"]
        if len(self.data) > t.max_push_bytes:
            self._fail(
                t,
                f"the bundle is {len(self.data)} bytes; the agent takes at most "
                f"{t.max_push_bytes} (its status.max_push_bytes)",
            )
        elif t.before is None:
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
        try:
            # the agent loads and warms the bundle up before it answers
            res = self._request(t, "push", self.data, self.timeout_s + PUSH_EXTRA_S)
        except ClientError as exc:
            self._fail(t, f"push failed: {exc}")
            return
        if res.get("error") or not res.get("changed"):
            self._fail(t, f"the agent did not take it: {res.get('error') or 'model unchanged'}")
            return
        t.written, t.prev_version = True, str(res.get("previous_version", ""))
        try:
            st = self._request(t, "status")
        except ClientError as exc:
            self._fail(t, f"after the push: {exc}")
            return
        if st["model"]["version"] != self.report.new_version:
            self._fail(t, f"the agent runs {st['model']['version']} after the push")
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
            st = self._request(t, "status")
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
        if not t.written or t.state in ("rolled_back", "rollback_failed"):
            return  # nothing of ours is on that agent
        try:
            res = self._request(t, "rollback", timeout_s=self.timeout_s + PUSH_EXTRA_S)
            version = self._request(t, "status")["model"]["version"]
        except ClientError as exc:
            t.state, t.reason = "rollback_failed", f"{t.reason}; rollback: {exc}"
            self._event(f"{t.endpoint}: ROLLBACK FAILED: {exc}")
            return
        if res.get("error") or (t.prev_version and version != t.prev_version):
            t.state = "rollback_failed"
            why = res.get("error") or f"runs {version}, not {t.prev_version}"
            t.reason = f"{t.reason}; rollback: {why}"
            self._event(f"{t.endpoint}: ROLLBACK FAILED: {why}")
            return
        t.state = "rolled_back"
        # a model the agent had recalibrated in place restarts from the bundle it ran
        self._event(f"{t.endpoint}: rolled back to {version}")
