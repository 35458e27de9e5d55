"""Which flipper-training episodes recover what, per bit-width (issue 17, item 6).

The flipper-only part of ``bench/calibration.py``, cheap enough to compare several
flipper trainings on the same deployed models: per data set and seed one bundle is trained
(FP, QAT at 8/4/2 bits, QCore; cached in ``--cache``, the flipper is not part of it), then
every variant trains its flipping network on that bundle and runs the same calibration as
``bench.calibration``'s ``flipper`` method (a QCore update with the drifted stream half,
8 gated flip rounds) on every drift and bit-width; the recovered share of the accuracy
lost to the drift is scored on the evaluation half. Variants:

- ``current``: this checkout's :class:`FlipTrainConfig` defaults;
- ``reseeded``: the same with another seed for the flipper training alone (its spread);
- ``previous``: the episodes before the all-kinds change (3ee265b..31000b5): a bit-width
  and a single drift kind drawn at random per episode, strength 0.4-1.2 of the default,
  always in the default's direction; 24 episodes;
- ``episodes48`` / ``episodes96``: the defaults with 48 / 96 episodes instead of 24.

    python -m bench.flipper_episodes --json         # 2 data sets x 3 seeds x 8/4/2 bits
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.calibration import DRIFTS, FLIP, accuracy, case_data, flip_method, train_base  # noqa: E402
from bench.model_cache import cached_pair, load_pair, save_pair  # noqa: E402
from edge_agent.bundle import Bundle  # noqa: E402
from edge_agent.calibrate.flip_round import network_proposer  # noqa: E402
from edge_agent.data.datasets import Dataset, load_dataset  # noqa: E402
from edge_agent.data.drift import DEFAULT_STRENGTH, IMAGE_KINDS, SENSOR_KINDS, Drift  # noqa: E402
from edge_agent.engine.engine import Engine  # noqa: E402
from edge_agent.training.fit import TrainConfig  # noqa: E402
from edge_agent.training.flip_episodes import EpisodeDrift  # noqa: E402
from edge_agent.training.flip_train import FlipTrainConfig, train_flipper, with_flipper  # noqa: E402
from edge_agent.training.qnet import QuantNet  # noqa: E402

log = logging.getLogger("bench.flipper_episodes")
BITS = [8, 4, 2]
LABEL_FRACTION = 0.5  # as bench.calibration's default


def previous_plan(ds: Dataset, bits: list[int], seed: int) -> list[EpisodeDrift]:
    """The episodes of the flipper training before the all-kinds change, redrawn."""
    rng = np.random.default_rng(seed)
    kinds = SENSOR_KINDS if len(ds.input_shape) == 2 else IMAGE_KINDS
    plan = []
    for _ in range(24):
        b = int(rng.choice(sorted(bits)))
        kind = str(rng.choice(kinds))
        strength = DEFAULT_STRENGTH[kind] * float(rng.uniform(0.4, 1.2))
        plan.append(EpisodeDrift(b, kind, (Drift(kind, strength, 0),)))
    return plan


# a variant: the flipper training's config, its episodes (None: the config's plan) and seed
Variant = Callable[
    [Dataset, list[int], int], tuple[FlipTrainConfig, list[EpisodeDrift] | None, int]
]
VARIANTS: dict[str, Variant] = {
    "current": lambda ds, bits, seed: (FlipTrainConfig(), None, seed),
    "reseeded": lambda ds, bits, seed: (FlipTrainConfig(), None, seed + 1000),
    "previous": lambda ds, bits, seed: (FlipTrainConfig(), previous_plan(ds, bits, seed), seed),
    "episodes48": lambda ds, bits, seed: (FlipTrainConfig(episodes=48), None, seed),
    "episodes96": lambda ds, bits, seed: (FlipTrainConfig(episodes=96), None, seed),
}


def base(ds: Dataset, seed: int, cache: Path) -> tuple[Bundle, dict[int, QuantNet]]:
    """The deployed bundle (no flipper) and QAT models of one seed, cached."""
    stem = cache / f"{ds.name}-{seed}"
    if cached_pair(stem):
        return load_pair(stem, TrainConfig().act_bits)
    bundle, qnets = train_base(ds, seed, BITS)
    save_pair(stem, bundle, qnets)
    return bundle, qnets


def run_variant(
    name: str, ds: Dataset, seed: int, bundle: Bundle, qnets: dict[int, QuantNet]
) -> list[dict[str, Any]]:
    """Train the variant's flipper on the bundle; calibrate every drift at every width."""
    cfg, plan, flip_seed = VARIANTS[name](ds, sorted(qnets), seed)
    t0 = time.thread_time()
    net = train_flipper(bundle, qnets, ds, flip_seed, cfg, plan=plan)
    train_cpu = time.thread_time() - t0
    deployed = with_flipper(bundle, net)
    network = functools.partial(network_proposer, net, FLIP.threshold)
    rows = []
    for bits in BITS:
        base_engine = Engine(deployed, bits=bits)
        for drift in DRIFTS[ds.name]:
            chunk, ev, clean = case_data(ds, drift, seed, LABEL_FRACTION)
            engine, _, _ = flip_method(deployed, bits, network, chunk, False, seed, ev)
            rows.append(
                {
                    "variant": name,
                    "dataset": ds.name,
                    "seed": seed,
                    "bits": bits,
                    "drift": drift,
                    "pre": accuracy(base_engine, clean, ev[1]),
                    "post": accuracy(base_engine, *ev),
                    "calibrated": accuracy(engine, *ev),
                    "clean_after": accuracy(engine, clean, ev[1]),
                    "train_cpu_s": train_cpu,
                }
            )
    return rows


