"""Bundles for ``bench/real_drift.py``: the project's own training pipeline (FP with QCore
miss tracking, QAT at 8/4/2 bits, export, flipping network) with small, fast settings,
cached on disk by data set, seed and settings (the QAT models too: the torch anchors
start from them). Nothing here is committed: the cache lives outside the repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from bench.model_cache import load_qnets, save_qnets
from bench.real_drift_data import DriftSplit
from edge_agent.bundle import Bundle, acc_std_key
from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.calibrate.drift_reference import OutputReference
from edge_agent.calibrate.stats_rung import with_statistics
from edge_agent.calibrate.stats_signs import EXTRA_CORR
from edge_agent.data.datasets import Dataset
from edge_agent.training.arch import default_spec
from edge_agent.training.export import build_bundle
from edge_agent.training.fit import TrainConfig, fit
from edge_agent.training.flip_train import FlipTrainConfig, train_flipper, with_flipper
from edge_agent.training.qcore_build import MissTracker, QCoreConfig, qcore_extras
from edge_agent.training.qnet import QuantNet

log = logging.getLogger("bench.real_drift")

BITS = [8, 4, 2]
# small settings: the whole benchmark (21 bundles) must train in minutes on 2 cores
TRAIN = TrainConfig(fp_steps=240, qat_steps=100, progress=False)
QCORE = QCoreConfig(snapshots=5)
FLIP = FlipTrainConfig(episodes=6, steps=120)


def fit_dataset(split: DriftSplit) -> Dataset:
    """The train-domain part as a Dataset (its 'test' is the clean part, for the log)."""
    return Dataset(
        split.name,
        split.X[split.fit],
        split.y[split.fit],
        split.X[split.clean],
        split.y[split.clean],
        split.label_names,
    )


def _key(split: DriftSplit, seed: int, bits: list[int]) -> str:
    h = hashlib.sha256()
    for part in (split.fit, split.X[split.fit][:4]):
        h.update(part.tobytes())
    h.update(
        json.dumps([asdict(TRAIN), asdict(QCORE), asdict(FLIP), bits, seed], default=str).encode()
    )
    h.update(b"with_statistics")  # bundles carry the training statistics (as the pipeline's)
    return f"{split.name}-s{seed}-{h.hexdigest()[:10]}"


def _has_statistics(bundle: Bundle) -> bool:
    """Whether the bundle records every statistic the current agent uses (the spreads of
    the hidden accumulators, the output score's level, the input channel correlations)."""
    return (
        all(acc_std_key(b, 0) in bundle.extras for b in bundle.quant)
        and OutputReference.from_extras(bundle.extras) is not None
        and EXTRA_CORR in bundle.extras
    )


def trained(
    split: DriftSplit, seed: int, cache: Path, bits: list[int] | None = None
) -> tuple[Bundle, dict[int, QuantNet], float]:
    """(bundle, QAT models by bits, training wall seconds; 0 when cached)."""
    bits = bits or BITS
    d = cache / "bundles"
    d.mkdir(parents=True, exist_ok=True)
    key = _key(split, seed, bits)
    bpath, qpath = d / f"{key}.eab", d / f"{key}.qnets-state.pt"
    if bpath.exists() and qpath.exists():
        bundle = load_bundle(bpath)
        if not _has_statistics(bundle):  # cached before the rung recorded all it uses
            bundle = with_statistics(bundle, split.X[split.fit], split.y[split.fit])
            save_bundle(bundle, bpath)
        return bundle, load_qnets(qpath, bundle, TRAIN.act_bits), 0.0
    t0 = time.time()
    ds = fit_dataset(split)
    tracker = MissTracker.for_dataset(ds, QCORE, TRAIN.act_bits)
    spec = default_spec(ds.input_shape, ds.num_classes)
    fp, qnets, metrics = fit(
        ds, spec, bits, seed, TRAIN, tracker, QCORE.snapshot_steps(TRAIN.fp_steps)
    )
    bundle = build_bundle(
        ds,
        spec,
        fp,
        qnets,
        {"seed": seed, "bench": "real_drift"},
        qcore_extras(ds, tracker, QCORE, seed),
    )
    # what the statistics rung and the drift signal compare the stream with
    bundle = with_statistics(bundle, ds.X_train, ds.y_train)
    bundle = with_flipper(bundle, train_flipper(bundle, qnets, ds, seed, FLIP))
    save_bundle(bundle, bpath)
    save_qnets(qpath, qnets)
    log.info(
        "%s seed %d trained in %.0f s: %s",
        split.name,
        seed,
        time.time() - t0,
        {k: round(v, 3) for k, v in metrics.items()},
    )
    return bundle, qnets, time.time() - t0
