"""CPU of the agent's ingest thread per message: receive, decode, validate, enqueue.

The agent's own ZeroMQ source (PULL, bind, ipc) with its intake and queue runs in this
process; a publisher process pushes BasicMotions-sized samples (6 x 100 float32, every one
distinct) at a steady rate. The ingest thread's CPU time (its own clock,
``pthread_getcpuclockid``: ns resolution, preemption not counted) is read when the first
and the last message are in the queue. Repetitions, min and median; the load average
with the result. Run it from two checkouts to compare them (it uses only what every
version of the ingest code has):

    python -m bench.ingest_cost                      # 20,000/s, 40,000 messages, 5 reps
    PYTHONPATH=/other/checkout python /other/checkout/bench/ingest_cost.py --out /tmp/x
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.cputime import loadavg  # noqa: E402
from edge_agent.ingest.config import IngestConfig  # noqa: E402
from edge_agent.ingest.intake import Intake, Item  # noqa: E402
from edge_agent.ingest.queue import DropQueue  # noqa: E402
from edge_agent.ingest.zmq_source import ZmqSource  # noqa: E402
from edge_agent.service.metrics import Metrics  # noqa: E402

SHAPE = (6, 100)
# the publisher: encodes ahead, then sends at the rate (a process of its own: its loop
# must not take this process's GIL from the thread measured)
PUBLISHER = """
import sys, time, numpy as np, zmq
from edge_agent.ingest.protocol import encode_sample
ep, n, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rng = np.random.default_rng(0)
msgs = [encode_sample("s", i, rng.normal(size=(6, 100)).astype(np.float32), 0.0) for i in range(n)]
ctx = zmq.Context(); s = ctx.socket(zmq.PUSH); s.setsockopt(zmq.SNDHWM, 0); s.connect(ep)
time.sleep(0.3)
t0 = time.perf_counter()
for i, m in enumerate(msgs):
    while (time.perf_counter() - t0) * rate < i:
        time.sleep(0.0001)
    s.send(m)
s.close(linger=-1); ctx.term()
"""


def _thread_cpu_ns(thread: threading.Thread) -> int:
    assert thread.ident is not None
    return time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))


def one_run(n: int, rate: float, d: Path) -> dict[str, float]:
    """Push ``n`` messages at ``rate``; the ingest thread's CPU us per message."""
    metrics = Metrics()
    queue: DropQueue[Item] = DropQueue(n + 1)
    intake = Intake(queue, metrics, SHAPE, 4, 1 << 20)
    ep = f"ipc://{d}/in-{time.monotonic_ns()}.sock"
    cfg = IngestConfig(socket="pull", endpoints=[ep], rcvhwm=1_000_000, queue_capacity=n + 1)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    src = ZmqSource(ctx, cfg, intake)
    src.start()
    pub = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, ep, str(n), str(rate)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        while len(queue) == 0:
            time.sleep(0.0002)
        cpu0, t0 = _thread_cpu_ns(src._thread), time.perf_counter()
        deadline = time.monotonic() + 60 + n / rate
        while len(queue) < n and time.monotonic() < deadline:
            time.sleep(0.001)
        cpu1, t1 = _thread_cpu_ns(src._thread), time.perf_counter()
        got = len(queue)
    finally:
        pub.wait(60)
        src.stop()
        ctx.term()
    return {"us_per_msg": (cpu1 - cpu0) / max(got - 1, 1) / 1e3, "received": got, "wall_s": t1 - t0}


def main(argv: list[str] | None = None) -> int:
    """Repetitions of :func:`one_run`; print and write ``ingest_cost.json``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=20000.0, help="messages/s (20000)")
    p.add_argument("--messages", type=int, default=40000, help="per repetition (40000)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    d = Path(tempfile.mkdtemp(prefix="eab-ic-", dir="/tmp"))
    runs: list[dict[str, Any]] = []
    for _ in range(args.reps):
        runs.append({**one_run(args.messages, args.rate, d), "loadavg": loadavg()})
        print(f"  {runs[-1]}", file=sys.stderr)
    us = [r["us_per_msg"] for r in runs]
    out = {
        "command": "python -m bench.ingest_cost " + " ".join(argv or sys.argv[1:]),
        "code": str(REPO),
        "rate": args.rate,
        "messages": args.messages,
        "ingest_thread_us_per_msg": {
            "min": round(min(us), 2),
            "median": round(statistics.median(us), 2),
        },
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
