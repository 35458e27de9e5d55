"""Ablation of QAT bursts (RES coreset, CLC, CR): accuracy and CPU seconds per burst.

For each data set (vendored, or raw public files in ``--data-dir``) an FP model is
trained once (seed 0) and quantized post-training (LSQ+ initialization, activation ranges
from the training split) at 2 and 4 bits: the state a board is in after switching to a
bit-width it has no QAT model for. Each burst starts from that state and trains the same
number of steps on a coreset of the candidate pool; accuracy is the exported bundle's on
the integer engine, on the test split. The candidate pool is the training split plus
augmented copies of it (jitter, scaling, rotation, time warp; images: shifts and noise)
until it holds at least ``--pool-min`` samples, standing in for the QCore buffer plus
recent stream samples (BasicMotions has only 40 training samples). Every variant is the
shipped :class:`BurstConfig` defaults with a few settings changed: random coreset + KD,
RES + KD and RES + CLC (the defaults: cascaded CLC) at every coreset fraction; random +
CLC, RES + CLC with another ``random_share``, RES + CLC independent and RES + CLC + CR at
5%; full-pool QAT (the upper bound: the whole pool for the same steps, and for 600 steps, the
project's QAT length).

The defaults (steps, learning rate, ``clc_beta``, ``random_share``) were chosen on
validation folds of the training split by :mod:`bench.qat_burst_select`, not on this test
split. The agent's latency while bursts run is measured by :mod:`bench.burst_latency`.

    python -m bench.qat_burst                 # the full run (about 45 minutes on 2 cores)
    python -m bench.qat_burst --quick         # one seed, 5% only, for a smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.accuracy import bench_dataset
from edge_agent.bundle import Bundle
from edge_agent.calibrate.burst_config import BurstConfig
from edge_agent.data.datasets import Dataset
from edge_agent.engine.engine import Engine

log = logging.getLogger("bench.qat_burst")

DEFAULTS = BurstConfig()  # the shipped defaults (bench/qat_burst_select chose them)
_OTHER = 0.0 if DEFAULTS.random_share > 0 else 0.5  # pure top-S, or half at random
OTHER_SHARE = f"RES + CLC, random_share {_OTHER:g}"
SWEEP: dict[str, dict[str, Any]] = {  # run at every coreset fraction, else the defaults
    "random + KD": {"selection": "random", "clc": "none"},
    "RES + KD": {"clc": "none"},
    "RES + CLC": {},
}
AT_5: dict[str, dict[str, Any]] = {  # run at 5% only
    "random + CLC": {"selection": "random"},
    OTHER_SHARE: {"random_share": _OTHER},
    "RES + CLC indep.": {"clc": "independent"},
    "RES + CLC + CR": {"cr_weight": 1.0},
}
UPPER = "full-pool QAT, 600 steps"
FULL: dict[str, dict[str, Any]] = {  # same steps as the bursts, and the project's QAT length
    "full-pool QAT, same steps": {"selection": "all", "clc": "none", "coreset_fraction": 1.0},
    UPPER: {"selection": "all", "clc": "none", "coreset_fraction": 1.0, "steps": 600},
}


def start_bundle(ds: Dataset, bits: list[int], fp_steps: int) -> Bundle:
    """FP training (seed 0) and post-training quantization at ``bits``."""
    import torch

    from edge_agent.training.arch import default_spec
    from edge_agent.training.export import build_bundle
    from edge_agent.training.fit import TrainConfig, normalize, train_fp
    from edge_agent.training.qnet import QuantNet, calibrate_activation_ranges

    mean, std = ds.normalization()
    x = normalize(ds.X_train, mean, std)
    spec = default_spec(ds.input_shape, ds.num_classes)
    fp = train_fp(
        spec, x, torch.from_numpy(ds.y_train), 0, TrainConfig(fp_steps=fp_steps, progress=False)
    )
    qnets = {}
    for b in bits:
        qnets[b] = QuantNet(fp, b, 8)
        calibrate_activation_ranges(qnets[b], fp, x)
    return build_bundle(ds, spec, fp, qnets, {"start": "post-training quantization"})


def candidate_pool(ds: Dataset, min_size: int, seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
    """The training split plus augmented copies until at least ``min_size`` samples."""
    import torch

    from edge_agent.training.augment import augment
    from edge_agent.training.fit import normalize

    mean, std = ds.normalization()
    shape = (1, -1, *([1] * (ds.X_train.ndim - 2)))
    x = normalize(ds.X_train, mean, std)
    gen = torch.Generator().manual_seed(seed)
    copies = [ds.X_train]
    for _ in range(math.ceil(min_size / len(ds.X_train)) - 1):
        aug = augment(x, gen).numpy()
        copies.append((aug * std.reshape(shape) + mean.reshape(shape)).astype(np.float32))
    return np.concatenate(copies), np.tile(ds.y_train, len(copies))


def test_accuracy(bundle: Bundle, bits: int, ds: Dataset) -> float:
    """Top-1 accuracy of the integer engine on the test split."""
    pred, _ = Engine(bundle, bits=bits).predict(ds.X_test)
    return float(np.mean(pred == ds.y_test))


def run_job(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Every variant for one (data set, bit-width, seed)."""
    import torch

    from edge_agent.training.burst import run_burst

    torch.set_num_threads(1)
    ds: Dataset = job["ds"]
    bundle: Bundle = job["bundle"]
    bits, seed = job["bits"], job["seed"]
    rows = []
    plan = [(name, cfg, f) for f in job["fractions"] for name, cfg in SWEEP.items()]
    if 0.05 in job["fractions"]:
        plan += [(name, cfg, 0.05) for name, cfg in AT_5.items()]
    plan += [(name, cfg, 1.0) for name, cfg in FULL.items()]
    for name, variant, fraction in plan:
        cfg = BurstConfig(**{"bits": bits, "seed": seed, "coreset_fraction": fraction, **variant})
        result = run_burst(bundle, job["pool_x"], job["pool_y"], cfg)
        rows.append(
            {
                "dataset": ds.name,
                "bits": bits,
                "seed": seed,
                "variant": name,
                "fraction": fraction,
                "coreset_size": result.stats["coreset_size"],
                "pool_size": result.stats["pool_size"],
                "cpu_s": result.stats["cpu_s"],
                "accuracy": test_accuracy(result.bundle, bits, ds),
            }
        )
        log.info(
            "%s %d-bit seed %d %s %.0f%%: %.3f (%.1f s CPU)",
            ds.name,
            bits,
            seed,
            name,
            100 * fraction,
            rows[-1]["accuracy"],
            rows[-1]["cpu_s"],
        )
    return rows


