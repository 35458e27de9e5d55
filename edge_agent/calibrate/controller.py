"""Continual calibration inside the agent: collect stream samples, update the QCore
buffer with forward passes, run gated bit-flipping rounds, persist the result.

The data flow is ingest -> engine -> (this) buffer -> flip round -> engine.swap_weights.
The inference thread only offers samples and labels (:meth:`observe`, :meth:`feedback`:
short, under a lock); rounds run in the agent's calibration thread (:meth:`run`), so
inference never waits for one. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.bundle import INPUT_CORRECTED, Bundle, array_from_record, array_record
from edge_agent.calibrate import stats_rung
from edge_agent.calibrate.drift_signal import DriftConfig, DriftReference, DriftSignal
from edge_agent.calibrate.flip_net import FlipNet
from edge_agent.calibrate.flip_round import (
    BitFlipCalibrator,
    FlipConfig,
    RoundResult,
    greedy_proposer,
    network_proposer,
)
from edge_agent.calibrate.schedule import Episode, Job, JobQueue
from edge_agent.engine import Engine
from edge_agent.fp_model import fp_predict_fn
from edge_agent.qcore import EXTRA_X, BufferConfig, QCoreBuffer, neighbour_bits
from kernels.packing import pack_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationConfig:
    """The ``[calibration]`` section of the agent's configuration."""

    enabled: bool = True
    chunk: int = 32  # stream samples per QCore update and flip round
    label_free: bool = True  # also learn from unlabelled samples (FP pseudo-labels)
    unlabelled_every: int = 8  # keep one unlabelled sample in this many as a candidate
    buffer_samples: int = 64
    buffer_bytes: int = 1 << 20
    class_balance: bool = True
    neighbour_bits: int = 1  # QCore miss tracking at the deployed width and this many around it
    budget_fraction: float = 0.02
    threshold: float = 0.5
    iterations: int = 4
    holdout_fraction: float = 0.3
    min_holdout: int = 4
    tolerance: float = 0.0
    anchor_tolerance: float = 0.05
    recent_labelled: int = 64  # latest labelled stream samples a kept round may not do worse on
    trigger: str = "drift"  # "drift": rounds only after a drift alarm; "samples": every chunk
    episode_rounds: int = 8  # flip rounds (one per chunk) after each drift alarm
    stats_rung: bool = True  # the label-free statistics round first after an alarm
    stats_window: int = 256  # latest stream samples kept for the statistics round
    stats_min_samples: int = 64  # samples since the change point before it runs
    drift_allowance: float = 1.0  # CUSUM k, in standard deviations of the novelty score
    drift_threshold: float = 20.0  # CUSUM h
    drift_hold: int = 1024  # samples after an alarm before the signal re-baselines
    drift_baseline: int = 256  # samples its new level is estimated from
    max_backlog: int = 4  # rounds waiting for the calibration thread; more: skip the oldest

    def drift_config(self) -> DriftConfig:
        """The drift signal's knobs."""
        return DriftConfig(allowance=self.drift_allowance, threshold=self.drift_threshold,
                           hold=self.drift_hold, baseline=self.drift_baseline)

    def flip_config(self) -> FlipConfig:
        """The flip-round knobs."""
        return FlipConfig(
            self.budget_fraction,
            self.threshold,
            self.iterations,
            self.holdout_fraction,
            self.min_holdout,
            self.tolerance,
            self.anchor_tolerance,
        )

    def buffer_config(self) -> BufferConfig:
        """The QCore buffer's bounds."""
        return BufferConfig(
            max_samples=self.buffer_samples,
            max_bytes=self.buffer_bytes,
            class_balance=self.class_balance,
        )


@dataclass(frozen=True)
class _Pending:
    x: np.ndarray
    label: int | None
    seq: int
    time: float


