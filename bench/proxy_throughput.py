"""What counting messages costs the proxy: ``edge-agent proxy`` (a Python loop that
receives whole messages and counts them) against libzmq's C forwarder
(``zmq.proxy_steerable``, which counts only frames), interleaved.

Per run: one proxy process on ipc, one counting subscriber (``bench.fleet_publish sink``)
and ``--blasters`` publisher processes sending one real BasicMotions sample message in the
two-frame form as fast as they can for ``--seconds``. Reported per forwarder: messages
forwarded per second of the sending window (min and median over ``--reps``) and the proxy
process's CPU per forwarded message (user + system, from /proc via psutil), with the load
average. The fleet target is >= 50,000 samples/s on this 2-core machine.

    nice -n 5 python -m bench.proxy_throughput --json   # bench/results/proxy_throughput.*
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fleet_support import ProxyProc  # noqa: E402

RESULTS = REPO / "bench" / "results"


def c_proxy(front: str, back: str) -> None:
    """libzmq's forwarder until SIGTERM; prints its frame counters as JSON."""
    import struct
    import threading

    import zmq

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    for s, ep, opt in ((xsub, front, zmq.RCVHWM), (xpub, back, zmq.SNDHWM)):
        s.setsockopt(opt, 100_000)
        s.bind(ep)
    ctl, peer = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    ctl.bind("inproc://ctl")
    peer.connect("inproc://ctl")
    t = threading.Thread(target=zmq.proxy_steerable, args=(xsub, xpub, None, peer), daemon=True)
    t.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass
    ctl.send(b"STATISTICS")
    values = [struct.unpack("=Q", f)[0] for f in ctl.recv_multipart()]
    print(json.dumps({"backend_out_frames": values[6]}), flush=True)
    os._exit(0)  # the forwarder thread holds the sockets; nothing left to flush


def _run_one(kind: str, work: Path, blasters: int, seconds: float, port: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.fleet_publish"]
    c_proc: subprocess.Popen[str] | None = None
    if kind == "edge-agent":
        proxy = ProxyProc(work, port)
        front, back, pid = proxy.front, proxy.back, proxy.proc.pid
        proxy.messages()  # waits for /metrics: the proxy is up
    else:
        front, back = f"ipc://{work}/cfront.sock", f"ipc://{work}/cback.sock"
        c_proc = subprocess.Popen(
            [sys.executable, "-m", "bench.proxy_throughput", "--c-proxy", front, back],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert c_proc.stdout is not None
        c_proc.stdout.readline()  # "ready"
        pid = c_proc.pid
    ps = psutil.Process(pid)
    sink = subprocess.Popen(
        [*cmd, "sink", "--endpoint", back, "--seconds", str(seconds + 30)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    sink.stdout.readline()
    before = proxy.messages()["backend/out"] if kind == "edge-agent" else 0.0
    cpu0 = sum(ps.cpu_times()[:2])
    procs = [
        subprocess.Popen(
            [*cmd, "blast", "--endpoint", front, "--seconds", str(seconds)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(blasters)
    ]
    outs = [json.loads(p.communicate(timeout=seconds + 120)[0].splitlines()[-1]) for p in procs]
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    time.sleep(1.0)  # the forwarder drains what the blasters queued
    cpu = sum(ps.cpu_times()[:2]) - cpu0
    if kind == "edge-agent":
        forwarded = proxy.messages()["backend/out"] - before
        proxy.stop()
    else:
        assert c_proc is not None
        c_proc.send_signal(signal.SIGTERM)
        out = json.loads(c_proc.communicate(timeout=30)[0].splitlines()[-1])
        forwarded = out["backend_out_frames"] / 2  # two frames per sample; nothing else sent
    sink.terminate()
    sink.communicate(timeout=30)
    sent = sum(o["sent"] for o in outs)
    return {
        "kind": kind,
        "sent": sent,
        "forwarded": forwarded,
        "wall_s": wall,
        "forwarded_per_s": forwarded / wall,
        "proxy_cpu_s": cpu,
        "cpu_us_per_message": 1e6 * cpu / max(forwarded, 1),
        "load_avg": os.getloadavg(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--blasters", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--port", type=int, default=19942)
    p.add_argument("--json", action="store_true", help="write bench/results/proxy_throughput.*")
    p.add_argument("--c-proxy", nargs=2, metavar=("FRONT", "BACK"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.c_proxy:
        c_proxy(*args.c_proxy)
        return 0
    runs = []
    with tempfile.TemporaryDirectory(prefix="ea-px-") as tmp:
        for rep in range(args.reps):
            for kind in ("edge-agent", "libzmq"):  # interleaved
                work = Path(tmp) / f"{kind}-{rep}"
                work.mkdir()
                r = _run_one(kind, work, args.blasters, args.seconds, args.port + rep)
                print(
                    f"{kind:10} {r['forwarded_per_s']:9.0f} msg/s, "
                    f"{r['cpu_us_per_message']:.2f} us CPU/msg, load {r['load_avg']}",
                    flush=True,
                )
                runs.append(r)
    summary: dict[str, Any] = {"load_avg_end": os.getloadavg(), "runs": runs}
    for kind in ("edge-agent", "libzmq"):
        rates = [r["forwarded_per_s"] for r in runs if r["kind"] == kind]
        cpu = [r["cpu_us_per_message"] for r in runs if r["kind"] == kind]
        summary[kind] = {
            "forwarded_per_s_min": min(rates),
            "forwarded_per_s_median": statistics.median(rates),
            "cpu_us_per_message_min": min(cpu),
            "cpu_us_per_message_median": statistics.median(cpu),
        }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "proxy_throughput.json").write_text(json.dumps(summary, indent=2) + "\n")
        ours, c = summary["edge-agent"], summary["libzmq"]
        (RESULTS / "proxy_throughput.md").write_text(
            "# Proxy throughput (`python -m bench.proxy_throughput --json`)\n\n"
            f"{args.blasters} blasters, {args.seconds:.0f} s windows, {args.reps} interleaved "
            f"reps; load average at the end {summary['load_avg_end']}.\n\n"
            "| forwarder | msg/s min | msg/s median | CPU us/msg min | CPU us/msg median |\n"
            "|---|---|---|---|---|\n"
            f"| edge-agent proxy (counts messages) | {ours['forwarded_per_s_min']:.0f} | "
            f"{ours['forwarded_per_s_median']:.0f} | {ours['cpu_us_per_message_min']:.2f} | "
            f"{ours['cpu_us_per_message_median']:.2f} |\n"
            f"| libzmq zmq.proxy_steerable (frames only) | {c['forwarded_per_s_min']:.0f} | "
            f"{c['forwarded_per_s_median']:.0f} | {c['cpu_us_per_message_min']:.2f} | "
            f"{c['cpu_us_per_message_median']:.2f} |\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
