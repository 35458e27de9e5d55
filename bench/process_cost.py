"""CPU cost of the agent's inference loop per sample: ``Agent._process`` (predict, publish,
offer to the calibration) on batches of BasicMotions samples (6 x 100 float32), in an
agent started in this process with its default calibration (drift signal with the output
score; rounds on drift), as the ingest thread would hand them over.

A/B, interleaved, thread CPU time of the calling thread (the main thread's share; the
ingest and calibration threads are not counted), min and median of the repetitions:

- ``reuse``: the output drift score from the inference's logits (what the agent does);
- ``second pass``: the drift model run again on every batch (what it did before:
  the drift signal's model key cleared, so the logits never match).

Also the pause of a full garbage collection with the start-up heap in the collector and
after ``gc.freeze()`` (what the agent does once started). ``--profile`` prints the
functions that cost most in ``reuse`` (cProfile, thread CPU time) instead.

    python -m bench.process_cost            # bench/results/process_cost.json
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.cputime import loadavg
from edge_agent.data import load_dataset
from edge_agent.ingest.intake import Item
from edge_agent.ingest.protocol import decode_ingest, encode_sample
from edge_agent.service.agent import Agent
from edge_agent.service.config import local_config_text, parse_config
from edge_agent.service.runtime import tune_for_latency

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "edge_agent" / "defaults" / "basicmotions.eab"
RESULTS = ROOT / "bench" / "results"


def _items(agent: Agent, n: int, start: int) -> list[Item]:
    """``n`` decoded samples of one sensor from ``start`` on, as intake makes them."""
    X = load_dataset("basicmotions").X_test.astype(np.float32)
    eng = agent.model.engine
    now = time.perf_counter()
    out = []
    for i in range(start, start + n):
        raw = encode_sample("bench", i, X[i % len(X)], 0.0)
        msg = decode_ingest(raw, tuple(eng.input_shape), eng.num_classes, 1 << 20)
        out.append(Item(msg, now))  # type: ignore[arg-type]
    return out


def _run(agent: Agent, items: list[Item], batch: int) -> float:
    """Thread CPU microseconds per sample of ``_process`` over ``items``."""
    t0 = time.thread_time_ns()
    for s in range(0, len(items), batch):
        agent._process(items[s : s + batch])
    return (time.thread_time_ns() - t0) / len(items) / 1e3


def _full_gc_ms() -> float:
    """Median wall time of 5 full collections (ms)."""
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 2)


def main(argv: list[str] | None = None) -> int:
    """Run the A/B (or the profile); write bench/results/process_cost.json."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="samples per _process call (16)")
    p.add_argument("--samples", type=int, default=4096, help="samples per repetition")
    p.add_argument("--reps", type=int, default=7, help="repetitions per case (7)")
    p.add_argument("--profile", action="store_true", help="cProfile the reuse case")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    d = Path(tempfile.mkdtemp(prefix="eab-pc-", dir="/tmp"))
    cfg = parse_config(local_config_text(d, BUNDLE, '[log]\nlevel = "warning"\n'))
    agent = Agent(cfg)
    agent.start()
    tune_for_latency()  # as edge_agent.service.run does after start
    try:
        return _measure(agent, args)
    finally:
        agent.request_stop()
        agent.shutdown()


def _measure(agent: Agent, args: argparse.Namespace) -> int:
    assert agent.calibration is not None and agent.calibration.drift is not None
    drift = agent.calibration.drift
    key = drift.model_key
    seq = 0

    def fresh() -> list[Item]:
        nonlocal seq
        seq += args.samples
        return _items(agent, args.samples, seq - args.samples)

    _run(agent, fresh(), args.batch)  # warm-up
    if args.profile:
        prof = cProfile.Profile(time.thread_time)  # CPU time: preemption does not count
        items = fresh()
        prof.enable()
        _run(agent, items, args.batch)
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        return 0
    times: dict[str, list[float]] = {"reuse": [], "second pass": []}
    for _ in range(args.reps):
        for case in times:
            items = fresh()
            drift.model_key = key if case == "reuse" else None
            times[case].append(_run(agent, items, args.batch))
    drift.model_key = key
    res: dict[str, Any] = {
        k: {"min_us": round(min(v), 2), "median_us": round(statistics.median(v), 2)}
        for k, v in times.items()
    }
    res["saved_us_min"] = round(res["second pass"]["min_us"] - res["reuse"]["min_us"], 2)
    # a full collection's pause with the start-up heap in the collector and frozen
    gc.unfreeze()
    pauses = {"unfrozen": _full_gc_ms(), "frozen": (gc.freeze(), _full_gc_ms())[1]}
    out = {
        "command": " ".join(["python -m bench.process_cost", *argv_of(args)]),
        "batch": args.batch,
        "samples_per_rep": args.samples,
        "reps": args.reps,
        "per_sample_main_thread": res,
        "full_gc_pause_ms_median_of_5": pauses,
        "loadavg": loadavg(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "process_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


def argv_of(args: argparse.Namespace) -> list[str]:
    """The options that differ from the defaults, as given."""
    return [f"--batch {args.batch}"] if args.batch != 16 else []


if __name__ == "__main__":
    raise SystemExit(main())
