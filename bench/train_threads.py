"""Does the torch thread count change training accuracy, or only float summation order?

``python -m bench.train_threads --data PATH/PickupGestureWiimoteZ_TRAIN.ts --seeds 5-14``
trains the default configuration (FP + 4-bit QAT, as ``bench.accuracy``) at one and two
torch threads for every seed, interleaved (the order alternates per seed), and scores the
exported bundle on the integer engine. Every run records its integer-weight digest, CPU
seconds of the process (all threads), wall seconds and the load average; results are
written after every run (``--json``), so a cut-short sweep keeps what it finished.

``--repeat`` reruns the first seed at each thread count to show a run is bit-identical
to itself; ``--diverge N`` trains the first seed's FP network at one and two threads side
by side and records, at each of the first N steps (and every 100th after), the largest
difference between their folded weights: float order shows at step 1, a different batch
or augmentation draw would show as a jump of the size of a whole update.

Run it on one core, one training at a time: ``taskset -c 1`` and
``OMP_WAIT_POLICY=PASSIVE`` (two OpenMP threads on one core then wait without spinning;
their partition of the work, so their float order, is that of two threads anywhere).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.train_time import weights_digest
from edge_agent.data import load_dataset
from edge_agent.data.datasets import Dataset
from edge_agent.engine.engine import Engine
from edge_agent.training.arch import FPNet, default_spec, fold_batchnorm
from edge_agent.training.fit import TrainConfig, normalize, torch_threads, train_fp
from edge_agent.training.pipeline import train_bundle


def one_run(ds: Dataset, seed: int, threads: int, bits: list[int]) -> dict[str, Any]:
    """Train ``seed`` at ``threads`` torch threads; accuracies, digest, CPU, wall, load."""
    load0 = os.getloadavg()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    cfg = TrainConfig(progress=False, torch_threads=threads)
    bundle, metrics = train_bundle(ds, bits, seed, cfg)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out: dict[str, Any] = {"seed": seed, "threads": threads, "fp": metrics["fp_test_accuracy"]}
    for b in bits:
        pred, _ = Engine(bundle, bits=b).predict(ds.X_test)
        out[f"q{b}"] = metrics[f"q{b}_test_accuracy"]
        out[f"int{b}"] = float(np.mean(pred == ds.y_test))
    return {
        **out,
        "digest": weights_digest(bundle),
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "load_start": [round(v, 2) for v in load0],
        "load_end": [round(v, 2) for v in os.getloadavg()],
    }


def _flat(net: FPNet) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.state_dict().values()])


def divergence(ds: Dataset, seed: int, first: int) -> dict[str, Any]:
    """FP training at one and two threads: the largest weight difference by step, and
    the largest difference of the untrained network's logits on the training inputs."""
    mean, std = ds.normalization()
    x, y = normalize(ds.X_train, mean, std), torch.from_numpy(ds.y_train)
    spec = default_spec(ds.input_shape, ds.num_classes)
    cfg = TrainConfig(progress=False)
    steps = {*range(1, first + 1), *range(100, cfg.fp_steps + 1, 100)}
    snaps: dict[int, dict[int, torch.Tensor]] = {}
    logits: dict[int, torch.Tensor] = {}
    for threads in (1, 2):
        mine: dict[int, torch.Tensor] = {}
        snaps[threads] = mine

        def keep(step: int, net: FPNet, mine: dict[int, torch.Tensor] = mine) -> None:
            if step in steps:
                mine[step] = _flat(net)

        with torch_threads(threads):
            torch.manual_seed(seed)
            with torch.no_grad():
                init = FPNet(spec).eval()  # train_fp's initial network: the same seed
                logits[threads] = init(x)
                start = _flat(fold_batchnorm(init))
            train_fp(spec, x, y, seed, cfg, keep, 1)
    return {
        "seed": seed,
        "init_logits_max_abs_diff": float((logits[1] - logits[2]).abs().max()),
        "weight_scale": float(snaps[1][max(steps)].abs().max()),
        # what another batch or augmentation draw would change at step 1: a whole update
        "first_update_max_abs": float((snaps[1][1] - start).abs().max()),
        "max_abs_weight_diff_by_step": {
            s: float((snaps[1][s] - snaps[2][s]).abs().max()) for s in sorted(steps)
        },
    }