def recovery(rows: list[dict[str, Any]]) -> float:
    """Share of the mean accuracy lost to the drift that calibration won back."""
    pre, post, cal = (statistics.fmean(r[k] for r in rows) for k in ("pre", "post", "calibrated"))
    return (cal - post) / (pre - post) if pre - post > 1e-9 else float("nan")


def table(rows: list[dict[str, Any]], variants: list[str], seeds: list[int]) -> str:
    """Recovery per data set and bit-width (mean over drifts and seeds), one column per
    variant, with the per-seed recoveries in brackets."""
    lines = [
        "| data set | bits | " + " | ".join(variants) + " |",
        "|---|---|" + "---|" * len(variants),
    ]
    for name in sorted({r["dataset"] for r in rows}):
        for bits in BITS:
            cells = []
            for v in variants:
                sel = [
                    r for r in rows if (r["dataset"], r["bits"], r["variant"]) == (name, bits, v)
                ]
                per_seed = [recovery([r for r in sel if r["seed"] == s]) for s in seeds]
                seed_s = " / ".join(f"{x:.0%}" for x in per_seed)
                cells.append(f"**{recovery(sel):.0%}** ({seed_s})")
            lines.append(f"| {name} | {bits} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", default="basicmotions,digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-flipper")
    ap.add_argument("--json", action="store_true", help="write bench/results/flipper_episodes.*")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument(
        "--rows", type=Path, help="also write this run's rows to this file (for --merge)"
    )
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="no runs: the report of the rows in these files (runs split over processes)",
    )
    args = ap.parse_args()
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(f.read_text())["rows"]]
        write_report(rows, args, {"merged": [str(f) for f in args.merge]})
        return
    # one torch thread for the training and the flippers, as bench.calibration's workers:
    # the flipper is float-order sensitive, and its recovery with it
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger("edge_agent.training.flip_train").setLevel(logging.INFO)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    for name in args.datasets.split(","):
        ds = load_dataset(name)
        for seed in seeds:
            bundle, qnets = base(ds, seed, args.cache)
            for v in variants:
                rows += run_variant(v, ds, seed, bundle, qnets)
                sel = [
                    r for r in rows if (r["variant"], r["dataset"], r["seed"]) == (v, name, seed)
                ]
                log.info(
                    "%s seed %d %s: %s (load %.1f)",
                    name,
                    seed,
                    v,
                    ", ".join(
                        f"{b}-bit {recovery([r for r in sel if r['bits'] == b]):.0%}" for b in BITS
                    ),
                    os.getloadavg()[0],
                )
                if args.rows:  # after every flipper: a stopped run keeps what it did
                    args.rows.write_text(json.dumps({"rows": rows}, indent=1))
    meta = {"wall_s": round(time.time() - t0, 1), "loadavg_end": os.getloadavg()}
    write_report(rows, args, meta)


def write_report(rows: list[dict[str, Any]], args: argparse.Namespace, meta: dict) -> None:
    """Print the table; with ``--json`` write it and the rows to ``--out``."""
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    report = table(rows, variants, seeds)
    print(report)
    if args.json:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "flipper_episodes.json").write_text(
            json.dumps({"meta": meta, "rows": rows}, indent=1)
        )
        (args.out / "flipper_episodes.md").write_text(
            "# Flipper episodes: recovered share of the accuracy lost to drift "
            "(`python -m bench.flipper_episodes --json`)\n\n"
            "Mean over drifts and seeds in bold, per seed in brackets; drifts, split and "
            "calibration as `bench.calibration`'s flipper method.\n\n" + report + "\n"
        )


if __name__ == "__main__":
    main()
