"""The transport alone: bench/ingest.py's publisher into a bare SUB sink, no agent.

Tells whether the publisher (its send loop, its libzmq I/O thread) or ZeroMQ over ipc /
tcp limits the end-to-end benchmark: the sink is a process of its own pinned where
bench/ingest.py pins the agent, with the agent's socket options (SUB, bind, RCVHWM),
receiving in a tight loop and counting. The publisher is bench/ingest.py's (XPUB through
``edge_agent.client.Publisher``, pre-encoded BasicMotions-sized samples, paced send loop)
on the other cores. Per rate: offered and received rates, messages lost, the publisher's
and the sink's CPU us per message, the load average.

    python -m bench.ingest_transport            # bench/results/ingest_transport.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.cputime import loadavg  # noqa: E402
from edge_agent.client import Publisher  # noqa: E402
from edge_agent.ingest.protocol import encode_sample  # noqa: E402

# the sink: binds as the agent does, counts messages until ``n`` or 3 s of silence, then
# prints the count, its CPU seconds and the time from first to last message
SINK = """
import sys, time, zmq
ep, n = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context(); s = ctx.socket(zmq.SUB); s.setsockopt(zmq.RCVHWM, 100000)
s.setsockopt(zmq.SUBSCRIBE, b""); s.bind(ep)
print(s.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
got, t_first, t_last = 0, 0.0, 0.0
while got < n and s.poll(3000):
    s.recv(copy=False); got += 1
    t_last = time.perf_counter()
    if got == 1:
        t_first, cpu0 = t_last, time.process_time()
print(got, time.process_time() - cpu0, t_last - t_first, flush=True)
"""


def one(endpoint: str, core: int, rate: float, n: int) -> dict[str, Any]:
    """Send ``n`` samples at ``rate`` (0: flat out) into a fresh sink on ``core``."""
    sink = subprocess.Popen(
        ["taskset", "-c", str(core), sys.executable, "-c", SINK, endpoint, str(n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    bound = sink.stdout.readline().strip()
    rng = np.random.default_rng(0)
    bufs = [
        encode_sample("s", i, rng.normal(size=(6, 100)).astype(np.float32), time.time())
        for i in range(n)
    ]
    pub = Publisher(bound, sndhwm=10_000_000)
    send = pub.sock.send
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i, buf in enumerate(bufs):
        while rate and (time.perf_counter() - t0) * rate < i:
            time.sleep(0.0001)
        send(buf)
    send_s = time.perf_counter() - t0
    pub_cpu = time.process_time() - cpu0  # the send loop and this process's libzmq thread
    got, sink_cpu, span = sink.stdout.readline().split()
    sink.wait(10)
    pub.close()
    return {
        "rate": rate,
        "offered_per_s": n / send_s,
        "received_per_s": (int(got) - 1) / float(span) if float(span) > 0 else 0.0,
        "lost": n - int(got),
        "publisher_cpu_us_per_msg": pub_cpu / n * 1e6,
        "sink_cpu_us_per_msg": float(sink_cpu) / max(int(got), 1) * 1e6,
        "loadavg": loadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    """Each transport at each rate; a table on stderr, JSON in ``--out``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rates", default="20000,40000,0", help="samples/s, 0 = flat out")
    p.add_argument("--count", type=int, default=80_000, help="samples per run (80,000)")
    p.add_argument("--core", type=int, default=0, help="the sink's CPU (the agent's in ingest.py)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ingest_transport.json")
    args = p.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    core = cpus[args.core % len(cpus)]
    if len(cpus) > 1:
        os.sched_setaffinity(0, {c for c in cpus if c != core})
    rows = []
    with tempfile.TemporaryDirectory(prefix="eab-tr-") as d:
        for rate in map(float, args.rates.split(",")):
            for ep in (f"ipc://{d}/in-{rate:.0f}.sock", "tcp://127.0.0.1:*"):
                r = {"transport": ep.split(":")[0], **one(ep, core, rate, args.count)}
                rows.append(r)
                print(
                    f"{r['transport']} {rate or 'max':>7}: offered {r['offered_per_s']:8.0f}/s "
                    f"received {r['received_per_s']:8.0f}/s lost {r['lost']} publisher "
                    f"{r['publisher_cpu_us_per_msg']:.1f} us/msg sink "
                    f"{r['sink_cpu_us_per_msg']:.1f} us/msg load {r['loadavg'][0]:.1f}",
                    file=sys.stderr,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