class CalibrationController:
    """Owns the QCore buffer, the drift signal and the rungs of one running bundle.

    ``observe`` / ``feedback`` (stream order, short) decide which jobs are due
    (:mod:`edge_agent.calibrate.schedule`); ``run`` runs the oldest one (the calibration
    thread). ``count(name, n)``, if given, receives every counter (the agent's metrics).
    """

    def __init__(
        self, bundle: Bundle, cfg: CalibrationConfig, state: dict[str, Any] | None = None,
        count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.bundle = bundle
        self.cfg = cfg
        self.counts: Counter[str] = Counter()
        self._count_to = count
        net = FlipNet.from_extras(bundle.extras)
        if net is None:
            log.warning("bundle has no flipping network: calibration uses greedy local flips")
        proposer = greedy_proposer() if net is None else network_proposer(net, cfg.threshold)
        self.method = "greedy" if net is None else "network"
        self.calibrator = BitFlipCalibrator(bundle, proposer, cfg.flip_config())
        self.buffer = self._restore(state) or QCoreBuffer.from_bundle(bundle, cfg.buffer_config())
        self._fp_predict = fp_predict_fn(bundle)
        self._chunk: list[_Pending] = []
        self._recent: deque[tuple[np.ndarray, int]] = deque(maxlen=cfg.recent_labelled)
        self._window: deque[tuple[int, np.ndarray, int | None]] = deque(maxlen=cfg.stats_window)
        self._labels: list[tuple[int, int]] = []  # feedback since the last job
        self._lock = threading.Lock()  # guards the stream-side state and the job queue
        self._buffer_lock = threading.Lock()  # guards the buffer (state() vs run())
        self._unlabelled_seen = 0
        self._seen = 0  # accepted stream samples
        self._jobs = JobQueue(cfg.max_backlog)
        self._made = 0  # jobs made
        self._episode: Episode | None = None
        self._neighbours: dict[int, Engine] = {}
        self._scratch: Engine | None = None
        self._alarms_at_burst = 0
        self.last: dict[str, Any] = {}
        self.train_stats, self.stats_reason = (None, "off ([calibration] stats_rung = false)")
        if cfg.stats_rung:
            self.train_stats, self.stats_reason = stats_rung.statistics_of(bundle)
            log.log(logging.INFO if self.train_stats else logging.WARNING, "statistics rung: %s%s",
                    self.stats_reason, "" if self.train_stats else ": the rung is off")
        self.drift = self._drift_signal()

    def _drift_signal(self) -> DriftSignal | None:
        """The drift signal from the bundle's reference (else its anchors'), or None."""
        ref = DriftReference.from_extras(self.bundle.extras)
        if ref is None:
            X, y = self.calibrator.anchor_X, self.calibrator.anchor_y
            if len(y) >= 2:
                ref = DriftReference.fit(X, y, self.bundle.num_classes)
                log.info("drift signal: reference from the bundle's %d QCore anchors", len(y))
        if ref is None and self.cfg.trigger == "drift":
            log.warning("drift signal: the bundle has neither a drift reference nor QCore "
                        "anchors: a flip round every %d samples instead", self.cfg.chunk)
        return None if ref is None else DriftSignal(ref, self.cfg.drift_config())

    def burst_wanted(self) -> bool:
        """Whether a QAT burst may start: a drift alarm came since the last one started
        (always with ``trigger = "samples"`` or without a drift signal)."""
        if self.cfg.trigger == "samples" or self.drift is None:
            return True
        return self.counts["drift_alarms"] > self._alarms_at_burst

    def burst_started(self) -> None:
        """A burst started: the next needs a new alarm."""
        self._alarms_at_burst = self.counts["drift_alarms"]

    def carry_from(self, old: CalibrationController) -> None:
        """Take over the stream-side state of the controller this one replaces (after a
        QAT burst changed the model): drift signal, episode, counters, sample count."""
        with old._lock:
            self.drift, self._episode, self._seen = old.drift, old._episode, old._seen
            self.counts, self._alarms_at_burst = old.counts, old._alarms_at_burst

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

    def drift_scores(self, X: np.ndarray) -> np.ndarray | None:
        """The drift signal's novelty scores of a batch (for :meth:`observe`'s ``score``:
        one vectorized call per batch), or None without a drift signal."""
        return None if self.drift is None else self.drift.reference.score(X)

    def observe(self, x: np.ndarray, label: int | None, seq: int,
                score: float | None = None) -> None:
        """Offer one accepted stream sample, in stream order (every one: the drift signal
        and the statistics window see them all; the buffer labelled ones, and one in
        ``unlabelled_every`` unlabelled ones when label-free). ``score``: its drift
        novelty score, if already computed."""
        if not self.cfg.enabled:
            return
        x = np.array(x, dtype=np.float32)
        fired: list[int] = []
        if self.drift is not None:
            fired = (self.drift.update(x[None]) if score is None
                     else self.drift.update_scores(np.array([score])))
        with self._lock:
            n = self._seen
            self._seen += 1
            self._window.append((n, x, label))
            if label is not None:
                self._recent.append((x, label))
            if fired:
                self._alarm(n)
            ep = self._episode
            if ep is not None and not ep.stats_done and self._seen >= ep.stats_at:
                ep.stats_done = True
                if self.train_stats is not None:
                    self._put_stats(ep)
            if label is None:
                if not self.cfg.label_free:
                    return
                self._unlabelled_seen += 1
                if self._unlabelled_seen % max(1, self.cfg.unlabelled_every):
                    return
            self._chunk.append(_Pending(x, label, seq, time.time()))
            if len(self._chunk) >= max(1, self.cfg.chunk):
                self._put_chunk()

    def _alarm(self, n: int) -> None:
        assert self.drift is not None
        cp = self.drift.change_point if self.drift.change_point is not None else n
        self._count("drift_alarms")
        log.info("drift signal: alarm at stream sample %d (change point %d)", n, cp)
        self._episode = Episode(n, cp, max(n + 1, cp + self.cfg.stats_min_samples),
                                self.cfg.episode_rounds)

    def _rounds_due(self) -> bool:
        """Whether the chunk just completed gets a flip round."""
        if self.cfg.trigger == "samples" or self.drift is None:
            return True
        ep = self._episode
        if ep is None or ep.flips_left <= 0:
            return False
        ep.flips_left -= 1
        return True

    def _put_chunk(self) -> None:
        chunk, self._chunk = self._chunk, []
        labels, self._labels = self._labels, []
        recent = (
            (np.stack([x for x, _ in self._recent]), np.array([c for _, c in self._recent]))
            if self._recent else None
        )
        job = Job(self._made, self._seen, "flip" if self._rounds_due() else "update",
                  np.stack([p.x for p in chunk]),
                  np.array([p.label if p.label is not None else -1 for p in chunk], np.int64),
                  np.array([p.seq for p in chunk], np.int64), labels, recent)
        self._put(job)

    def _put_stats(self, ep: Episode) -> None:
        rows = [(x, lab) for i, x, lab in self._window if i >= ep.change_point]
        X = np.stack([x for x, _ in rows])
        lab = [(x, c) for x, c in rows if c is not None]
        labelled = ((np.stack([x for x, _ in lab]), np.array([c for _, c in lab], np.int64))
                    if lab else None)
        self._put(Job(self._made, self._seen, "stats", X, recent=labelled))

    def _put(self, job: Job) -> None:
        self._made += 1
        skipped, dropped = self._jobs.skipped, self._jobs.dropped
        self._jobs.put(job)
        if self._jobs.skipped > skipped:
            self._count("rounds_skipped")
            log.warning("calibration is behind: a round was skipped (%d so far)",
                        self._jobs.skipped)
        if self._jobs.dropped > dropped:
            self._count("updates_dropped")

    def feedback(self, seq: int, label: int) -> None:
        """A label for an earlier sample: replaces its pseudo-label (applied by the next
        job if the sample is buffered, at once if it still waits in the chunk)."""
        with self._lock:
            self._labels.append((seq, label))
            for i, p in enumerate(self._chunk):
                if p.seq == seq:
                    self._chunk[i] = dataclasses.replace(p, label=label)

    def due(self) -> bool:
        """Whether a job waits for :meth:`run`."""
        with self._lock:
            return self.cfg.enabled and len(self._jobs) > 0

    # ------------------------------------------------------------------ rounds

    def _predict_by_bits(self, engine: Engine) -> dict[int, Any]:
        out: dict[int, Any] = {engine.bits: lambda a: engine.predict(a)[0]}
        for b in neighbour_bits(engine.available_bits, engine.bits, self.cfg.neighbour_bits):
            if b != engine.bits:
                if b not in self._neighbours:
                    self._neighbours[b] = Engine(self.bundle, bits=b, scratch=True)
                out[b] = lambda a, e=self._neighbours[b]: e.predict(a)[0]
        return out

    def run(self, engine: Engine, seed: int | None = None) -> RoundResult | None:
        """Run the oldest due job: a buffer update, then its round if it has one (the
        result; None for a buffer update alone). Seeds derive from the job's index."""
        with self._lock:
            job = self._jobs.get()
        if job is None:
            return None
        t0 = time.thread_time()
        upd = None
        if job.kind == "stats":
            result = self._stats_round(engine, job)
        else:
            upd = self._update_buffer(engine, job)
            if job.kind == "update":
                return None
            with self._buffer_lock:
                bx, by = self.buffer.X.copy(), self.buffer.y.copy()
                blab = self.buffer.labelled.copy()
            result = self.calibrator.run_round(
                engine, bx, by, seed=job.index if seed is None else seed, labelled=blab,
                recent=job.recent,
            )
        kept = result.version is not None
        self._count(f"{result.rung}_rounds_{'kept' if kept else 'rolled_back'}")
        self.last = {
            "time": time.time(),
            "rung": result.rung,
            "job": job.index,
            "at_sample": job.at,
            "method": self.method if result.rung == "flip" else "statistics",
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

    def _update_buffer(self, engine: Engine, job: Job) -> Any:
        assert job.X is not None and job.y is not None
        with self._buffer_lock:
            for s_, lab in job.labels:
                self.buffer.set_label(s_, lab)
            return self.buffer.update(
                job.X, job.y, job.y >= 0, self._predict_by_bits(engine), self._fp_predict,
                now=time.time(), seqs=job.seqs,
            )

    def _stats_round(self, engine: Engine, job: Job) -> RoundResult:
        assert self.train_stats is not None and job.X is not None
        if self._scratch is None or self._scratch.bits != engine.bits:
            self._scratch = Engine(self.bundle, bits=engine.bits, scratch=True)
        scratch = self._scratch
        layers = stats_rung.hidden_layers(self.bundle)
        scratch.swap_weights([engine.layer_codes(i) for i in range(len(layers) + 1)])
        stats_rung.sync(scratch, engine, layers)
        empty = (np.zeros((0, *self.bundle.input_shape), np.float32), np.zeros(0, np.int64))
        result, corr = stats_rung.run_stats_round(
            engine, scratch, self.bundle, self.train_stats, job.X, job.recent or empty,
            stats_rung.StatsConfig(self.cfg.tolerance, self.cfg.min_holdout),
            version_of=lambda c: self._corrected(engine.bits, c, engine).model_version,
        )
        if corr is not None:
            self.bundle = self._corrected(engine.bits, corr)
            self.calibrator.set_bundle(self.bundle)
            self.calibrator.anchor_X = self._anchors_for(corr)
            self._neighbours = {}
        return result

    def _anchors_for(self, corr: stats_rung.Correction) -> np.ndarray:
        """The bundle's anchors moved into the corrected input domain: the corrected
        normalization gives them exactly what the training normalization gave them, so
        they still show the flip rounds what each class looked like before the drift."""
        assert self.train_stats is not None
        X = np.asarray(self.bundle.extras.get(EXTRA_X, self.calibrator.anchor_X), np.float32)
        shape = (1, -1, *(1,) * (X.ndim - 2))
        st = self.train_stats
        z = (X - st.norm_mean.reshape(shape)) / st.norm_std.reshape(shape)
        return (z * corr.std.reshape(shape) + corr.mean.reshape(shape)).astype(np.float32)

    def _corrected(self, bits: int, corr: stats_rung.Correction,
                   engine: Engine | None = None) -> Bundle:
        """The bundle with a statistics correction (and, given ``engine``, its codes)."""
        quant = self.bundle.quant[bits]
        layers = [dataclasses.replace(lq, bias_q=corr.biases.get(i, lq.bias_q))
                  for i, lq in enumerate(quant.layers)]
        b = dataclasses.replace(
            self.bundle, norm_mean=corr.mean, norm_std=corr.std,
            meta={**self.bundle.meta, INPUT_CORRECTED: True},
            quant={**self.bundle.quant, bits: dataclasses.replace(quant, layers=layers)})
        return b if engine is None else self._with_codes(b, engine)

    def updated_bundle(self, engine: Engine) -> Bundle:
        """The bundle with the engine's current integer weights at its active bit-width
        (and the statistics rung's kept corrections)."""
        return self._with_codes(self.bundle, engine)

    @staticmethod
    def _with_codes(bundle: Bundle, engine: Engine) -> Bundle:
        bits = engine.bits
        quant = bundle.quant[bits]
        layers = [
            dataclasses.replace(lq, packed=pack_rows(engine.layer_codes(i), bits))
            for i, lq in enumerate(quant.layers)
        ]
        return dataclasses.replace(
            bundle, quant={**bundle.quant, bits: dataclasses.replace(quant, layers=layers)}
        )

    # ------------------------------------------------------------------ state

    def pool(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the buffer's samples, targets and labelled flags (a QAT burst's pool)."""
        with self._buffer_lock:
            return self.buffer.X.copy(), self.buffer.y.copy(), self.buffer.labelled.copy()

    def fp_predict(self, X: np.ndarray) -> np.ndarray:
        """The FP model's classes (pseudo-labels) of raw inputs."""
        return self._fp_predict(X)

    def state(self) -> dict[str, Any]:
        """The buffer as msgpack-ready array records (for the agent's checkpoint)."""
        with self._buffer_lock:
            state = self.buffer.to_state()
        return {k: array_record(v) for k, v in state.items()}

    def stats(self) -> dict[str, Any]:
        """Buffer fill and the last round, for status."""
        with self._buffer_lock:
            buffer = self.buffer.stats()
        with self._lock:
            pending, jobs = len(self._chunk), len(self._jobs)
            ep = self._episode
        return {
            "buffer": buffer,
            "pending": pending,
            "jobs_waiting": jobs,
            "method": self.method,
            "trigger": self.cfg.trigger if self.drift is not None else "samples",
            "rounds_skipped": self.counts["rounds_skipped"],
            "stats_rung": {"enabled": self.train_stats is not None, "reason": self.stats_reason},
            "drift": self.drift.status() if self.drift is not None else {"enabled": False},
            "episode": None if ep is None else {
                "alarm": ep.alarm, "change_point": ep.change_point,
                "flip_rounds_left": ep.flips_left},
            "last_round": self.last,
        }