def paired(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Per-seed difference two threads minus one, its mean, standard error and signs."""
    by = {(r["seed"], r["threads"]): r[key] for r in runs if "repeat" not in r}
    seeds = sorted(s for s, t in by if t == 1 and (s, 2) in by)
    d = [100 * (by[(s, 2)] - by[(s, 1)]) for s in seeds]
    if not d:
        return {}
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    return {
        "seeds": seeds,
        "mean_1_thread_pct": round(100 * statistics.fmean(by[(s, 1)] for s in seeds), 2),
        "mean_2_threads_pct": round(100 * statistics.fmean(by[(s, 2)] for s in seeds), 2),
        "diff_pts_per_seed": [round(v, 1) for v in d],
        "mean_diff_pts": round(statistics.fmean(d), 2),
        "se_pts": round(se, 2),
        "t": round(statistics.fmean(d) / se, 2) if se and not math.isnan(se) else None,
        "n_pos_zero_neg": [sum(v > 0 for v in d), sum(v == 0 for v in d), sum(v < 0 for v in d)],
    }


def report(paths: list[Path]) -> str:
    """Markdown: the runs of several ``--json`` files pooled, per seed and paired."""
    files = [json.loads(p.read_text()) for p in paths]
    runs = [r for f in files for r in f["runs"]]
    keys = ["fp", *(f"int{b}" for b in files[0]["bits"])]
    by = {(r["seed"], r["threads"]): r for r in runs if "repeat" not in r}
    seeds = sorted({s for s, _ in by})
    head = " | ".join(f"{k} 1 thr / 2 thr" for k in keys)
    lines = [
        f"# torch threads and accuracy: {files[0]['data']} (`python -m bench.train_threads`)",
        "",
        f"Files: {', '.join(p.name for p in paths)}. Accuracy % on the test split; int: the "
        "exported bundle on the integer engine. Load: 1-minute load average at the start.",
        "",
        f"| seed | {head} | CPU s 1 / 2 | load 1 / 2 |",
        "|---|" + "---|" * (len(keys) + 2),
    ]
    for s in seeds:
        a, b = by.get((s, 1)), by.get((s, 2))
        if a is None or b is None:
            continue
        cells = " | ".join(f"{100 * a[k]:.0f} / {100 * b[k]:.0f}" for k in keys)
        load = f"{a['load_start'][0]:.1f} / {b['load_start'][0]:.1f}"
        lines.append(f"| {s} | {cells} | {a['cpu_s']} / {b['cpu_s']} | {load} |")
    lines += [
        "",
        "| metric | seeds | 1 thread % | 2 threads % | 2 - 1 pts | SE pts | t | + / 0 / - |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    for k in keys:
        p = paired(runs, k)
        lines.append(
            f"| {k} | {len(p['seeds'])} | {p['mean_1_thread_pct']:.1f} | "
            f"{p['mean_2_threads_pct']:.1f} | {p['mean_diff_pts']:+.2f} | {p['se_pts']:.2f} | "
            f"{p['t']} | {' / '.join(map(str, p['n_pos_zero_neg']))} |"
        )
    reps = [r for r in runs if "repeat" in r]
    if reps:
        lines += ["", "Repeats (same seed, same thread count, integer-weight digest equal):"]
        lines += [
            f"- seed {r['seed']}, {r['threads']} thread(s): {r['identical_to_first']}" for r in reps
        ]
    for f in files:
        if "divergence" in f:
            d = f["divergence"]
            steps = d["max_abs_weight_diff_by_step"]
            shown = ", ".join(
                f"{k}: {v:.1e}"
                for k, v in steps.items()
                if int(k) in {1, 2, 3, 5, 10, 20, 100, 300, 600, 1200}
            )
            lines += [
                "",
                f"Divergence, seed {d['seed']}, FP training at 1 and 2 threads: untrained logits "
                f"differ by at most {d['init_logits_max_abs_diff']:.1e}; largest folded-weight "
                f"difference by step ({shown}; largest weight {d['weight_scale']:.2f}"
                + (
                    f"; the first update moved a weight by up to {d['first_update_max_abs']:.1e}"
                    if "first_update_max_abs" in d
                    else ""
                )
                + ").",
            ]
    return "\n".join(lines) + "\n"


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", help="data set name or TRAIN file")
    ap.add_argument("--seeds", default="5-14", help="'A-B' or comma list")
    ap.add_argument("--bits", default="4", help="comma list")
    ap.add_argument("--repeat", action="store_true", help="rerun the first seed per thread count")
    ap.add_argument("--diverge", type=int, default=0, help="steps compared one by one (0: skip)")
    ap.add_argument("--no-sweep", action="store_true", help="only --diverge")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--report", type=Path, nargs="+", help="print Markdown of these --json files")
    args = ap.parse_args()
    if args.report:
        print(report(args.report), end="")
        return
    if not (args.data and args.json):
        ap.error("--data and --json are required (unless --report)")
    ds = load_dataset(args.data)
    seeds = _seeds(args.seeds)
    bits = [int(b) for b in args.bits.split(",")]
    out: dict[str, Any] = {
        "data": ds.name,
        "bits": bits,
        "affinity": sorted(os.sched_getaffinity(0)),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "train_config": TrainConfig(progress=False).__dict__,
        "runs": [],
    }

    def save() -> None:
        out["paired"] = {k: paired(out["runs"], k) for k in ["fp", *(f"int{b}" for b in bits)]}
        args.json.write_text(json.dumps(out, indent=1))

    if args.diverge:
        out["divergence"] = divergence(ds, seeds[0], args.diverge)
        save()
    for i, seed in enumerate([] if args.no_sweep else seeds):
        for threads in (1, 2) if i % 2 == 0 else (2, 1):
            out["runs"].append(one_run(ds, seed, threads, bits))
            print(json.dumps(out["runs"][-1]), flush=True)
            save()
    if args.repeat and not args.no_sweep:
        for threads in (1, 2):
            r = {**one_run(ds, seeds[0], threads, bits), "repeat": True}
            first = next(x for x in out["runs"] if (x["seed"], x["threads"]) == (seeds[0], threads))
            r["identical_to_first"] = r["digest"] == first["digest"]
            out["runs"].append(r)
            print(json.dumps(r), flush=True)
            save()
    print(json.dumps(out["paired"], indent=1))


if __name__ == "__main__":
    main()
