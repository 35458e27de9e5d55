"""FP and quantized test accuracy per data set, bit-width and seed.

Trains the default architecture on each data set (the vendored copies in
``edge_agent/data/vendored``, or the raw public files in ``--data-dir``: the same arrays),
QAT at every bit-width, and evaluates the
exported bundle on the integer engine (the numbers the agent will see) next to the torch
fake-quant model. Prints a Markdown table; ``--json FILE`` writes every number.

    python -m bench.accuracy                       # 3 data sets x 3 seeds x 8/4/3/2 bits
    python -m bench.accuracy --datasets basicmotions --seeds 0
    python -m bench.accuracy --datasets PATH/PickupGestureWiimoteZ_TRAIN.ts --bits 4 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from edge_agent.data import load_dataset
from edge_agent.data.datasets import Dataset, load_digits_csv, load_ts_pair
from edge_agent.engine.engine import Engine
from edge_agent.training.fit import TrainConfig
from edge_agent.training.pipeline import train_bundle

RAW = {
    "basicmotions": lambda d: load_ts_pair(d / "uea" / "BasicMotions_TRAIN.ts"),
    "gunpoint": lambda d: load_ts_pair(d / "uea" / "GunPoint_TRAIN.ts"),
    "digits": lambda d: load_digits_csv(d / "digits.csv.gz"),
}


def bench_dataset(name: str, data_dir: Path | None) -> Dataset:
    """Data set ``name`` from the raw public files in ``data_dir`` or, when None, its
    vendored copy (equal to the raw files: tests/test_data.py)."""
    return load_dataset(name) if data_dir is None else RAW[name](data_dir)


def run_one(ds: Dataset, bits: list[int], seed: int, cfg: TrainConfig) -> dict[str, float]:
    """Train one seed; return FP, fake-quant and integer-engine test accuracies."""
    bundle, metrics = train_bundle(ds, bits, seed, cfg)
    out = dict(metrics)
    for b in bits:
        pred, _ = Engine(bundle, bits=b).predict(ds.X_test)
        out[f"int{b}_test_accuracy"] = float(np.mean(pred == ds.y_test))
    return out


def _fmt(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    sd = 100 * statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {sd:.1f}"


def table(results: dict[str, dict[int, dict[str, float]]], bits: list[int]) -> str:
    """Markdown table: one row per data set and bit-width, mean ± std over seeds."""
    lines = [
        "| data set | bits | FP acc. % | fake-quant acc. % | integer engine acc. % "
        "| engine per seed % |",
        "|---|---|---|---|---|---|",
    ]
    for name, per_seed in results.items():
        seeds = sorted(per_seed)
        fp = [per_seed[s]["fp_test_accuracy"] for s in seeds]
        for b in bits:
            fq = [per_seed[s][f"q{b}_test_accuracy"] for s in seeds]
            ie = [per_seed[s][f"int{b}_test_accuracy"] for s in seeds]
            each = " / ".join(f"{100 * v:.1f}" for v in ie)
            lines.append(f"| {name} | W{b}A8 | {_fmt(fp)} | {_fmt(fq)} | {_fmt(ie)} | {each} |")
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data-dir", type=Path, help="raw public files (uea/*.ts, digits.csv.gz); default vendored"
    )
    ap.add_argument("--datasets", default="basicmotions,gunpoint,digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bits", default="8,4,3,2")
    ap.add_argument("--json", type=Path, help="write all results to this JSON file")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (training)")
    args = ap.parse_args()
    bits = [int(b) for b in args.bits.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = TrainConfig(progress=False, torch_threads=args.threads)
    results: dict[str, dict[int, dict[str, float]]] = {}
    t0 = time.time()
    for name in args.datasets.split(","):
        ds = bench_dataset(name, args.data_dir)
        results[name] = {s: run_one(ds, bits, s, cfg) for s in seeds}
    print(table(results, bits))
    print(f"\n{len(seeds)} seeds, default TrainConfig, {time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"train_config": cfg.__dict__, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
