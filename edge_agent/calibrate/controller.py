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
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.bundle import Bundle, array_from_record, array_record
from edge_agent.calibrate.flip_net import FlipNet
from edge_agent.calibrate.flip_round import (
    BitFlipCalibrator,
    FlipConfig,
    RoundResult,
    greedy_proposer,
    network_proposer,
)
from edge_agent.calibrate.qcore import BufferConfig, QCoreBuffer
from edge_agent.calibrate.qcore_miss import neighbour_bits
from edge_agent.engine.engine import Engine
from edge_agent.engine.fp_model import fp_predict_fn
from kernels.plan.packing import pack_rows

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
    """Owns the QCore buffer and the bit-flip calibrator of one running bundle."""

    def __init__(
        self, bundle: Bundle, cfg: CalibrationConfig, state: dict[str, Any] | None = None
    ) -> None:
        self.bundle = bundle
        self.cfg = cfg
        net = FlipNet.from_extras(bundle.extras)
        if net is None:
            log.warning("bundle has no flipping network: calibration uses greedy local flips")
        proposer = greedy_proposer() if net is None else network_proposer(net, cfg.threshold)
        self.method = "greedy" if net is None else "network"
        self.calibrator = BitFlipCalibrator(bundle, proposer, cfg.flip_config())
        self.buffer = self._restore(state) or QCoreBuffer.from_bundle(bundle, cfg.buffer_config())
        self._fp_predict = fp_predict_fn(bundle)
        self._pending: deque[_Pending] = deque(maxlen=max(1, cfg.chunk) * 4)
        self._recent: deque[tuple[np.ndarray, int]] = deque(maxlen=cfg.recent_labelled)
        self._labels: list[tuple[int, int]] = []  # feedback for buffered samples
        self._lock = threading.Lock()  # guards _pending and _labels (inference thread)
        self._buffer_lock = threading.Lock()  # guards the buffer (state() vs run())
        self._unlabelled_seen = 0
        self._neighbours: dict[int, Engine] = {}
        self.last: dict[str, Any] = {}

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

    def observe(self, x: np.ndarray, label: int | None, seq: int) -> None:
        """Offer one accepted stream sample (labelled, or unlabelled when label-free)."""
        if not self.cfg.enabled:
            return
        if label is None:
            if not self.cfg.label_free:
                return
            self._unlabelled_seen += 1
            if self._unlabelled_seen % max(1, self.cfg.unlabelled_every):
                return
        item = _Pending(np.array(x, dtype=np.float32), label, seq, time.time())
        with self._lock:
            self._pending.append(item)

    def feedback(self, seq: int, label: int) -> None:
        """A label for an earlier sample: replaces its pseudo-label (applied by the next
        round if the sample is buffered, at once if it still waits in the chunk)."""
        with self._lock:
            self._labels.append((seq, label))
            for i, p in enumerate(self._pending):
                if p.seq == seq:
                    self._pending[i] = dataclasses.replace(p, label=label)

    def due(self) -> bool:
        """Whether enough new samples wait for an update and a round."""
        with self._lock:
            return self.cfg.enabled and len(self._pending) >= self.cfg.chunk

    # ------------------------------------------------------------------ rounds

    def _predict_by_bits(self, engine: Engine) -> dict[int, Any]:
        out: dict[int, Any] = {engine.bits: lambda a: engine.predict(a)[0]}
        for b in neighbour_bits(engine.available_bits, engine.bits, self.cfg.neighbour_bits):
            if b != engine.bits:
                if b not in self._neighbours:
                    self._neighbours[b] = Engine(self.bundle, bits=b, scratch=True)
                out[b] = lambda a, e=self._neighbours[b]: e.predict(a)[0]
        return out

    def run(self, engine: Engine, seed: int | None = None) -> RoundResult:
        """Update the buffer with the oldest pending chunk and run one gated flip round."""
        with self._lock:
            n = min(len(self._pending), max(1, self.cfg.chunk))
            chunk = [self._pending.popleft() for _ in range(n)]
            labels, self._labels = self._labels, []
        X = np.stack([p.x for p in chunk])
        labelled = np.array([p.label is not None for p in chunk])
        self._recent.extend((p.x, p.label) for p in chunk if p.label is not None)
        recent = (
            (np.stack([x for x, _ in self._recent]), np.array([c for _, c in self._recent]))
            if self._recent
            else None
        )
        y = np.array([p.label if p.label is not None else -1 for p in chunk], dtype=np.int64)
        t0 = time.thread_time()
        with self._buffer_lock:
            for s_, lab in labels:
                self.buffer.set_label(s_, lab)
            upd = self.buffer.update(
                X,
                y,
                labelled,
                self._predict_by_bits(engine),
                self._fp_predict,
                now=time.time(),
                seqs=np.array([p.seq for p in chunk], dtype=np.int64),
            )
            bx, by = self.buffer.X.copy(), self.buffer.y.copy()
            blab = self.buffer.labelled.copy()
            rounds = self.buffer.rounds
        result = self.calibrator.run_round(
            engine, bx, by, seed=rounds if seed is None else seed, labelled=blab, recent=recent
        )
        self.last = {
            "time": time.time(),
            "method": self.method,
            "accepted": result.decision.accepted,
            "reason": result.decision.reason,
            "metric": result.decision.metric,
            "before": result.decision.before,
            "after": result.decision.after,
            "flips": result.flips,
            "cpu_s": round(time.thread_time() - t0, 4),
            "new_samples": upd.new,
            "kept_new": upd.kept_new,
        }
        return result

    def updated_bundle(self, engine: Engine) -> Bundle:
        """The bundle with the engine's current integer weights at its active bit-width."""
        bits = engine.bits
        quant = self.bundle.quant[bits]
        layers = [
            dataclasses.replace(lq, packed=pack_rows(engine.layer_codes(i), bits))
            for i, lq in enumerate(quant.layers)
        ]
        return dataclasses.replace(
            self.bundle,
            quant={**self.bundle.quant, bits: dataclasses.replace(quant, layers=layers)},
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
            pending = len(self._pending)
        return {
            "buffer": buffer,
            "pending": pending,
            "method": self.method,
            "last_round": self.last,
        }
