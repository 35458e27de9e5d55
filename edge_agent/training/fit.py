"""Deterministic FP training and LSQ+ quantization-aware training with distillation."""

from __future__ import annotations

import copy
import logging
import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from edge_agent.data.datasets import Dataset, stratified_split
from edge_agent.training.arch import FPNet, Spec, fold_batchnorm
from edge_agent.training.augment import augment
from edge_agent.training.phases import PhaseTimer
from edge_agent.training.qnet import QuantNet, calibrate_activation_ranges

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of FP training and QAT.

    ``fp_steps`` / ``qat_steps`` are the most steps run. Early stopping is off by default
    (``early_stop_min_samples = 0``: it cost digits 1.1-1.3 points at 3 and 2 bits). With
    it on, a training split of at least ``early_stop_min_samples`` samples holds out a
    stratified ``val_fraction``: every ``eval_every`` steps (0: about an epoch, at least
    25) the validation loss is measured, training stops after ``patience`` measurements
    without a better one and the best weights are kept (docs/method.md, "Training
    schedule").
    ``torch_threads``: intra-op threads (one is fastest for these small models, most of
    all on a busy machine: bench/train_time.py).
    """

    fp_steps: int = 1200
    qat_steps: int = 600
    batch_size: int = 32
    fp_lr: float = 3e-3
    qat_lr: float = 1e-3
    weight_decay: float = 1e-4
    kd_temperature: float = 4.0
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    act_bits: int = 8
    augment: bool = True
    progress: bool = True
    torch_threads: int = 1
    val_fraction: float = 0.1
    early_stop_min_samples: int = 0  # 0: off
    eval_every: int = 0
    patience: int = 5

    def __post_init__(self) -> None:
        for name in ("fp_steps", "qat_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be at least 1, got {self.torch_threads}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def early_stopping(self, n_train: int) -> bool:
        """Whether a training split of ``n_train`` samples gives a validation split."""
        return 0 < self.early_stop_min_samples <= n_train


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the former count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class EarlyStop:
    """Validation-loss early stopping: keeps the best weights seen, says when to stop."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, every: int, patience: int) -> None:
        self.x, self.y, self.every, self.patience = x, y, every, patience
        self.best_loss = math.inf
        self.best_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self._bad = 0

    @torch.no_grad()
    def check(self, model: nn.Module, step: int) -> bool:
        """At every ``every``-th step: score ``model``; True when training should stop."""
        if step % self.every:
            return False
        model.eval()
        loss = (
            sum(  # in chunks: a large validation split need not fit one batch
                float(
                    F.cross_entropy(
                        model(self.x[i : i + 512]), self.y[i : i + 512], reduction="sum"
                    )
                )
                for i in range(0, len(self.x), 512)
            )
            / len(self.x)
        )
        model.train()
        if loss < self.best_loss - 1e-4:
            self.best_loss, self.best_step, self._bad = loss, step, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self._bad += 1
        return self._bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best weights seen (if any were scored)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def set_seed(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; make torch deterministic; return a seeded generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """Per-channel normalization of channels-first samples, as a float32 tensor."""
    shape = (1, -1, *([1] * (x.ndim - 2)))
    return torch.from_numpy(((x - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32))


def _batches(n: int, batch: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    done = 0
    cuts = [*range(0, n, batch), n]
    if n > batch and n % batch == 1:  # a lone last sample: BatchNorm cannot train on it
        del cuts[-2]
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for a, b in pairwise(cuts):
            if done >= steps:
                return
            yield perm[a:b]
            done += 1


def _loop(
    model: nn.Module,
    params: list[dict],
    steps: int,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: TrainConfig,
    gen: torch.Generator,
    desc: str,
    on_step: Callable[[int], None] | None = None,
    stopper: EarlyStop | None = None,
) -> int:
    """Run up to ``steps`` optimizer steps; with ``stopper``, stop early and end on its
    best weights. Returns the steps run."""
    opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in params], total_steps=steps, pct_start=0.15
    )
    model.train()
    bar = tqdm(total=steps, desc=desc, disable=not cfg.progress, leave=False, mininterval=0.5)
    step = 0
    for step, idx in enumerate(_batches(len(x), cfg.batch_size, steps, gen), 1):
        xb = x[idx]
        if cfg.augment:
            xb = augment(xb, gen)
        loss = loss_fn(model(xb), y[idx], xb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if on_step is not None:
            on_step(step)
        if stopper is not None and stopper.check(model, step):
            log.info(
                "%s: stopped at step %d of %d (best at %d)", desc, step, steps, stopper.best_step
            )
            break
    bar.close()
    if stopper is not None:
        stopper.restore(model)
    model.eval()
    return step


Validation = tuple[torch.Tensor, torch.Tensor]


def _stopper(cfg: TrainConfig, n_train: int, val: Validation | None) -> EarlyStop | None:
    if val is None:
        return None
    every = cfg.eval_every or max(25, math.ceil(n_train / cfg.batch_size))
    return EarlyStop(val[0], val[1], every, cfg.patience)


SnapshotCallback = Callable[[int, FPNet], None]


def train_fp(
    spec: Spec,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    cfg: TrainConfig,
    on_snapshot: SnapshotCallback | None = None,
    snapshot_every: int = 0,
    val: Validation | None = None,
) -> FPNet:
    """Train the FP network (with BatchNorm) and return it folded (conv + bias).

    With ``on_snapshot``, every ``snapshot_every`` steps a folded eval-mode copy of the
    network is handed to it (QCore's miss tracking); training is not otherwise affected.
    With ``val`` (inputs, labels) it stops early on the validation loss.
    """
    gen = set_seed(seed)
    net = FPNet(spec)

    def snapshot(step: int) -> None:
        if on_snapshot is not None and snapshot_every > 0 and step % snapshot_every == 0:
            net.eval()
            folded = fold_batchnorm(net)
            net.train()
            on_snapshot(step, folded)

    _loop(
        net,
        [{"params": net.parameters(), "lr": cfg.fp_lr}],
        cfg.fp_steps,
        x,
        y,
        lambda out, yb, _x: F.cross_entropy(out, yb),
        cfg,
        gen,
        "FP training",
        on_step=snapshot,
        stopper=_stopper(cfg, len(x), val),
    )
    return fold_batchnorm(net)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Distillation loss: KL(teacher || student) at ``temperature``, scaled by T^2."""
    t = temperature
    return (
        F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean")
        * t
        * t
    )


def train_qat(
    fp: FPNet,
    x: torch.Tensor,
    y: torch.Tensor,
    bits: int,
    seed: int,
    cfg: TrainConfig,
    val: Validation | None = None,
) -> QuantNet:
    """LSQ+ QAT of the folded FP model at ``bits``, distilled from it (KD + CE); with
    ``val`` it stops early on the validation loss."""
    gen = set_seed(seed + 1000 * bits)
    qnet = QuantNet(fp, bits, cfg.act_bits)
    calibrate_activation_ranges(qnet, fp, x)
    fp.eval()

    def loss_fn(out: torch.Tensor, yb: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = fp(xb)
        return cfg.kd_weight * kd_loss(
            out, teacher, cfg.kd_temperature
        ) + cfg.ce_weight * F.cross_entropy(out, yb)

    params = [
        {"params": qnet.weight_params(), "lr": cfg.qat_lr},
        {"params": qnet.quantizer_params(), "lr": cfg.qat_lr, "weight_decay": 0.0},
    ]
    stopper = _stopper(cfg, len(x), val)
    _loop(qnet, params, cfg.qat_steps, x, y, loss_fn, cfg, gen, f"QAT {bits}-bit", stopper=stopper)
    return qnet


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on normalized inputs."""
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def fit(
    ds: Dataset,
    spec: Spec,
    bits: list[int],
    seed: int,
    cfg: TrainConfig,
    on_snapshot: SnapshotCallback | None = None,
    snapshot_every: int = 0,
    timer: PhaseTimer | None = None,
) -> tuple[FPNet, dict[int, QuantNet], dict[str, float]]:
    """Train FP then QAT at every bit-width; return models and test accuracies.

    ``on_snapshot`` / ``snapshot_every`` are passed to :func:`train_fp` (QCore tracking);
    ``timer`` gets the phases "FP training", "QCore snapshots" and "QAT <b>-bit". A
    large training split gives a validation split for early stopping (:class:`TrainConfig`).
    """
    timer = timer or PhaseTimer()
    mean, std = ds.normalization()
    x_tr, y_tr = normalize(ds.X_train, mean, std), torch.from_numpy(ds.y_train)
    x_te, y_te = normalize(ds.X_test, mean, std), torch.from_numpy(ds.y_test)
    val: Validation | None = None
    if cfg.early_stopping(len(x_tr)):
        keep, held = stratified_split(ds.y_train, cfg.val_fraction, seed)
        val = (x_tr[held], y_tr[held])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    snap = None
    if on_snapshot is not None:
        callback = on_snapshot

        def snap(step: int, net: FPNet) -> None:
            with timer.phase("QCore snapshots"):
                callback(step, net)

    with torch_threads(cfg.torch_threads), timer.phase("FP training"):
        fp = train_fp(spec, x_tr, y_tr, seed, cfg, snap, snapshot_every, val)
    metrics = {"fp_test_accuracy": accuracy(fp, x_te, y_te)}
    log.info("%s seed %d: FP test accuracy %.4f", ds.name, seed, metrics["fp_test_accuracy"])
    qnets: dict[int, QuantNet] = {}
    for b in bits:
        with torch_threads(cfg.torch_threads), timer.phase(f"QAT {b}-bit"):
            qnets[b] = train_qat(fp, x_tr, y_tr, b, seed, cfg, val)
        metrics[f"q{b}_test_accuracy"] = accuracy(qnets[b], x_te, y_te)
        log.info(
            "%s seed %d: %d-bit fake-quant test accuracy %.4f",
            ds.name,
            seed,
            b,
            metrics[f"q{b}_test_accuracy"],
        )
    return fp, qnets, metrics