# ---------------------------------------------------------------- report


def _ms(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    sd = 100 * statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {sd:.1f}"


def summarize(rows: list[dict[str, Any]], start: dict[str, float]) -> dict[str, Any]:
    """Mean accuracy per (data set, bits, variant, fraction) and the 2-bit 5% target check."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["bits"], r["variant"], r["fraction"]), []).append(r)
    means = {k: statistics.fmean(r["accuracy"] for r in v) for k, v in groups.items()}
    targets: dict[str, Any] = {}
    for ds, bits in sorted({(r["dataset"], r["bits"]) for r in rows}):
        base = means.get((ds, bits, "random + KD", 0.05))
        full = means.get((ds, bits, UPPER, 1.0))
        if base is None or full is None:
            continue
        gap = full - base
        entry: dict[str, Any] = {"start": start[f"{ds}/{bits}"], "random_kd": base, "full": full}
        for v in ("RES + CLC", OTHER_SHARE, "random + CLC"):
            ours = means.get((ds, bits, v, 0.05))
            if ours is not None:
                entry[v] = {
                    "accuracy": ours,
                    "better": ours > base,
                    "gap_closed": (ours - base) / gap if gap > 1e-9 else None,
                }
        targets[f"{ds}/{bits}"] = entry
    return {"means": {"|".join(map(str, k)): v for k, v in means.items()}, "targets": targets}


def markdown(
    rows: list[dict[str, Any]],
    start: dict[str, float],
    fractions: list[float],
    caption: str,
) -> str:
    """The results table (mean ± std over seeds, integer-engine test accuracy %)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["bits"], r["variant"], r["fraction"]), []).append(r)
    cols = [*fractions]
    head = "| data set | bits | variant | " + " | ".join(f"{100 * f:g}% coreset" for f in cols)
    lines = [caption, "", head + " | CPU s / burst |", "|---" * (4 + len(cols)) + "|"]
    variants = [*SWEEP, *AT_5, *FULL]
    for ds, bits in sorted({(r["dataset"], r["bits"]) for r in rows}):
        lines.append(
            f"| {ds} | W{bits}A8 | start (PTQ) | "
            + " | ".join(f"{100 * start[f'{ds}/{bits}']:.1f}" for _ in cols)
            + " | - |"
        )
        for v in variants:
            cells, cpu = [], []
            for f in cols:
                g = groups.get((ds, bits, v, 1.0 if v in FULL else f), [])
                cells.append(_ms([r["accuracy"] for r in g]) if g else "")
                cpu += [r["cpu_s"] for r in g]
            if any(cells):
                lines.append(
                    f"| {ds} | W{bits}A8 | {v} | "
                    + " | ".join(cells)
                    + f" | {statistics.fmean(cpu):.1f} |"
                )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], start: dict[str, float], path: Path) -> None:
    """Accuracy against coreset fraction per data set and bit-width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["dataset"], r["bits"]) for r in rows})
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2), squeeze=False)
    for ax, (ds, bits) in zip(axes[0], keys, strict=True):
        for v in SWEEP:
            pts = sorted({r["fraction"] for r in rows if r["variant"] == v})
            ys = [
                statistics.fmean(
                    r["accuracy"]
                    for r in rows
                    if r["dataset"] == ds
                    and r["bits"] == bits
                    and r["variant"] == v
                    and r["fraction"] == f
                )
                for f in pts
            ]
            ax.plot([100 * f for f in pts], [100 * y for y in ys], marker="o", label=v)
        full = [
            r["accuracy"]
            for r in rows
            if r["dataset"] == ds and r["bits"] == bits and r["variant"] == UPPER
        ]
        if full:
            ax.axhline(100 * statistics.fmean(full), color="k", ls="--", label=UPPER)
        ax.axhline(100 * start[f"{ds}/{bits}"], color="grey", ls=":", label="start (PTQ)")
        ax.set_xscale("log")
        ax.set_title(f"{ds} W{bits}A8", fontsize=9)
        ax.set_xlabel("coreset % of pool")
    axes[0][0].set_ylabel("test accuracy % (integer engine)")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data-dir", type=Path, help="raw public files (uea/*.ts, digits.csv.gz); default vendored"
    )
    ap.add_argument("--datasets", default="basicmotions,gunpoint,digits")
    ap.add_argument("--bits", default="2,4")
    ap.add_argument("--fractions", default="0.01,0.05,0.1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fp-steps", type=int, default=400)
    ap.add_argument("--pool-min", type=int, default=500)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--quick", action="store_true", help="one seed, 5%% only, one round")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.quick:
        args.seeds, args.fractions = "0", "0.05"
    bits = [int(b) for b in args.bits.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    t0 = time.time()
    jobs, start, bundles = [], {}, {}
    for name in args.datasets.split(","):
        ds = bench_dataset(name, args.data_dir)
        bundle = bundles[name] = start_bundle(ds, bits, args.fp_steps)
        pool_x, pool_y = candidate_pool(ds, args.pool_min)
        for b in bits:
            start[f"{ds.name}/{b}"] = test_accuracy(bundle, b, ds)
            jobs += [
                {
                    "ds": ds,
                    "bundle": bundle,
                    "bits": b,
                    "seed": int(s),
                    "pool_x": pool_x,
                    "pool_y": pool_y,
                    "fractions": fractions,
                }
                for s in args.seeds.split(",")
            ]
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for part in pool.map(run_job, jobs):
            rows += part
    caption = (
        f"QAT bursts from post-training quantization, {DEFAULTS.steps} steps each, "
        f"integer-engine test accuracy % (mean ± std over {len(args.seeds.split(','))} seeds). "
        f"Candidate pool: training split plus augmented copies up to >= {args.pool_min} samples "
        "("
        + ", ".join(
            f"{r['dataset']} {r['pool_size']}" for r in {r["dataset"]: r for r in rows}.values()
        )
        + "); coreset % is of the pool. Full-pool QAT: the whole pool, for the same steps "
        "and for 600 steps (the project's QAT length; the upper bound of the gap)."
    )
    summary = summarize(rows, start)
    md = markdown(rows, start, fractions, caption)
    elapsed = time.time() - t0
    md += f"\n\nTotal benchmark time {elapsed:.0f} s (wall, {args.jobs} worker processes)."
    print(md)
    print(json.dumps(summary["targets"], indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "qat_burst_quick" if args.quick else "qat_burst"
    (args.out / f"{stem}.md").write_text(md + "\n")
    (args.out / f"{stem}.json").write_text(
        json.dumps(
            {
                "defaults": dataclasses.asdict(DEFAULTS),
                "variants": {**SWEEP, **AT_5, **FULL},
                "start": start,
                "rows": rows,
                "summary": summary,
                "elapsed_s": elapsed,
            },
            indent=1,
        )
    )
    plot(rows, start, args.out / f"{stem}.png")


if __name__ == "__main__":
    main()
