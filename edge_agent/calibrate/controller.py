"""Continual calibration inside the agent: collect stream samples, update the QCore
buffer with forward passes, run gated bit-flipping rounds, persist the result.

The data flow is ingest -> engine -> (this) buffer -> flip round -> engine.swap_weights.
The inference thread only offers samples and labels (:meth:`observe`, :meth:`feedback`:
short, under a lock); rounds run in the agent's calibration thread (:meth:`run`), so
inference never waits for one. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.bundle import Bundle, array_from_record, array_record
from edge_agent.calibrate import gate, stats_rung
from edge_agent.calibrate.calibration_config import CalibrationConfig
from edge_agent.calibrate.class_memo import ClassMemo, memo_key
from edge_agent.calibrate.domain_params import Held
from edge_agent.calibrate.drift_reference import DriftReference, OutputReference
from edge_agent.calibrate.drift_signal import DriftSignal
from edge_agent.calibrate.flip_net import FlipNet
from edge_agent.calibrate.flip_round import (
    BaseCheck,
    BitFlipCalibrator,
    RoundResult,
    greedy_proposer,
    network_proposer,
)
from edge_agent.calibrate.label_steps import LabelSteps
from edge_agent.calibrate.qcore import EXTRA_X, EXTRA_Y, QCoreBuffer
from edge_agent.calibrate.qcore_miss import neighbour_bits
from edge_agent.calibrate.routed import RoutedPredictor
from edge_agent.calibrate.routing import DomainRouting, Predictor
from edge_agent.calibrate.schedule import Job, StreamScheduler
from edge_agent.calibrate.stats_steps import StatsSteps
from edge_agent.engine.engine import Engine, ModelKey
from edge_agent.engine.fp_model import fp_predict_fn

log = logging.getLogger(__name__)
STATUS_WAIT_S = 0.2  # status waits this long for a buffer update in flight (see _read_buffer)


class CalibrationController(StatsSteps, LabelSteps):
    """Owns the QCore buffer, the drift signal and the rungs of one running bundle.

    The stream side (:meth:`observe`, :meth:`feedback`, :meth:`prescore`: stream order,
    short) is a :class:`StreamScheduler` that decides which jobs are due; :meth:`run`
    runs the oldest one (the calibration thread). ``count(name, n)``, if given, receives
    every counter (the agent's metrics registry); :attr:`counts` keeps them too.
    """

    def __init__(
        self,
        bundle: Bundle,
        cfg: CalibrationConfig,
        state: dict[str, Any] | None = None,
        count: Callable[[str, int], None] | None = None,
        carry: CalibrationController | None = None,
    ) -> None:
        self.bundle = bundle
        self.cfg = cfg
        self.counts: Counter[str] = Counter()
        self._count_to = count
        net = FlipNet.from_extras(bundle.extras)
        if net is None:
            log.warning("bundle has no flipping network: calibration uses greedy local flips")
        proposer = greedy_proposer() if net is None else network_proposer(net, cfg.flip.threshold)
        self.method = "greedy" if net is None else "network"
        self.calibrator = BitFlipCalibrator(bundle, proposer, cfg.flip)
        self.buffer = self._restore(state) or QCoreBuffer.from_bundle(bundle, cfg.buffer_config())
        self._fp_predict = fp_predict_fn(bundle)
        self._buffer_lock = threading.Lock()  # guards the buffer (state() vs run())
        self._last_read: dict[str, Any] = {}  # what _read_buffer read last, by reader
        self._neighbours: dict[int, Engine] = {}
        self._memo = ClassMemo()  # buffer updates predict only what a model has not seen
        self._scratch: Engine | None = None
        self._alarms_at_burst = 0
        # the episode (its alarm sample) whose statistics correction was kept
        self._stats_kept_in: int | None = None
        self._bursts_seen = 0
        self.last: dict[str, Any] = {}
        self.train_stats, self.stats_reason = (None, "off ([calibration] stats_rung = false)")
        if cfg.stats_rung:
            self.train_stats, self.stats_reason = stats_rung.statistics_of(bundle)
            log.log(
                logging.INFO if self.train_stats else logging.WARNING,
                "statistics rung: %s%s",
                self.stats_reason,
                "" if self.train_stats else ": the rung is off",
            )
        ref = self._reference()
        self.routing: DomainRouting | None = None
        if cfg.route and self.train_stats is not None:  # domains differ by their correction
            hidden = stats_rung.hidden_layers(bundle)
            self.routing = DomainRouting(bundle, hidden, ref, cfg.route_domains, self._count)
        self.stream = StreamScheduler(
            cfg.schedule_config(),
            self._drift_signal(ref),
            self.train_stats is not None,
            self._count,
        )
        if carry is not None:  # a QAT burst replaced the model: the stream side goes on
            self.carry_from(carry)

    @property
    def drift(self) -> DriftSignal | None:
        """The drift signal (None without a reference: a flip round every chunk)."""
        return self.stream.drift

    def _reference(self) -> DriftReference | None:
        """The bundle's drift reference, else one fitted on its QCore anchors, else None."""
        ref = DriftReference.from_extras(self.bundle.extras)
        if ref is None:
            X, y = self.calibrator.anchor_X, self.calibrator.anchor_y
            if len(y) >= 2:
                ref = DriftReference.fit(X, y, self.bundle.num_classes)
                log.info("drift signal: reference from the bundle's %d QCore anchors", len(y))
        return ref

    def _drift_signal(self, ref: DriftReference | None) -> DriftSignal | None:
        """The drift signal from the bundle's reference (else its anchors'), or None."""
        if ref is None and self.cfg.trigger == "drift":
            log.warning(
                "drift signal: the bundle has neither a drift reference nor QCore "
                "anchors: a flip round every %d samples instead",
                self.cfg.chunk,
            )
        if ref is None:
            return None
        out = OutputReference.from_extras(self.bundle.extras)
        if out is None and self.cfg.drift_output:
            anchors = self.bundle.extras.get(EXTRA_X)
            if anchors is not None and len(anchors) >= 2:  # the anchors: training samples
                out = OutputReference.fit(self.bundle, np.asarray(anchors, np.float32))
        if out is None or not self.cfg.drift_output:
            return DriftSignal(ref, self.cfg.drift_config())
        eng = out.engine(self.bundle)
        return DriftSignal(ref, self.cfg.drift_config(), out, eng.predict_logits, eng.model_key)

    def burst_wanted(self, started: int | None = None) -> bool:
        """Whether a QAT burst may start: a drift alarm came since the last one started
        (always with ``trigger = "samples"`` or without a drift signal). ``started``: the
        scheduler's count of started bursts (a change marks a start)."""
        if started is not None and started != self._bursts_seen:
            self._bursts_seen = started
            self.burst_started()
        if self.cfg.trigger == "samples" or self.drift is None:
            return True
        return self.counts["drift_alarms"] > self._alarms_at_burst

    def burst_started(self) -> None:
        """A burst started: the next needs a new alarm."""
        self._alarms_at_burst = self.counts["drift_alarms"]

    def carry_from(self, old: CalibrationController) -> None:
        """Take over the stream side of the controller this one replaces (a QAT burst
        changed the model): drift signal, episode, open chunk, jobs, counters."""
        self.stream, self.counts = old.stream, old.counts
        self._alarms_at_burst, self._bursts_seen = old._alarms_at_burst, old._bursts_seen

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n
        if self._count_to is not None:
            self._count_to(name, n)

    def _restore(self, state: dict[str, Any] | None) -> QCoreBuffer | None:
        if not state:
            return None
        try:
            arrays = {k: array_from_record(v, f"calibration.{k}") for k, v in state.items()}
            buf = QCoreBuffer.from_state(arrays, self.cfg.buffer_config())
        except ValueError as exc:
            log.error("saved QCore buffer is unusable (%s): starting from the bundle's QCore", exc)
            return None
        if buf.input_shape != self.bundle.input_shape:
            log.error(
                "saved QCore buffer is for inputs %s, the model takes %s: not used",
                buf.input_shape,
                self.bundle.input_shape,
            )
            return None
        log.info("QCore buffer restored: %d samples", len(buf))
        return buf

    # ------------------------------------------------------------------ stream side

    def prescore(
        self, X: np.ndarray, logits: np.ndarray | None = None, key: ModelKey | None = None
    ) -> None:
        """Drift scores of a batch in one call, before its samples are observed in order
        (``logits``: the inference's, of the model ``key``; reused where they are the
        drift model's, see :meth:`DriftSignal.score`)."""
        if self.cfg.enabled:
            self.stream.prescore(X, logits, key)

    def observe(self, x: np.ndarray, label: int | None, seq: int) -> None:
        """Offer one accepted stream sample, in stream order (every one)."""
        if self.cfg.enabled:
            self.stream.observe(x, label, seq)

    def observe_many(self, X: np.ndarray, labels: list[int | None], seqs: list[int]) -> None:
        """Offer a run of accepted stream samples, in stream order (as :meth:`observe`
        one by one, cheaper)."""
        if self.cfg.enabled:
            self.stream.observe_many(X, labels, seqs)

    def feedback(self, seq: int, label: int) -> None:
        """A label for an earlier sample: replaces its pseudo-label (applied by the next
        job if the sample is buffered, at once if it still waits in the chunk)."""
        self.stream.feedback(seq, label)

    def due(self) -> bool:
        """Whether a job waits for :meth:`run`."""
        return self.cfg.enabled and self.stream.waiting()[1] > 0

    # ------------------------------------------------------------------ rounds

    def predictor(self, engine: Engine, count: bool = False) -> Predictor:
        """What predicts with ``engine``: each sample on its domain's correction
        (:mod:`edge_agent.calibrate.routed`), or ``engine`` itself with routing off.
        ``count``: the samples count in ``status`` (the agent's predictions)."""
        return engine if self.routing is None else self.routing.predictor(engine, count)

    def _predict_by_bits(self, engine: Engine) -> dict[int, Any]:
        # prepared samples; the active width routed as the agent predicts
        live = self.predictor(engine)
        out = {engine.bits: self._memo.wrap(engine.bits, memo_key(live), live.predict_logits_keyed)}
        for b in neighbour_bits(engine.available_bits, engine.bits, self.cfg.neighbour_bits):
            if b != engine.bits:
                if b not in self._neighbours:
                    self._neighbours[b] = Engine(self.bundle, bits=b, scratch=True)
                nb = self._neighbours[b]
                out[b] = self._memo.wrap(b, nb.model_key, nb.predict_logits_keyed)
        return out

    def run(self, engine: Engine, seed: int | None = None) -> RoundResult | None:
        """Run the oldest due job: a buffer update, then its round if it has one (the
        result; None for a buffer update alone). Seeds derive from the job's index."""
        job = self.stream.get()
        if job is None:
            return None
        t0 = time.thread_time()
        upd = None
        if job.kind == "stats" and self._after_stats(job):
            return None  # this episode's correction is in: a later look has nothing to add
        if job.kind == "label":
            result = self._label_round(engine, job)
        elif job.kind == "stats":
            result = self._stats_round(engine, job)
            if result.version is not None:
                self._stats_kept_in = job.episode
        else:
            upd = self._update_buffer(engine, job)
            if job.kind == "update":
                return None
            with self._buffer_lock:
                bx, by = self.buffer.X.copy(), self.buffer.y.copy()
                blab = self.buffer.labelled.copy()
            # after an alarm, flips kept on the training domain make a domain of their own
            fork = self.routing is not None and self.routing.live == "base" and job.episode >= 0
            held = Held.of_engine(engine) if fork else None
            result = self.calibrator.run_round(
                engine,
                bx,
                by,
                seed=job.index if seed is None else seed,
                labelled=blab,
                recent=job.recent,
                # after this episode's statistics correction: flips must beat it where
                # they have not looked (the ladder does not end below its first rung)
                unseen=gate.unseen(job.recent, bx) if self._after_stats(job) else None,
                base=self._base_check(),
                lenient=self.routing is not None and self.routing.live != "base",
            )
            if held is not None and result.version is not None:
                assert self.routing is not None and job.X is not None
                self.routing.fork(engine, job.X, job.at, held)
                self.bundle = self.routing.saved(self.bundle)  # what the agent saves
        kept = result.version is not None
        self._count(f"{result.rung}_rounds_{'kept' if kept else 'rolled_back'}")
        self.last = {
            "time": time.time(),
            "rung": result.rung,
            "job": job.index,
            "at_sample": job.at,
            "method": {"flip": self.method, "stats": "statistics"}.get(result.rung, result.rung),
            "accepted": result.decision.accepted,
            "reason": result.decision.reason,
            "metric": result.decision.metric,
            "before": result.decision.before,
            "after": result.decision.after,
            "flips": result.flips,
            "cpu_s": round(time.thread_time() - t0, 4),
        }
        if upd is not None:
            self.last.update(new_samples=upd.new, kept_new=upd.kept_new)
        return result

    def _base_check(self) -> BaseCheck | None:
        """The training domain's own samples (the bundle's QCore anchors, as recorded:
        in the training input domain) and the routed predictor a flip round is checked
        through while the training domain is the live one: a kept round changes the live
        domain's weights only (None: routing off, an adapted domain live, no anchors)."""
        if self.routing is None or self.routing.bank is None or self.routing.live != "base":
            return None
        X, y = self.bundle.extras.get(EXTRA_X), self.bundle.extras.get(EXTRA_Y)
        if X is None or y is None or len(y) == 0:
            return None
        bank = self.routing.bank  # not cached per engine: the candidate is a scratch one
        return (
            np.asarray(X, np.float32),
            np.asarray(y, np.int64),
            lambda e: RoutedPredictor(e, bank).predict_logits,
        )

    def _after_stats(self, job: Job) -> bool:
        """Whether ``job`` belongs to an episode whose statistics correction was kept."""
        return job.episode >= 0 and job.episode == self._stats_kept_in

    def _update_buffer(self, engine: Engine, job: Job) -> Any:
        assert job.X is not None and job.y is not None
        with self._buffer_lock:
            for s_, lab in job.labels:
                self.buffer.set_label(s_, lab)
            predict = self._predict_by_bits(engine)
            # the neighbour widths' models change only with the bundle: the buffer keeps
            # what they said of its samples while their key stays
            keys = {b: e.model_key for b, e in self._neighbours.items() if b in predict}
            return self.buffer.update(
                job.X,
                job.y,
                job.y >= 0,
                predict,
                self._fp_predict,
                now=time.time(),
                seqs=job.seqs,
                keys=keys,
            )

    # ------------------------------------------------------------------ state

    def pool(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the buffer's samples, targets and labelled flags (a QAT burst's pool)."""
        with self._buffer_lock:
            return self.buffer.X.copy(), self.buffer.y.copy(), self.buffer.labelled.copy()

    def fp_predict(self, X: np.ndarray) -> np.ndarray:
        """The FP model's classes (pseudo-labels) of raw inputs."""
        return self._fp_predict(X)

    def state(self, wait: float = -1.0) -> dict[str, Any]:
        """The buffer as msgpack-ready array records (for the agent's checkpoint);
        ``wait``: see :meth:`_read_buffer`."""
        return self._read_buffer(
            "state",
            lambda: {k: array_record(v) for k, v in self.buffer.to_state().items()},
            wait,
        )

    def _read_buffer(self, what: str, read: Callable[[], Any], wait: float) -> Any:
        """``read()`` under the buffer lock. ``wait``: seconds to wait for a buffer
        update in flight (-1: as long as it takes); past it, what ``read`` gave last time
        (counted in ``buffer_reads_stale``). The calibration thread runs niced, so on a
        busy board one update can hold the buffer for seconds: the inference loop (a
        checkpoint), a stop and ``status`` must not wait for it."""
        last = self._last_read.get(what)
        if last is not None and not self._buffer_lock.acquire(timeout=wait):
            self.counts["buffer_reads_stale"] += 1
            return last
        if last is None:
            self._buffer_lock.acquire()
        try:
            self._last_read[what] = out = read()
        finally:
            self._buffer_lock.release()
        return out

    def stats(self) -> dict[str, Any]:
        """Buffer fill, the drift signal, the rungs and the last round, for status."""
        buffer = self._read_buffer("stats", self.buffer.stats, STATUS_WAIT_S)
        pending, jobs = self.stream.waiting()
        return {
            "buffer": buffer,
            "pending": pending,
            "jobs_waiting": jobs,
            "method": self.method,
            **self.stream.status(),
            "stats_rung": {"enabled": self.train_stats is not None, "reason": self.stats_reason},
            "routing": {"enabled": False, "reason": "off ([calibration] route = false)"}
            if self.routing is None
            else self.routing.status(),
            "last_round": self.last,
        }
