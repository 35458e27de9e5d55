"""CPU cost of the agent's inference loop per sample: ``Agent._process`` (predict, publish,
offer to the calibration) on batches of BasicMotions samples (6 x 100 float32), in an
agent started in this process with its default calibration (drift signal with the output
score; rounds on drift), as the ingest thread would hand them over.

A/B, interleaved, thread CPU time of the calling thread (the main thread's share; the
ingest and calibration threads are not counted), min and median of the repetitions:

- ``reuse``: the output drift score from the inference's logits (what the agent does);
- ``second pass``: the drift model run again on every batch (what it did before:
  the drift signal's model key cleared, so the logits never match).

Per stage of ``reuse`` (thread CPU time of each call, summed): inference (``_infer``: the
engine's pass), publish (``_publish``), the calibration hand-off (``offer_batch``: drift
scores, chunks) and the rest of ``_process``.

The calibration thread's share, per stream sample: the jobs the batches made (QCore buffer
updates) run on the calling thread (the agent's calibration thread is stopped), A/B:

- ``memo``: a buffer update predicts only the rows new to each model (what the agent does);
- ``no memo``: every buffer row predicted again by every model at every update (before).

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
from edge_agent.calibrate.class_memo import ClassMemo
from edge_agent.data import load_dataset
from edge_agent.ingest.intake import Item
from edge_agent.ingest.protocol import decode_ingest, encode_sample
from edge_agent.service import agent as agent_module
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
    # the test set has 40 samples: a little noise makes every window distinct, as a
    # sensor's are (repeated windows would flatter the calibration's class memo)
    noise = np.random.default_rng(start).normal(0, 0.01, (n, *X.shape[1:])).astype(np.float32)
    for i in range(start, start + n):
        raw = encode_sample("bench", i, X[i % len(X)] + noise[i - start], 0.0)
        msg = decode_ingest(raw, tuple(eng.input_shape), eng.num_classes, 1 << 20)
        out.append(Item(msg, now))  # type: ignore[arg-type]
    return out


def _run(agent: Agent, items: list[Item], batch: int) -> float:
    """Thread CPU microseconds per sample of ``_process`` over ``items``."""
    t0 = time.thread_time_ns()
    for s in range(0, len(items), batch):
        agent._process(items[s : s + batch])
    return (time.thread_time_ns() - t0) / len(items) / 1e3


class Stages:
    """Thread CPU time of the inference loop's stages, by wrapping them (one clock read
    before and after each call: ~1 us per batch, not per sample)."""

    NAMES = ("inference", "publish", "calibration hand-off")

    def __init__(self, agent: Agent) -> None:
        self.ns = dict.fromkeys(self.NAMES, 0)
        self._undo = [
            (agent, "_infer", agent._infer),
            (agent, "_publish", agent._publish),
            (agent_module, "offer_batch", agent_module.offer_batch),
        ]
        for (obj, attr, fn), name in zip(self._undo, self.NAMES, strict=True):
            setattr(obj, attr, self._timed(fn, name))

    def _timed(self, fn: Any, name: str) -> Any:
        def call(*args: Any) -> Any:
            t0 = time.thread_time_ns()
            try:
                return fn(*args)
            finally:
                self.ns[name] += time.thread_time_ns() - t0

        return call

    def restore(self) -> None:
        """Unwrap."""
        for obj, attr, fn in self._undo:
            if obj is agent_module:
                setattr(obj, attr, fn)
            else:
                delattr(obj, attr)  # the instance attribute hid the method


def _stage_run(agent: Agent, items: list[Item], batch: int) -> dict[str, float]:
    """Thread CPU us per sample of ``_process`` by stage over ``items``."""
    stages = Stages(agent)
    try:
        total = _run(agent, items, batch)
    finally:
        stages.restore()
    out = {k: v / len(items) / 1e3 for k, v in stages.ns.items()}
    out["rest of _process"] = total - sum(out.values())
    out["total"] = total
    return out


def _calibration_run(agent: Agent, items: list[Item], batch: int, memo: bool) -> tuple[float, int]:
    """Thread CPU us per stream sample of the calibration jobs ``items`` make (run here),
    and the number of jobs."""
    ctl = agent.calibration
    assert ctl is not None
    wrap = ClassMemo.wrap
    if not memo:  # every row predicted, as before the memo
        ClassMemo.wrap = lambda self, bits, key, keyed: wrap(self, bits, None, keyed)  # type: ignore[method-assign]
    try:
        for s in range(0, len(items), batch):
            agent._process(items[s : s + batch])
        t0, jobs = time.thread_time_ns(), 0
        while ctl.due():
            ctl.run(agent.model.engine)
            jobs += 1
        return (time.thread_time_ns() - t0) / len(items) / 1e3, jobs
    finally:
        ClassMemo.wrap = wrap  # type: ignore[method-assign]


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
    p.add_argument("--sort", default="tottime", help="--profile: pstats order (tottime)")
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
        pstats.Stats(prof, stream=sys.stdout).sort_stats(args.sort).print_stats(40)
        return 0
    times: dict[str, list[float]] = {"reuse": [], "second pass": []}
    stages: list[dict[str, float]] = []
    for _ in range(args.reps):
        for case in times:
            items = fresh()
            drift.model_key = key if case == "reuse" else None
            times[case].append(_run(agent, items, args.batch))
        drift.model_key = key
        stages.append(_stage_run(agent, fresh(), args.batch))
    # the calibration thread's work on the calling thread: stop the agent's own
    agent._stopping = True
    assert agent._cal_thread is not None
    agent._cal_thread.join()
    assert agent.calibration is not None
    while agent.calibration.due():  # what it left undone
        agent.calibration.run(agent.model.engine)
    cal: dict[str, list[float]] = {"memo": [], "no memo": []}
    jobs: dict[str, list[int]] = {"memo": [], "no memo": []}
    for _ in range(args.reps):
        for case in cal:
            us, n = _calibration_run(agent, fresh(), args.batch, case == "memo")
            cal[case].append(us)
            jobs[case].append(n)
    agent._stopping = False
    res: dict[str, Any] = {
        k: {"min_us": round(min(v), 2), "median_us": round(statistics.median(v), 2)}
        for k, v in times.items()
    }
    res["saved_us_min"] = round(res["second pass"]["min_us"] - res["reuse"]["min_us"], 2)
    by_stage = {
        k: {
            "min_us": round(min(s[k] for s in stages), 2),
            "median_us": round(statistics.median(s[k] for s in stages), 2),
        }
        for k in stages[0]
    }
    cal_res = {
        k: {
            "min_us": round(min(v), 2),
            "median_us": round(statistics.median(v), 2),
            "jobs": jobs[k],
        }
        for k, v in cal.items()
    }
    # a full collection's pause with the start-up heap in the collector and frozen
    gc.unfreeze()
    pauses = {"unfrozen": _full_gc_ms(), "frozen": (gc.freeze(), _full_gc_ms())[1]}
    out = {
        "command": " ".join(["python -m bench.process_cost", *argv_of(args)]),
        "batch": args.batch,
        "samples_per_rep": args.samples,
        "reps": args.reps,
        "per_sample_main_thread": res,
        "per_sample_main_thread_by_stage": by_stage,
        "per_stream_sample_calibration_jobs": cal_res,
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
