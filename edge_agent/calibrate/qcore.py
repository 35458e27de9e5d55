"""The agent's bounded on-device QCore buffer (numpy only; the agent never imports torch).

:class:`QCoreBuffer` holds the QCore on the device, bounded in samples and bytes. Each
:meth:`QCoreBuffer.update` runs forward passes only (at the deployed and neighbouring
bit-widths) on the buffer and a new stream chunk, counts misses
(:mod:`edge_agent.calibrate.qcore_miss`), and redraws the buffer from old and new samples
together by difficulty: old and new compete, which is the guard against forgetting.
Unlabelled samples take the FP model's prediction as pseudo-label (a miss is then an
FP-vs-quantized disagreement) until :meth:`QCoreBuffer.set_label` brings the real label.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.calibrate.qcore_miss import (
    EXTRA_DIFFICULTY,
    EXTRA_TRAIN_INDEX,
    EXTRA_X,
    EXTRA_Y,
    NEVER_CORRECT,
    draw_proportional,
)
from edge_agent.calibrate.qcore_rows import RIGHT, ROW_FIELDS, UNKNOWN, WRONG, checked_rows
from edge_agent.contracts import Predict

log = logging.getLogger(__name__)


SOURCE_TRAIN, SOURCE_STREAM = 0, 1

# ---------------------------------------------------------------- the buffer


@dataclass(frozen=True)
class BufferConfig:
    """Bounds and miss-counting constants of the on-device buffer.

    ``miss_count``: initial count per bit-width at which a new sample is misclassified while
    its target is right (the FP model agrees with the label, or the target is the FP
    pseudo-label). ``fp_wrong_count``: per bit-width at which a new labelled sample is
    misclassified and the FP model is wrong too (treated like a training sample no
    snapshot got right). ``class_balance``: redraw class-balanced by target. ``fill``:
    complete the buffer uniformly with zero-difficulty samples. ``random``: the baseline
    that ignores difficulty (uniform redraw of old and new; misses are still counted).
    """

    max_samples: int = 64
    max_bytes: int = 1 << 20
    miss_count: float = 1.0
    fp_wrong_count: float = NEVER_CORRECT
    class_balance: bool = True
    fill: bool = True
    random: bool = False

    def __post_init__(self) -> None:
        if self.max_samples < 0 or self.max_bytes < 0:
            raise ValueError("buffer bounds must be non-negative")
        if self.miss_count < 0 or self.fp_wrong_count < 0:
            raise ValueError("miss counts must be non-negative")


@dataclass(frozen=True)
class UpdateResult:
    """What one :meth:`QCoreBuffer.update` did."""

    new: int  # samples in the chunk
    kept_new: int  # of which now in the buffer
    dropped_old: int  # buffer samples that lost their place
    events: int  # correct -> wrong transitions counted on buffer samples
    new_misses: int  # (sample, bit-width) misses among the new samples
    size: int  # buffer size after the update


class QCoreBuffer:
    """Bounded buffer of QCore samples with their targets, miss counts and provenance.

    Per-sample arrays (read them, do not modify them): ``X`` raw float32 inputs, ``y``
    targets (label or FP pseudo-label), ``labelled``, ``misses`` (difficulty), and
    ``last_correct`` (-1 unknown, 0 wrong, 1 right) per tracked bit-width ``bits``;
    provenance ``source`` (0 training, 1 stream), ``time``, ``seq`` (stream sequence number
    as two's-complement int64, -1 for training samples) and ``train_index`` (-1 for stream samples).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        bits: tuple[int, ...],
        config: BufferConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.input_shape = tuple(int(v) for v in input_shape)
        self.bits = tuple(sorted({int(b) for b in bits}))
        self.config = config or BufferConfig()
        self.seed = int(seed)
        self.rounds = 0
        self.X = np.zeros((0, *self.input_shape), dtype=np.float32)
        self.y = np.zeros(0, dtype=np.int64)
        self.labelled = np.zeros(0, dtype=bool)
        self.misses = np.zeros(0, dtype=np.float32)
        self.last_correct = np.zeros((0, len(self.bits)), dtype=np.int8)
        self.source = np.zeros(0, dtype=np.uint8)
        self.time = np.zeros(0, dtype=np.float64)
        self.seq = np.zeros(0, dtype=np.int64)
        self.train_index = np.zeros(0, dtype=np.int64)
        self._keys: dict[int, Hashable] = {}  # per width: the model of its last update

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_bundle(
        cls, bundle: Bundle, config: BufferConfig | None = None, seed: int = 0, now: float = 0.0
    ) -> QCoreBuffer:
        """A buffer seeded with the bundle's QCore (empty, with a warning, if it has none);
        tracks every bit-width of the bundle. A QCore larger than the capacity is redrawn."""
        buf = cls(bundle.input_shape, tuple(bundle.quant), config, seed)
        ex = bundle.extras
        if EXTRA_X not in ex:
            log.warning("bundle has no QCore: the buffer starts empty")
            return buf
        missing = [k for k in (EXTRA_Y, EXTRA_DIFFICULTY, EXTRA_TRAIN_INDEX) if k not in ex]
        if missing:
            raise ValueError(f"bundle QCore is incomplete: missing extras {missing}")
        n = len(ex[EXTRA_X])
        rows = {
            "X": ex[EXTRA_X],
            "y": ex[EXTRA_Y],
            "labelled": np.ones(n, dtype=bool),
            "misses": ex[EXTRA_DIFFICULTY],
            "last_correct": np.full((n, len(buf.bits)), UNKNOWN, dtype=np.int8),
            "source": np.full(n, SOURCE_TRAIN, dtype=np.uint8),
            "time": np.full(n, now, dtype=np.float64),
            "seq": np.full(n, -1, dtype=np.int64),
            "train_index": ex[EXTRA_TRAIN_INDEX],
        }
        buf._set_rows(rows, "bundle QCore")
        buf._keep(buf._draw(buf.misses, buf.y))
        return buf

    # ------------------------------------------------------------------ sizes

    @property
    def bytes_per_sample(self) -> int:
        """Bytes one sample occupies across every per-sample array."""
        row = int(np.prod(self.input_shape)) * np.dtype(np.float32).itemsize
        scalars = sum(np.dtype(dt).itemsize for dt, tail in ROW_FIELDS.values() if tail == ())
        return row + scalars + len(self.bits) * np.dtype(np.int8).itemsize

    @property
    def capacity(self) -> int:
        """``min(max_samples, max_bytes // bytes_per_sample)``."""
        return min(self.config.max_samples, self.config.max_bytes // self.bytes_per_sample)

    @property
    def nbytes(self) -> int:
        """Bytes held by the per-sample arrays."""
        return int(sum(getattr(self, name).nbytes for name in ROW_FIELDS))

    def __len__(self) -> int:
        return len(self.y)

    def stats(self) -> dict[str, float | int]:
        """Fill and composition, for the agent's status."""
        n = len(self)
        return {
            "size": n,
            "capacity": self.capacity,
            "bytes": self.nbytes,
            "labelled": int(self.labelled.sum()),
            "mean_difficulty": float(self.misses.mean()) if n else 0.0,
            "zero_difficulty": int((self.misses == 0).sum()),
            "stream_fraction": float((self.source == SOURCE_STREAM).mean()) if n else 0.0,
            "rounds": self.rounds,
        }

    # ------------------------------------------------------------------ updates

    def update(
        self,
        X: np.ndarray,
        y: np.ndarray | None,
        labelled: np.ndarray | None,
        predict_by_bits: Mapping[int, Predict],
        fp_predict: Predict | None = None,
        now: float = 0.0,
        seqs: np.ndarray | None = None,
        keys: Mapping[int, Hashable] | None = None,
    ) -> UpdateResult:
        """Count misses on the buffer and the chunk ``X`` and redraw the buffer from both.

        ``labelled`` marks which entries of ``y`` are real labels (default: all when ``y``
        is given, none otherwise); the others take ``fp_predict``'s class as pseudo-label,
        so ``fp_predict`` is required when any sample is unlabelled. ``predict_by_bits``
        gives the quantized model's classes at the deployed and neighbouring bit-widths.
        Buffer samples add one miss per correct -> wrong transition against their stored
        correctness; new samples start at ``miss_count`` (target right, quantized wrong) or
        ``fp_wrong_count`` (FP wrong too) per bit-width. Forward passes only. ``keys``:
        which model predicts at some widths (e.g. :attr:`Engine.model_key`); where it is
        the one of this width's previous update, a buffer sample whose correctness is
        known keeps it without a pass (the integer model gives it the same class).
        """
        X = np.asarray(X, dtype=np.float32)
        m = len(X)
        if X.shape[1:] != self.input_shape:
            raise ValueError(f"chunk shape {X.shape} does not match (N, {self.input_shape})")
        lab = self._labelled_mask(y, labelled, m)
        y_new = np.zeros(m, dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64)
        if y_new.shape != (m,):
            raise ValueError(f"labels shape {y_new.shape} does not match {m} samples")
        fp_pred: np.ndarray | None = None
        if fp_predict is not None:
            fp_pred = np.asarray(fp_predict(X), dtype=np.int64)
        elif not lab.all():
            raise ValueError("unlabelled samples need fp_predict for pseudo-labels")
        if fp_pred is not None:
            y_new = np.where(lab, y_new, fp_pred)
        fp_wrong = lab & (fp_pred != y_new) if fp_pred is not None else np.zeros(m, dtype=bool)
        seq = np.full(m, -1, dtype=np.int64) if seqs is None else np.asarray(seqs, dtype=np.int64)
        if seq.shape != (m,):
            raise ValueError(f"seqs shape {seq.shape} does not match {m} samples")
        self._track(predict_by_bits)
        n_old = len(self)
        both = np.concatenate([self.X, X])
        misses = self.misses.astype(np.float64)
        last = np.full((n_old + m, len(self.bits)), UNKNOWN, dtype=np.int8)
        last[:n_old] = self.last_correct
        init = np.zeros(m, dtype=np.float64)
        events = new_misses = 0
        targets = np.concatenate([self.y, y_new])
        keys_now: dict[int, Hashable] = {}
        for b, predict in predict_by_bits.items():
            j = self.bits.index(int(b))
            key = None if keys is None else keys.get(b)
            ask = np.ones(n_old + m, bool)
            if key is not None and self._keys.get(int(b)) == key:
                ask[:n_old] = last[:n_old, j] == UNKNOWN
            right = last[:, j] == RIGHT
            if ask.any():
                right[ask] = np.asarray(predict(both[ask]), dtype=np.int64) == targets[ask]
            keys_now[int(b)] = key
            ev = (last[:n_old, j] == RIGHT) & ~right[:n_old]
            misses += ev
            events += int(ev.sum())
            wrong_new = ~right[n_old:]
            init += np.where(
                wrong_new, np.where(fp_wrong, self.config.fp_wrong_count, self.config.miss_count), 0
            )
            new_misses += int(wrong_new.sum())
            last[:, j] = np.where(right, RIGHT, WRONG)
        # every prediction succeeded: install old and new rows together
        self._set_rows(
            {
                "X": both,
                "y": targets,
                "labelled": np.concatenate([self.labelled, lab]),
                "misses": np.concatenate([misses, init]),
                "last_correct": last,
                "source": np.concatenate([self.source, np.full(m, SOURCE_STREAM, np.uint8)]),
                "time": np.concatenate([self.time, np.full(m, now, np.float64)]),
                "seq": np.concatenate([self.seq, seq]),
                "train_index": np.concatenate([self.train_index, np.full(m, -1, np.int64)]),
            },
            "update",
        )
        self._keys.update(keys_now)
        self.rounds += 1
        keep = self._draw(self.misses, self.y)
        self._keep(keep)
        kept_new = int((keep >= n_old).sum())
        return UpdateResult(
            m, kept_new, n_old - (len(keep) - kept_new), events, new_misses, len(self)
        )

    def set_label(self, seq: int, label: int) -> bool:
        """Replace the target of the buffered stream sample ``seq`` (0..2^64-1) by its real label.

        Its stored correctness becomes unknown (it was against the old target); its miss
        count is kept. Returns False when the sample is no longer in the buffer.
        """
        hit = np.flatnonzero((self.seq == seq - (seq >> 63 << 64)) & (self.source == SOURCE_STREAM))
        if len(hit) == 0 or not 0 <= seq < 2**64:  # seq is stored as int64, two's complement
            return False
        self.y[hit] = int(label)
        self.labelled[hit] = True
        self.last_correct[hit] = UNKNOWN
        return True

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, np.ndarray]:
        """Everything needed to restore the buffer exactly (copies)."""
        state = {name: getattr(self, name).copy() for name in ROW_FIELDS}
        state["bits"] = np.asarray(self.bits, dtype=np.int64)
        state["input_shape"] = np.asarray(self.input_shape, dtype=np.int64)
        state["seed_rounds"] = np.asarray([self.seed, self.rounds], dtype=np.int64)
        return state

    @classmethod
    def from_state(
        cls, state: Mapping[str, np.ndarray], config: BufferConfig | None = None
    ) -> QCoreBuffer:
        """Restore a buffer saved by :meth:`to_state`; raise ValueError naming a bad field.
        A state larger than the (new) capacity is redrawn down to it."""
        for key in (*ROW_FIELDS, "bits", "input_shape", "seed_rounds"):
            if key not in state:
                raise ValueError(f"QCore state is missing {key!r}")
        meta = {k: np.asarray(state[k]) for k in ("bits", "input_shape", "seed_rounds")}
        for k, a in meta.items():
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise ValueError(f"QCore state {k!r} must be a 1-D integer array")
        if meta["seed_rounds"].shape != (2,):
            raise ValueError("QCore state 'seed_rounds' must have shape (2,)")
        buf = cls(
            tuple(int(v) for v in meta["input_shape"]),
            tuple(int(v) for v in meta["bits"]),
            config,
            int(meta["seed_rounds"][0]),
        )
        if buf.bits != tuple(int(v) for v in meta["bits"]):
            raise ValueError("QCore state 'bits' must be sorted and unique")
        buf.rounds = int(meta["seed_rounds"][1])
        buf._set_rows({name: state[name] for name in ROW_FIELDS}, "QCore state", strict=True)
        if len(buf) > buf.capacity:
            buf._keep(buf._draw(buf.misses, buf.y))
        return buf

    # ------------------------------------------------------------------ internals

    def _labelled_mask(
        self, y: np.ndarray | None, labelled: np.ndarray | None, m: int
    ) -> np.ndarray:
        if labelled is None:
            return np.full(m, y is not None, dtype=bool)
        lab = np.asarray(labelled, dtype=bool)
        if lab.shape != (m,):
            raise ValueError(f"labelled mask shape {lab.shape} does not match {m} samples")
        if y is None and lab.any():
            raise ValueError("samples marked labelled but no labels given")
        return lab

    def _track(self, predict_by_bits: Mapping[int, Predict]) -> None:
        """Add a correctness column (unknown) for every bit-width not tracked yet."""
        new = sorted({int(b) for b in predict_by_bits} - set(self.bits))
        if not new:
            return
        bits = tuple(sorted((*self.bits, *new)))
        cols = np.full((len(self), len(bits)), UNKNOWN, dtype=np.int8)
        for j, b in enumerate(self.bits):
            cols[:, bits.index(b)] = self.last_correct[:, j]
        self.bits, self.last_correct = bits, cols
        if len(self) > self.capacity:
            self._keep(self._draw(self.misses, self.y))

    def _draw(self, weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.rounds])
        return draw_proportional(
            np.ones(len(weights)) if self.config.random else weights,
            self.capacity,
            rng,
            labels if self.config.class_balance else None,
            self.config.fill,
        )

    def _keep(self, idx: np.ndarray) -> None:
        for name in ROW_FIELDS:
            setattr(self, name, getattr(self, name)[idx])

    def _set_rows(self, rows: Mapping[str, np.ndarray], where: str, strict: bool = False) -> None:
        """Validate and install per-sample arrays (cast, or with ``strict`` exact dtypes)."""
        for name, a in checked_rows(rows, self.input_shape, len(self.bits), where, strict).items():
            setattr(self, name, a)
