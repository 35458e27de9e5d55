"""When to run QAT bursts, and what to do with their results (agent side, no torch).

:class:`BurstScheduler` is called from the agent's main loop between inference batches
with the energy policy's current decision. It starts a burst (child process, see
:mod:`burst_runner`) when the policy allows one, the last one is ``interval_s`` old and the
candidate pool is large enough; it pre-empts a running burst as soon as the policy says
no; and when a burst finishes it gates the candidate on a held-out part of the pool. The
slow steps run in one worker thread, never on the inference thread: gathering the pool
(the caller's pool source is called there), writing the burst's inputs and spawning the
child, and building, warming and scoring the candidate engine. A later :meth:`tick` hands
back the accepted engine and bundle; the caller swaps the engine in with one reference
assignment and checkpoints the bundle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.calibrate import gate
from edge_agent.calibrate.burst_config import BurstConfig
from edge_agent.calibrate.burst_runner import BurstLimits, BurstRunner, GateOutcome, gate_candidate
from edge_agent.contracts import Predict
from edge_agent.energy import EnergyDecision

log = logging.getLogger(__name__)

# (X raw float32, targets: label or FP pseudo-label, labelled mask) of the candidate pool;
# called from the scheduler's worker thread
PoolSource = Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class SchedulerConfig:
    """Scheduling and gating of bursts."""

    interval_s: float = 600.0  # at least this long between burst starts
    min_pool: int = 32  # fewer candidate samples: no burst
    holdout_fraction: float = 0.3  # of the pool, kept out of the burst for the gate
    gate_tolerance: float = 0.0
    gate_min_samples: int = 8
    burst: BurstConfig = field(default_factory=BurstConfig)
    limits: BurstLimits = field(default_factory=BurstLimits)


@dataclass
class _Counters:
    started: int = 0
    accepted: int = 0
    rolled_back: int = 0
    preempted: int = 0
    failed: int = 0
    cpu_s_total: float = 0.0


class BurstScheduler:
    """Starts, pre-empts and gates bursts; :meth:`status` is ready for ``edge-agent status``."""

    def __init__(
        self,
        work_dir: str | Path,
        cfg: SchedulerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg or SchedulerConfig()
        self.runner = BurstRunner(work_dir, self.cfg.limits)
        self._clock = clock
        self._last_start = -float("inf")
        self._holdout: tuple[np.ndarray, np.ndarray, str] | None = None
        self._bits = 0
        self._starting: Future[bool] | None = None
        self._gating: Future[GateOutcome] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="burst-worker")
        self.counters = _Counters()
        self.last: dict[str, Any] = {}

    @property
    def state(self) -> str:
        """``idle``, ``starting`` (pool being gathered, child being spawned), ``running``
        (child alive) or ``gating`` (candidate being checked)."""
        if self.runner.running:
            return "running"
        if self._starting is not None and not self._starting.done():
            return "starting"
        return "gating" if self._gating is not None else "idle"

    def tick(
        self,
        decision: EnergyDecision,
        bundle: Bundle,
        current: Predict,
        pool: PoolSource,
        wanted: bool = True,
    ) -> GateOutcome | None:
        """One step of the scheduler; returns an *accepted* gate outcome once, else None.
        ``wanted``: whether a new burst may start (the calibration's drift signal says
        there is something to recover from); a running one goes on either way."""
        if self._gating is not None:
            return self._collect_gate()
        if self._starting is not None:
            self._collect_start()
            return None
        if self.runner.running:
            if not decision.burst_allowed:
                self.runner.preempt("energy: " + "; ".join(decision.reasons))
            outcome = self.runner.poll()
            if outcome is not None:
                self._finished(outcome, current)
            return None
        if (
            wanted
            and decision.burst_allowed
            and self._clock() - self._last_start >= self.cfg.interval_s
        ):
            self._starting = self._pool.submit(self._start, decision.bits, bundle, pool)
        return None

    def _collect_start(self) -> None:
        assert self._starting is not None
        if not self._starting.done():
            return
        started, self._starting = self._starting, None
        try:
            started.result()
        except Exception as exc:  # e.g. no space for the burst's inputs: try again later
            self._last_start = self._clock()
            self.counters.failed += 1
            self.last = {"state": "failed", "reason": f"could not start: {exc}"}
            log.error("could not start a QAT burst: %s", exc)

    def _start(self, bits: int, bundle: Bundle, pool: PoolSource) -> bool:
        """Gather the pool and spawn the burst (worker thread); False if the pool is small."""
        X, targets, labelled = pool()
        if len(X) < self.cfg.min_pool:
            return False
        cal, hold = gate.holdout_split(len(X), self.cfg.holdout_fraction, self.counters.started)
        metric = "accuracy" if bool(np.all(labelled[hold])) else "fp_agreement"
        self._holdout = (X[hold], targets[hold], metric)
        y = np.where(labelled[cal], targets[cal], -1)
        self._bits = bits
        self.runner.start(bundle, X[cal], y, replace(self.cfg.burst, bits=bits))
        self._last_start = self._clock()
        self.counters.started += 1
        self.last = {
            "state": "running",
            "bits": bits,
            "pool": len(cal),
            "held_out": len(hold),
        }
        return True

    def _finished(self, outcome: Any, current: Predict) -> None:
        self.counters.cpu_s_total += outcome.cpu_s
        self.last.update(
            state=outcome.state,
            reason=outcome.reason,
            cpu_s=round(outcome.cpu_s, 2),
            wall_s=round(outcome.wall_s, 2),
        )
        if outcome.state == "preempted":
            self.counters.preempted += 1
        elif outcome.state != "done":
            self.counters.failed += 1
        else:
            assert self._holdout is not None and outcome.bundle_path is not None
            X, targets, metric = self._holdout
            self._gating = self._pool.submit(
                gate_candidate,
                current,
                outcome.bundle_path,
                X,
                targets,
                metric,
                self._bits,
                self.cfg.gate_tolerance,
                self.cfg.gate_min_samples,
            )

    def _collect_gate(self) -> GateOutcome | None:
        assert self._gating is not None
        if not self._gating.done():
            return None
        result, self._gating = self._gating.result(), None
        d = result.decision
        self.last["gate"] = {k: v for k, v in asdict(d).items()}
        if d.accepted:
            self.counters.accepted += 1
            return result
        self.counters.rolled_back += 1
        return None

    def status(self) -> dict[str, Any]:
        """State, counters and the last burst, JSON-ready."""
        return {"state": self.state, **asdict(self.counters), "last": dict(self.last)}

    def close(self) -> None:
        """Stop the worker (a burst it is starting still starts), then pre-empt a running
        burst."""
        self._pool.shutdown(wait=True)
        if self.runner.running:
            self.runner.preempt("agent stopping")
            self.runner.wait(timeout=self.cfg.limits.grace_s + 1)
