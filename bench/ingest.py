"""End-to-end ingest benchmark: publisher -> agent (a real subprocess) -> predictions.

Runs the agent pinned to one CPU core, replays BasicMotions-sized samples (6 x 100
float32) at a fixed rate over ipc and tcp, and measures on the subscriber side: the
sustained prediction rate, the end-to-end latency (send time in the sample -> prediction
received) and how many samples never came back as predictions.

    python bench/ingest.py                       # table, 5,000 samples/s, ipc and tcp
    python bench/ingest.py --rate 0 --json       # as fast as possible, one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.agent_process import Agent, PredictionSink  # noqa: E402
from edge_agent.client import Publisher  # noqa: E402
from edge_agent.data import load_dataset  # noqa: E402
from edge_agent.ingest.protocol import encode_sample  # noqa: E402

DEFAULT_BUNDLE = REPO / "edge_agent" / "defaults" / "basicmotions.eab"


def _config(d: Path, bundle: Path, transport: str) -> Path:
    if transport == "ipc":
        ingest, output = f"ipc://{d}/in.sock", f"ipc://{d}/out.sock"
    else:
        ingest, output = "tcp://127.0.0.1:*", "tcp://127.0.0.1:*"
    path = d / "agent.toml"
    path.write_text(f"""
[model]
bundle = "{bundle}"
[ingest]
endpoints = ["{ingest}"]
rcvhwm = 100000
queue_capacity = 4096
[output]
endpoints = ["{output}"]
sndhwm = 1000000
[state]
dir = "{d}/state"
runtime_dir = "{d}/run"
[log]
level = "warning"
""")
    return path


def run_one(bundle: Path, transport: str, rate: float, count: int, core: int) -> dict[str, Any]:
    """One agent, one stream; returns the measured numbers."""
    d = Path(tempfile.mkdtemp(prefix="eab-", dir="/tmp"))
    cpus = sorted(os.sched_getaffinity(0))
    agent_cpu = {cpus[core % len(cpus)]}
    agent = Agent(
        _config(d, bundle, transport), f"ipc://{d}/run/status.sock", d / "agent.log", cpus=agent_cpu
    )
    with agent:
        others = [c for c in cpus if c not in agent_cpu]
        if others:
            os.sched_setaffinity(0, set(others))
        ds = load_dataset("basicmotions")
        msgs = [ds.X_test[i % len(ds.X_test)] for i in range(count)]
        sink = PredictionSink(agent.endpoints["output"][0])
        with Publisher(agent.endpoints["ingest"][0], sndhwm=1_000_000) as pub:
            t0 = time.perf_counter()
            for i, x in enumerate(msgs):
                if rate > 0:
                    while (time.perf_counter() - t0) * rate < i:
                        time.sleep(0.0002)
                pub.send_raw(encode_sample("bench", i, x, time.time()))
            send_s = time.perf_counter() - t0
        sink.wait_for(count, 30.0)
        sink.close()
        st = agent.status()
        got = sink.got
        recv = np.array([g[0] for g in got])
        lat = (recv - np.array([g[1]["ts"] for g in got])) * 1e3
        span = recv.max() - recv.min() if len(recv) > 1 else float("nan")
        return {
            "transport": transport,
            "rate_target": rate,
            "count": count,
            "send_rate": count / send_s,
            "samples_per_s": (len(got) - 1) / span if len(got) > 1 else 0.0,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "lost": count - len(got),
            "dropped": st["samples"]["dropped"],
            "agent_rss_mib": st["rss_bytes"] / 2**20,
            "agent_cpu": sorted(agent_cpu),
        }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table or JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="model bundle")
    p.add_argument("--transport", choices=("ipc", "tcp", "both"), default="both")
    p.add_argument(
        "--rate",
        type=float,
        default=5000.0,
        help="samples/s offered (0: as fast as possible); default 5000",
    )
    p.add_argument("--count", type=int, default=30000, help="samples per run (default 30000)")
    p.add_argument("--core", type=int, default=0, help="index of the CPU the agent runs on")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    transports = ["ipc", "tcp"] if args.transport == "both" else [args.transport]
    runs = [run_one(args.bundle, t, args.rate, args.count, args.core) for t in transports]
    summary = {
        "samples_per_s": min(r["samples_per_s"] for r in runs),
        "p99_ms": max(r["p99_ms"] or float("inf") for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "rate_target": args.rate,
        "count": args.count,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"end-to-end ingest, BasicMotions 6x100 float32, agent on one core, "
        f"{args.count} samples at {'max' if args.rate == 0 else f'{args.rate:.0f}/s'}"
    )
    print(
        f"{'transport':<10}{'offered/s':>11}{'predicted/s':>13}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'lost':>7}{'RSS MiB':>9}"
    )
    for r in runs:
        print(
            f"{r['transport']:<10}{r['send_rate']:>11.0f}{r['samples_per_s']:>13.0f}"
            f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['lost']:>7}{r['agent_rss_mib']:>9.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
