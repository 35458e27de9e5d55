"""The whole training pipeline behind ``edge-agent train``: FP training with QCore miss
tracking, QAT at every bit-width, export, and the offline bit-flipping network."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from edge_agent.bundle import Bundle
from edge_agent.calibrate.stats_rung import with_statistics
from edge_agent.data.datasets import Dataset, warn_if_narrow
from edge_agent.training.arch import default_spec
from edge_agent.training.export import build_bundle
from edge_agent.training.fit import TrainConfig, fit, torch_threads
from edge_agent.training.flip_train import FlipTrainConfig, train_flipper, with_flipper
from edge_agent.training.phases import PhaseTimer
from edge_agent.training.qcore_build import MissTracker, QCoreConfig, qcore_extras

log = logging.getLogger(__name__)


def train_bundle(
    ds: Dataset,
    bits: list[int],
    seed: int,
    cfg: TrainConfig,
    qcore_cfg: QCoreConfig | None = None,
    flip_cfg: FlipTrainConfig | None = None,
    meta: dict[str, Any] | None = None,
    width: int | None = None,
    timer: PhaseTimer | None = None,
) -> tuple[Bundle, dict[str, float]]:
    """Train and export a bundle; with ``qcore_cfg`` it carries a QCore, with ``flip_cfg``
    a trained flipping network, with ``width`` the default architecture at that width.
    ``timer`` records where the time goes. Returns the bundle and the test accuracies."""
    timer = timer or PhaseTimer()
    with torch_threads(cfg.torch_threads):
        return _train(ds, bits, seed, cfg, qcore_cfg, flip_cfg, meta, width, timer)


def _train(
    ds: Dataset,
    bits: list[int],
    seed: int,
    cfg: TrainConfig,
    qcore_cfg: QCoreConfig | None,
    flip_cfg: FlipTrainConfig | None,
    meta: dict[str, Any] | None,
    width: int | None,
    timer: PhaseTimer,
) -> tuple[Bundle, dict[str, float]]:
    warn_if_narrow(ds)
    spec = default_spec(ds.input_shape, ds.num_classes, width)
    tracker = MissTracker.for_dataset(ds, qcore_cfg, cfg.act_bits) if qcore_cfg else None
    fp, qnets, metrics = fit(
        ds,
        spec,
        bits,
        seed,
        cfg,
        on_snapshot=tracker,
        snapshot_every=qcore_cfg.snapshot_steps(cfg.fp_steps) if qcore_cfg else 0,
        timer=timer,
    )
    with timer.phase("export"):
        extras = qcore_extras(ds, tracker, qcore_cfg, seed) if tracker and qcore_cfg else {}
    info: dict[str, Any] = {"seed": seed, "metrics": metrics, "train_config": asdict(cfg)}
    if qcore_cfg:
        info["qcore_config"] = asdict(qcore_cfg)
    with timer.phase("export"):
        bundle = build_bundle(ds, spec, fp, qnets, {**info, **(meta or {})}, extras)
        # what the statistics rung and the drift signal compare the stream with
        bundle = with_statistics(bundle, ds.X_train, ds.y_train)
    if flip_cfg:
        bundle = with_flipper(bundle, train_flipper(bundle, qnets, ds, seed, flip_cfg, timer))
    return bundle, metrics
