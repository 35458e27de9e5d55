"""Choosing the QAT burst's coreset defaults on validation folds, never on the test split.

The burst's coreset settings (the share of the coreset drawn at random next to the top-S
RES samples, ``random_share``, and the RES softmax temperature, ``score_temperature``)
are chosen here by K-fold cross-validation inside the *training* split only: for each
fold the FP model is trained on the other folds and quantized post-training at 2 bits,
the candidate pool is built from those folds (as in :mod:`bench.qat_burst`), a burst runs
for every setting (RES + cascaded CLC, 5% coreset, the benchmark's base hyper-parameters)
and is scored on the held-out fold by the integer engine. ``random + KD`` (the baseline of
issue 6) runs beside them. The setting with the best mean validation accuracy over data
sets and folds is the one the shipped defaults must match; :mod:`bench.qat_burst` then
reports test accuracy for it.

    python -m bench.qat_burst_select                 # GunPoint and digits, 5 folds
    python -m bench.qat_burst_select --folds 3 --datasets gunpoint
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy import RAW
from bench.qat_burst import BASE, candidate_pool, start_bundle
from edge_agent.calibrate.burst_config import BurstConfig
from edge_agent.data.datasets import Dataset
from edge_agent.engine import Engine

log = logging.getLogger("bench.qat_burst_select")

SHARES = (0.0, 0.25, 0.5, 0.75)
TEMPERATURES = (1.0, 4.0)
BASELINE = "random + KD"


def settings() -> dict[str, dict[str, Any]]:
    """Every setting tried, by name: the baseline and the RES + CLC grid."""
    out: dict[str, dict[str, Any]] = {BASELINE: {"selection": "random", "clc": "none"}}
    for share, temp in itertools.product(SHARES, TEMPERATURES):
        out[f"RES + CLC, random_share {share}, T {temp:g}"] = {
            "selection": "res", "clc": "cascaded", "random_share": share,
            "score_temperature": temp,
        }
    return out


def folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` stratified folds of the indices of ``y`` (each class dealt round-robin)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        for i, j in enumerate(members):
            parts[(i + offset) % k].append(int(j))
        offset += len(members)
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def fold_dataset(ds: Dataset, val: np.ndarray) -> Dataset:
    """The training split without fold ``val`` as training data, the fold as "test" data."""
    fit = np.setdiff1d(np.arange(len(ds.y_train)), val)
    return dataclasses.replace(ds, X_train=ds.X_train[fit], y_train=ds.y_train[fit],
                               X_test=ds.X_train[val], y_test=ds.y_train[val])


def run_fold(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Every setting on one (data set, fold): validation accuracies."""
    import torch

    from edge_agent.calibrate.burst import run_burst

    torch.set_num_threads(1)
    ds: Dataset = job["ds"]
    bits, fold = job["bits"], job["fold"]
    bundle = start_bundle(ds, [bits], job["fp_steps"])
    pool_x, pool_y = candidate_pool(ds, job["pool_min"])
    rows = []
    for name, variant in settings().items():
        cfg = BurstConfig(bits=bits, seed=fold, **{**BASE, "coreset_fraction": job["fraction"],
                                                   **variant})
        result = run_burst(bundle, pool_x, pool_y, cfg)
        pred, _ = Engine(result.bundle, bits=bits).predict(ds.X_test)
        rows.append({"dataset": ds.name, "fold": fold, "setting": name,
                     "val_accuracy": float(np.mean(pred == ds.y_test)),
                     "cpu_s": result.stats["cpu_s"]})
        log.info("%s fold %d %s: %.3f", ds.name, fold, name, rows[-1]["val_accuracy"])
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean validation accuracy per setting and data set, the overall mean, the winner."""
    names = list(settings())
    datasets = sorted({r["dataset"] for r in rows})
    table = {n: {d: statistics.fmean(r["val_accuracy"] for r in rows
                                     if r["setting"] == n and r["dataset"] == d)
                 for d in datasets} for n in names}
    overall = {n: statistics.fmean(table[n].values()) for n in names}
    best = max((n for n in names if n != BASELINE), key=lambda n: overall[n])
    return {"datasets": datasets, "table": table, "overall": overall, "best": best,
            "best_settings": settings()[best]}


def markdown(summary: dict[str, Any], caption: str) -> str:
    """The validation table, best setting in bold."""
    ds = summary["datasets"]
    lines = [caption, "", "| setting | " + " | ".join(ds) + " | mean |",
             "|---|" + "---|" * (len(ds) + 1)]
    for name, accs in summary["table"].items():
        cells = [f"{100 * accs[d]:.1f}" for d in ds] + [f"{100 * summary['overall'][name]:.1f}"]
        label = f"**{name}**" if name == summary["best"] else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    defaults = BurstConfig()
    lines += ["", f"Best on validation: {summary['best']}. Shipped defaults (BurstConfig): "
                  f"random_share {defaults.random_share}, score_temperature "
                  f"{defaults.score_temperature:g}."]
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--datasets", default="gunpoint,digits")
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fp-steps", type=int, default=400)
    ap.add_argument("--pool-min", type=int, default=500)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.time()
    jobs = []
    for name in args.datasets.split(","):
        ds = RAW[name](args.data_dir)
        jobs += [{"ds": fold_dataset(ds, val), "bits": args.bits, "fold": i,
                  "fp_steps": args.fp_steps, "pool_min": args.pool_min,
                  "fraction": args.fraction}
                 for i, val in enumerate(folds(ds.y_train, args.folds))]
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for part in pool.map(run_fold, jobs):
            rows += part
    summary = summarize(rows)
    caption = (f"Validation accuracy % ({args.folds}-fold cross-validation inside the training "
               f"split; the test split is not used), {args.bits} bits, coreset "
               f"{100 * args.fraction:g}% of the pool, {BASE['steps']} steps, mean over folds. "
               f"{time.time() - t0:.0f} s wall, {args.jobs} worker processes.")
    md = markdown(summary, caption)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qat_burst_select.md").write_text(md + "\n")
    (args.out / "qat_burst_select.json").write_text(
        json.dumps({"rows": rows, "summary": summary, "base_config": BASE}, indent=1) + "\n")


if __name__ == "__main__":
    main()
