"""How long the calibration thread keeps the inference thread waiting for the GIL.

A probe thread (standing in for the inference thread) sleeps 0.5 ms at a time and
records how late it wakes up; waking up needs the GIL. Beside it the agent's calibration
code runs for real (:class:`CalibrationController`: QCore buffer updates and a gated
flip round every chunk, ``trigger = "samples"``, the busiest setting) on a stream of
BasicMotions samples, fed in the probe's process, in a thread of its own with one BLAS
thread. Cases, interleaved, each repeated:

- ``idle``: no calibration thread (what the OS and the machine's load add alone);
- ``calibration, switch 5 ms, nice +10``: Python's default GIL switch interval;
- ``calibration, switch 0.5 ms, nice +10``: the agent's (:mod:`edge_agent.service.runtime`);
- ``calibration, switch 0.5 ms, nice +0``: the same at the probe's priority: a thread at
  nice +10 that the OS preempts while it holds the GIL keeps the probe waiting until the
  OS runs it again (a priority inversion no switch interval can shorten);
- ``calibration, switch 0.5 ms, SCHED_IDLE``: the probe preempts it at once;
- ``busy process, nice +10``: no calibration thread, a busy loop in another process at
  nice +10 instead: what sharing the core costs a waking thread without any GIL;
- ``..., busy process nice +0``: the calibration thread (nice +10 or SCHED_IDLE) and a
  busy process of the probe's priority: while the busy process keeps the calibration
  thread off the CPU, a GIL it holds keeps the probe waiting (why the agent's calibration
  thread is not SCHED_IDLE: starved, it held the GIL for 200 ms);
- ``..., probe SCHED_RR`` (root): the two cases before with the probe under SCHED_RR, as
  ``[inference] realtime_priority`` puts the agent's inference thread: a fair-class thread
  woken beside a busy one waits for the scheduler's next tick, a real-time one does not,
  and what remains is the GIL.

Run it pinned to one core (``taskset -c 0``), as the agent runs. If the calibration
cases and the busy process give the same lateness, the tail is the OS's wake-up latency
on a shared core, not the GIL (what this machine showed: ``bench/results/gil_stall.json``).

The lateness beyond ``idle`` is the GIL wait; its maximum bounds the calibration
thread's longest hold. Wall clock by necessity (a wait is not CPU time): the load
average is printed with the result.

    python -m bench.gil_stall          # bench/results/gil_stall.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# One BLAS thread, as the benchmarks pin the agent to one core (OpenBLAS then starts
# one): its spinning workers would show up as CPU contention, not as the GIL.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.cputime import loadavg  # noqa: E402
from edge_agent.bundle_io import load_bundle  # noqa: E402
from edge_agent.calibrate.calibration_config import CalibrationConfig  # noqa: E402
from edge_agent.calibrate.controller import CalibrationController  # noqa: E402
from edge_agent.data import load_dataset  # noqa: E402
from edge_agent.engine.engine import Engine  # noqa: E402
from edge_agent.service.agent import CALIBRATION_NICE  # noqa: E402
from edge_agent.service.runtime import GIL_SWITCH_S  # noqa: E402
from edge_agent.service.scheduling import lower_own_priority  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "edge_agent" / "defaults" / "basicmotions.eab"
RESULTS = ROOT / "bench" / "results"
SLEEP_S = 0.0005
IDLE = -1  # the calibration thread's "nice" in a case: SCHED_IDLE


def _probe(stop: threading.Event, late: list[float], rt: bool) -> None:
    if rt:  # as [inference] realtime_priority = 1 puts the inference thread
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    while not stop.is_set():
        t = time.perf_counter()
        time.sleep(SLEEP_S)
        late.append((time.perf_counter() - t - SLEEP_S) * 1e3)


def _calibrate(stop: threading.Event, ctl: CalibrationController, eng: Engine, nice: int) -> None:
    """The calibration loop at ``nice`` (its step over this process) or under SCHED_IDLE
    (``IDLE``)."""
    if nice == IDLE:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        lower_own_priority(nice)
    X = load_dataset("basicmotions").X_test.astype(np.float32)
    n = 0
    while not stop.is_set():
        if not ctl.due():
            part = X[(np.arange(n, n + 64) % len(X))]
            ctl.observe_many(part, [None] * 64, list(range(n, n + 64)))
            n += 64
        ctl.run(eng)


def _hog(nice: int) -> subprocess.Popen[bytes]:
    """A busy loop in a process of its own (no GIL shared) on this process's CPUs."""
    return subprocess.Popen(
        [sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.nice(nice)
    )


def case(
    seconds: float,
    switch_s: float | None,
    nice: int = IDLE,
    hog: int | None = None,
    rt: bool = False,
) -> dict[str, Any]:
    """Probe lateness for ``seconds`` with a calibration thread (``switch_s``: the GIL
    switch interval, ``nice``: its nice step or ``IDLE``) and/or a busy process at nice
    ``hog``; ``rt``: the probe under SCHED_RR (root)."""
    stop, late = threading.Event(), list[float]()
    busy = None if hog is None else _hog(hog)
    old = sys.getswitchinterval()
    threads = [threading.Thread(target=_probe, args=(stop, late, rt))]
    ctl = None
    if switch_s is not None:
        sys.setswitchinterval(switch_s)
        bundle = load_bundle(BUNDLE)
        ctl = CalibrationController(bundle, CalibrationConfig(trigger="samples"))
        threads.append(threading.Thread(target=_calibrate, args=(stop, ctl, Engine(bundle), nice)))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    if busy is not None:
        busy.kill()
        busy.wait()
    sys.setswitchinterval(old)
    a = np.array(late)
    return {
        "wakeups": len(a),
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "p999_ms": float(np.percentile(a, 99.9)),
        "max_ms": float(a.max()),
        "rounds": 0
        if ctl is None
        else ctl.counts["flip_rounds_kept"] + ctl.counts["flip_rounds_rolled_back"],
        "loadavg": loadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the cases; write bench/results/gil_stall.json."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per case and repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    sw = f"switch {GIL_SWITCH_S * 1e3:g} ms"
    nice = CALIBRATION_NICE
    # name: (GIL switch interval or no calibration thread, its nice step or IDLE,
    # a busy process's nice or none, probe under SCHED_RR)
    cases: dict[str, tuple[float | None, int, int | None, bool]] = {
        "idle": (None, 0, None, False),
        f"calibration, switch 5 ms, nice +{nice}": (0.005, nice, None, False),
        f"calibration, {sw}, nice +{nice}": (GIL_SWITCH_S, nice, None, False),
        f"calibration, {sw}, nice +0": (GIL_SWITCH_S, 0, None, False),
        f"calibration, {sw}, SCHED_IDLE": (GIL_SWITCH_S, IDLE, None, False),
        f"busy process, nice +{nice}": (None, 0, nice, False),
        # a priority inversion: the calibration thread holding the GIL while a busy
        # process of the core's own class keeps it off the CPU
        f"calibration, {sw}, nice +{nice}, busy process nice +0": (GIL_SWITCH_S, nice, 0, False),
        f"calibration, {sw}, SCHED_IDLE, busy process nice +0": (GIL_SWITCH_S, IDLE, 0, False),
    }
    if os.geteuid() == 0:
        rr = ", probe SCHED_RR"
        cases[f"calibration, {sw}, nice +{nice}{rr}"] = (GIL_SWITCH_S, nice, None, True)
        cases[f"busy process, nice +{nice}{rr}"] = (None, 0, nice, True)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in cases}
    for _ in range(args.reps):
        for name, (switch_s, step, hog, rt) in cases.items():
            runs[name].append(case(args.seconds, switch_s, step, hog, rt))
            r = runs[name][-1]
            print(
                f"{name:48s} p99 {r['p99_ms']:7.2f} ms, p99.9 {r['p999_ms']:7.2f} ms, "
                f"max {r['max_ms']:7.2f} ms, rounds {r['rounds']}, load {r['loadavg'][0]:.1f}",
                file=sys.stderr,
            )
    summary = {
        name: {
            k: round(float(np.median([r[k] for r in rs])), 3)
            for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms")
        }
        | {"max_of_reps_ms": round(max(r["max_ms"] for r in rs), 3)}
        for name, rs in runs.items()
    }
    out = {
        "command": "taskset -c 0 python -m bench.gil_stall " + " ".join(argv or sys.argv[1:]),
        "probe_sleep_ms": SLEEP_S * 1e3,
        "median_over_reps": summary,
        "runs": runs,
        "loadavg_end": loadavg(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gil_stall.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["median_over_reps"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
