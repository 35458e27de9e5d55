"""A flip round's cost against the torch-free back-propagation, and QCore vs random vs
most-recent buffers, on the real-drift sets at 4 bits: the part of ``bench/real_drift.py``
these keys come from, run alone (its replays, scoring and key definitions), with more
streams per trained bundle for the buffer comparison.

Per (set, seed) it replays the benchmark's real-drift stream and ``--streams - 1`` more
(other labelled samples and orders of the same stream part, ``rng`` salted with the
stream index), each through the every-chunk flip path with the QCore, random and
most-recent buffers, runs the numpy last-layer back-propagation on the same labelled
samples, and measures a round's tracemalloc peak on the benchmark's stream. Held-out
scoring as in the benchmark (samples never streamed). The keys are
:func:`bench.real_drift_report.summarize`'s over these cases, plus the per-set paired
QCore - random differences in held-out accuracy points with their standard errors.

    python -m bench.round_cost --json [--sets watch_side,seattle_weather] [--streams 4]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.real_drift_report import REF, jsonable, summarize  # noqa: E402

LABEL_FRACTION = 0.2  # as bench/real_drift.py
DEFAULT_SETS = "japanese_vowels,acsf1,watch_side,seattle_weather"


def run_job(
    name: str,
    seed: int,
    streams: int,
    cache: str,
    buffers: tuple[str, ...] = ("random", "recent"),
    cost: bool = True,
) -> list[dict[str, Any]]:
    """Every stream of one (set, seed): cases as ``bench/real_drift.py`` records them."""
    import torch

    from bench import real_drift_methods as m
    from bench.real_drift import _score
    from bench.real_drift_data import check_disjoint, load_split, stream_items
    from bench.real_drift_train import trained

    torch.set_num_threads(1)
    split = load_split(name, Path(cache), seed)
    bundle, _, _ = trained(split, seed, Path(cache))
    X, y = split.X, split.y
    cases = []
    for k in range(streams):
        salt = "" if k == 0 else f"|stream{k}"  # stream 0 is the benchmark's own
        rng = np.random.default_rng(
            [seed, zlib.crc32(f"real|real|{LABEL_FRACTION}{salt}".encode())]
        )
        data = stream_items(X, y, split.stream, LABEL_FRACTION, rng)
        check_disjoint(data.ids, split.held, f"{name}: held-out")
        chunk = m.every_chunk()
        out: dict[str, Any] = {"none": m.Outcome(m.Engine(bundle, bits=4))}
        out[REF] = m.replay(bundle, 4, data, chunk, buffer="qcore", seed=seed)
        for buf in buffers:
            out[f"buffer_{buf}"] = m.replay(bundle, 4, data, chunk, buffer=buf, seed=seed)
        if cost:
            out["numpy_backprop"] = m.numpy_last_layer(bundle, 4, data, seed)
        rows = _score(out, X[split.held], y[split.held], X[split.clean], y[split.clean])
        rows["default"] = rows[REF]  # summarize's forgetting needs one; no key here uses it
        case = {
            "set": name,
            "seed": seed,
            "stream": k,
            "bits": 4,
            "kind": "real",
            "drift": "real",
            "label_fraction": LABEL_FRACTION,
            "scored_samples": len(split.held),
            "methods": rows,
        }
        if k == 0 and "numpy_backprop" in out:
            first, later = m.round_peak_memory(bundle, 4, data, chunk)
            case["first_round_peak_mb"], case["round_peak_mb"] = first, later
            peak = m.numpy_last_layer(bundle, 4, data, seed, peak_memory=True)
            case["numpy_backprop_peak_mb"] = float(peak.note.split()[0])
        cases.append(case)
    return cases


def paired(cases: list[dict[str, Any]], other: str) -> dict[str, dict[str, float]]:
    """Per set: mean and standard error of (QCore - ``other`` buffer) held-out accuracy
    points over its streams, and of the no-calibration loss, for telling noise apart."""
    out: dict[str, dict[str, float]] = {}
    for name in sorted({c["set"] for c in cases}):
        d = [
            100 * (c["methods"][REF]["after"] - c["methods"][f"buffer_{other}"]["after"])
            for c in cases
            if c["set"] == name
        ]
        se = statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("nan")
        out[name] = {"mean_pts": statistics.fmean(d), "se_pts": se, "n": len(d)}
    return out


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sets", default=DEFAULT_SETS)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--streams", type=int, default=4, help="streams per (set, seed)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument(
        "--buffers",
        default="random,recent",
        help="buffers beside QCore (random, recent, fp_wrong_as_miss: QCore whose new "
        "labelled samples the FP model gets wrong start at miss_count, not 50)",
    )
    ap.add_argument("--no-cost", action="store_true", help="buffers only: no back-prop, no peaks")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--out", type=Path, help="write the cases and keys here (JSON)")
    ap.add_argument("--json", action="store_true", help="print the keys as one JSON object")
    args = ap.parse_args()
    jobs = [(n, int(s)) for n in args.sets.split(",") for s in args.seeds.split(",")]
    load0, t0 = os.getloadavg(), time.time()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        buffers = tuple(args.buffers.split(","))
        futs = [
            pool.submit(run_job, n, s, args.streams, str(args.cache), buffers, not args.no_cost)
            for n, s in jobs
        ]
        cases = [c for f in futs for c in f.result()]
    bench_streams = [c for c in cases if c["stream"] == 0]  # the benchmark's own keys
    keys = {
        k: v
        for k, v in summarize(bench_streams)["keys"].items()
        if k.startswith(("cpu_ratio", "memory_ratio", "qcore_minus", "round_peak", "first_round"))
        or k in ("torchfree_backprop_peak_mb",)
    }
    every = summarize(cases)["keys"]  # every stream (the seed means take them all)
    keys["all_streams_qcore_minus_random_pts"] = every["qcore_minus_random_pts"]
    keys["all_streams_qcore_minus_random_accuracy_pts"] = every["qcore_minus_random_accuracy_pts"]
    keys["all_streams_cpu_ratio_vs_torchfree_backprop"] = every["cpu_ratio_vs_torchfree_backprop"]
    for buf in buffers:
        keys[f"qcore_minus_{buf}_by_set"] = paired(cases, buf)
    run = {
        "sets": args.sets.split(","),
        "seeds": args.seeds,
        "streams": args.streams,
        "wall_s": round(time.time() - t0, 1),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
    }
    if args.out:
        args.out.write_text(json.dumps(jsonable({"keys": keys, "run": run, "cases": cases})))
    print(json.dumps(jsonable({**keys, "run": run}), indent=None if args.json else 1))


if __name__ == "__main__":
    main()
