"""Run a QAT burst in a separate, low-priority, bounded child process.

The agent side (:class:`BurstRunner`, :func:`gate_candidate`) never imports torch. It
writes the current bundle, the candidate pool and the job to a work directory (atomic
writes, no pickle: a bundle file, an ``.npz`` read with ``allow_pickle=False`` and JSON),
and starts ``python -m edge_agent.training.burst_child WORK_DIR``. The child lowers its
priority (``os.nice``), runs torch on one thread under ``RLIMIT_CPU`` / ``RLIMIT_AS``,
stops cleanly on SIGTERM (pre-emption) or when its CPU budget is spent, and writes
``result.eab`` and ``result.json``. The parent enforces the wall-clock bound (SIGTERM, then
SIGKILL after a grace period). A finished candidate still has to pass the gate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle import Bundle, BundleError
from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.calibrate import gate
from edge_agent.calibrate.burst_config import BurstConfig
from edge_agent.container import atomic_write_bytes
from edge_agent.contracts import Predict

log = logging.getLogger(__name__)

INPUT_BUNDLE = "input.eab"
POOL = "pool.npz"
JOB = "job.json"
RESULT_BUNDLE = "result.eab"
RESULT = "result.json"
LOG = "child.log"
EXIT_PREEMPTED = 3
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass(frozen=True)
class BurstLimits:
    """Resource bounds of one burst process."""

    wall_s: float = 120.0  # parent terminates the child after this
    cpu_s: float = 60.0  # child stops at this CPU time; RLIMIT_CPU kills it a little later
    memory_mb: int = 2048  # RLIMIT_AS of the child
    nice: int = 10  # added to the child's niceness
    grace_s: float = 5.0  # SIGTERM -> SIGKILL delay


@dataclass
class BurstOutcome:
    """How a burst ended: ``done`` (candidate in ``bundle_path``), ``preempted``,
    ``timeout`` or ``failed``."""

    state: str
    reason: str
    bundle_path: Path | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # user + system CPU seconds of the child process


class BurstRunner:
    """Starts, watches and pre-empts one burst child at a time (not thread-safe: call it
    from one thread, e.g. the agent's main loop)."""

    def __init__(self, work_dir: str | os.PathLike[str], limits: BurstLimits | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.limits = limits or BurstLimits()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._term_sent: float | None = None
        self._stop_reason = ""

    @property
    def running(self) -> bool:
        """Whether a child is running (or finished but not yet collected by :meth:`poll`)."""
        return self._proc is not None

    def start(
        self, bundle: Bundle, pool_x: np.ndarray, pool_y: np.ndarray, config: BurstConfig
    ) -> None:
        """Write the job files and start the child; raise if a burst is already running."""
        if self._proc is not None:
            raise RuntimeError("a burst is already running")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for name in (RESULT_BUNDLE, RESULT):
            (self.work_dir / name).unlink(missing_ok=True)
        save_bundle(bundle, self.work_dir / INPUT_BUNDLE)
        buf = io.BytesIO()
        np.savez(buf, x=np.asarray(pool_x, np.float32), y=np.asarray(pool_y, np.int64))
        atomic_write_bytes(self.work_dir / POOL, buf.getvalue())
        job = {"config": dataclasses.asdict(config), "limits": dataclasses.asdict(self.limits)}
        atomic_write_bytes(self.work_dir / JOB, json.dumps(job).encode())
        env = {**os.environ, **{k: "1" for k in _THREAD_ENV}}
        with open(self.work_dir / LOG, "wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.training.burst_child", str(self.work_dir)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self._started = time.monotonic()
        self._term_sent = None
        self._stop_reason = ""
        log.info("burst started: pid %d, %d pool samples", self._proc.pid, len(pool_x))

    def preempt(self, reason: str) -> None:
        """Ask the running child to stop (SIGTERM; SIGKILL follows after the grace period)."""
        if self._proc is None or self._term_sent is not None:
            return
        self._stop_reason = reason
        self._signal(signal.SIGTERM)
        self._term_sent = time.monotonic()
        log.info("burst pre-empted: %s", reason)

    def poll(self) -> BurstOutcome | None:
        """The outcome once the child has exited, else None (and enforce the bounds)."""
        proc = self._proc
        if proc is None:
            return None
        now = time.monotonic()
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == 0:
            if self._term_sent is None and now - self._started > self.limits.wall_s:
                self.preempt(f"wall-clock limit of {self.limits.wall_s:g} s")
                self._stop_reason = "timeout: " + self._stop_reason
            elif self._term_sent is not None and now - self._term_sent > self.limits.grace_s:
                self._signal(signal.SIGKILL)
            return None
        proc.returncode = os.waitstatus_to_exitcode(status)
        self._proc = None
        outcome = self._outcome(proc.returncode, now - self._started)
        outcome.cpu_s = usage.ru_utime + usage.ru_stime
        log.info(
            "burst %s after %.1f s (%.1f s CPU): %s",
            outcome.state,
            outcome.wall_s,
            outcome.cpu_s,
            outcome.reason,
        )
        return outcome

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> BurstOutcome | None:
        """Poll until the child exits or ``timeout`` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            outcome = self.poll()
            if outcome is not None or self._proc is None:
                return outcome
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(interval)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, sig)

    def _outcome(self, code: int, wall: float) -> BurstOutcome:
        result = self.work_dir / RESULT
        info: dict[str, Any] = {}
        if result.exists():
            try:
                info = json.loads(result.read_text())
            except (OSError, ValueError) as exc:
                info = {"state": "failed", "reason": f"unreadable {RESULT}: {exc}"}
        state = str(info.get("state", "failed"))
        reason = str(info.get("reason", f"exit code {code}"))
        if self._stop_reason.startswith("timeout"):
            state, reason = "timeout", self._stop_reason
        elif state != "done" and self._stop_reason:
            state, reason = "preempted", self._stop_reason
        elif state == "done" and code != 0:
            state, reason = "failed", f"exit code {code} after writing a result"
        bundle_path = self.work_dir / RESULT_BUNDLE if state == "done" else None
        return BurstOutcome(state, reason, bundle_path, dict(info.get("stats", {})), wall)


@dataclass
class GateOutcome:
    """The gate's decision on a burst candidate and, when accepted, the ready engine."""

    decision: gate.GateDecision
    bundle: Bundle | None
    engine: Any | None  # edge_agent.engine.engine.Engine, warmed up; None when refused


def gate_candidate(
    current: Predict,
    candidate_path: str | os.PathLike[str],
    X: np.ndarray,
    targets: np.ndarray,
    metric: str,
    bits: int,
    tolerance: float = 0.0,
    min_samples: int = 1,
    engine_factory: Callable[[Bundle, int], Any] | None = None,
) -> GateOutcome:
    """Load a burst's candidate, build and warm its engine at ``bits`` (off the inference
    thread), and run the accept-or-rollback gate on the held-out ``X``. The caller swaps
    ``engine`` in with one reference assignment when ``decision.accepted``."""
    from edge_agent.engine.engine import Engine

    factory = engine_factory or (lambda b, n: Engine(b, bits=n))
    try:
        bundle = load_bundle(candidate_path)
        engine = factory(bundle, bits)
    except (BundleError, ValueError) as exc:
        bad = gate.GateDecision(
            False, metric, float("nan"), float("nan"), 0, f"bad candidate: {exc}"
        )
        log.warning("burst candidate refused: %s", exc)
        return GateOutcome(bad, None, None)
    engine.warmup()
    decision = gate.check(
        current, engine.predict_classes, X, targets, metric, tolerance, min_samples
    )
    return GateOutcome(
        decision, bundle if decision.accepted else None, engine if decision.accepted else None
    )
