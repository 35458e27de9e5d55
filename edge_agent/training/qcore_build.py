"""QCore construction during FP training (torch; the device side: edge_agent.calibrate.qcore).

:class:`MissTracker` is a ``train_fp`` snapshot callback: every snapshot (a BN-folded
eval-mode copy of the FP network) is post-training quantized at several weight bit-widths
(fake-quant, so any of 2..8 bits, also ones the packing does not support) and the
correctness of every training sample is recorded per bit-width. After training,
:func:`qcore_extras` turns the recorded correctness into difficulties (forgetting events,
``never_correct`` for samples no snapshot got right, summed over bit-widths) and draws the
QCore proportionally to difficulty, as arrays for ``Bundle.extras``::

    tracker = MissTracker.for_dataset(ds, qcfg, cfg.act_bits)
    fp, qnets, metrics = fit(ds, spec, bits, seed, cfg, on_snapshot=tracker,
                             snapshot_every=qcfg.snapshot_steps(cfg.fp_steps))
    bundle = build_bundle(ds, spec, fp, qnets, meta)
    bundle.extras.update(qcore_extras(ds, tracker, qcfg, seed))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from edge_agent.calibrate import qcore_miss
from edge_agent.data.datasets import Dataset
from edge_agent.training.arch import FPNet
from edge_agent.training.fit import normalize
from edge_agent.training.qnet import QuantNet, activation_ranges, set_activation_ranges

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QCoreConfig:
    """How the QCore is built (defaults follow the released QCore code where it has one).

    ``snapshots``: number of snapshots over FP training (the code's 50 epochs / E=5 = 10).
    ``per_class``: QCore size per class. ``class_balance``: equal share per class.
    ``fill``: complete the QCore uniformly from zero-difficulty samples when fewer than
    the size have a nonzero difficulty (they keep difficulty 0, which flags them).
    ``calib_samples``: training samples used to calibrate each snapshot's activation ranges.
    """

    bits: tuple[int, ...] = (2, 3, 4, 5, 8)
    snapshots: int = 10
    per_class: int = 4
    class_balance: bool = True
    never_correct: float = qcore_miss.NEVER_CORRECT
    fill: bool = True
    calib_samples: int = 256

    def __post_init__(self) -> None:
        if not self.bits or any(not 2 <= b <= 8 for b in self.bits):
            raise ValueError(f"QCore bit-widths must be in 2..8, got {self.bits}")
        if self.snapshots < 2:
            raise ValueError("miss tracking needs at least 2 snapshots")
        if self.per_class < 1:
            raise ValueError("QCore needs at least one sample per class")

    def snapshot_steps(self, fp_steps: int) -> int:
        """``snapshot_every`` for ``train_fp``: ``snapshots`` evenly spaced checks."""
        return max(1, fp_steps // self.snapshots)


class MissTracker:
    """``train_fp`` snapshot callback recording per-sample correctness per bit-width.

    ``x`` are the normalized training inputs (as trained on), ``y`` their labels.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, cfg: QCoreConfig, act_bits: int) -> None:
        self.x, self.y, self.cfg, self.act_bits = x, y, cfg, act_bits
        gen = torch.Generator().manual_seed(0)
        self._calib = x[torch.randperm(len(x), generator=gen)[: cfg.calib_samples]]
        self.steps: list[int] = []
        self._correct: dict[int, list[np.ndarray]] = {b: [] for b in cfg.bits}
        self._fp_correct: list[np.ndarray] = []

    @classmethod
    def for_dataset(cls, ds: Dataset, cfg: QCoreConfig, act_bits: int) -> MissTracker:
        """A tracker over ``ds``'s training split, normalized as training does."""
        mean, std = ds.normalization()
        return cls(normalize(ds.X_train, mean, std), torch.from_numpy(ds.y_train), cfg, act_bits)

    @torch.no_grad()
    def __call__(self, step: int, fp: FPNet) -> None:
        """Quantize the snapshot at every bit-width and record which samples it gets right."""
        fp.eval()
        self.steps.append(step)
        self._fp_correct.append(self._right(fp))
        ranges = activation_ranges(fp, self._calib)  # one FP pass serves every bit-width
        for b in self.cfg.bits:
            qnet = QuantNet(fp, b, self.act_bits)
            set_activation_ranges(qnet, ranges)
            self._correct[b].append(self._right(qnet.eval()))

    def _right(self, model: torch.nn.Module, batch: int = 512) -> np.ndarray:
        pred = torch.cat(
            [model(self.x[i : i + batch]).argmax(1) for i in range(0, len(self.x), batch)]
        )
        return (pred == self.y).numpy()

    def correct(self) -> dict[int, np.ndarray]:
        """Per bit-width, a (snapshots, samples) bool array of correctness."""
        if not self.steps:
            raise RuntimeError(
                "no snapshot recorded: pass the tracker to train_fp with snapshot_every > 0"
            )
        return {b: np.stack(rows) for b, rows in self._correct.items()}

    def difficulty(self) -> np.ndarray:
        """Per-sample difficulty (forgetting events summed over bit-widths)."""
        return qcore_miss.difficulty(self.correct(), self.cfg.never_correct)

    def accuracies(self) -> dict[str, list[float]]:
        """Training accuracy of every snapshot: FP and per quantized bit-width."""
        out = {"fp": [float(c.mean()) for c in self._fp_correct]}
        out.update({f"q{b}": [float(c.mean()) for c in rows] for b, rows in self._correct.items()})
        return out


def qcore_extras(
    ds: Dataset, tracker: MissTracker, cfg: QCoreConfig, seed: int
) -> dict[str, np.ndarray]:
    """Draw the QCore from the tracked difficulties; arrays for ``Bundle.extras``."""
    diff = tracker.difficulty()
    size = cfg.per_class * ds.num_classes
    rng = np.random.default_rng([seed, 0x9C0E])
    idx = qcore_miss.draw_proportional(
        diff, size, rng, ds.y_train if cfg.class_balance else None, cfg.fill
    )
    log.info(
        "QCore: %d of %d training samples (%d with nonzero difficulty; %d filled), "
        "difficulty mean %.2f over the QCore, %.2f over all",
        len(idx),
        len(diff),
        int((diff > 0).sum()),
        int((diff[idx] == 0).sum()),
        float(diff[idx].mean()) if len(idx) else 0.0,
        float(diff.mean()),
    )
    return {
        qcore_miss.EXTRA_X: ds.X_train[idx].astype(np.float32),
        qcore_miss.EXTRA_Y: ds.y_train[idx].astype(np.int64),
        qcore_miss.EXTRA_DIFFICULTY: diff[idx].astype(np.float32),
        qcore_miss.EXTRA_TRAIN_INDEX: idx.astype(np.int64),
        qcore_miss.EXTRA_BITS: np.asarray(cfg.bits, dtype=np.int64),
    }
