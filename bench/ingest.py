"""End-to-end ingest benchmark: publisher -> agent (a real subprocess) -> predictions.

Runs the agent pinned to one CPU core (the publisher and the prediction subscriber on the
others), with its default calibration (rounds on drift; QCore buffer updates from every
8th sample), and streams BasicMotions-sized samples (6 x 100 float32) over ipc and tcp:

1. a rate search: streams at rising rates until one loses a sample; the capacity is the
   highest rate that lost none;
2. streams at 50% and 90% of that capacity: latency percentiles (send time in the sample
   -> prediction received by the subscriber);
3. a stream at the target rate (``--rate``, default 20,000/s).

Every stream uses its own sensor name, so one agent serves them all. Per stream: the
rate offered and the rate predicted (first to last prediction received), latency
percentiles, samples lost (sent, never predicted), the agent's queue drops, and the
agent's CPU time per sample (/proc; with the agent alone on its core, 1 / that is the
rate the core sustains, whatever the load elsewhere), per thread, and the times each
thread was switched in; while the stream came in, the agent's share of its core, the
core's idle share and the share other jobs of the machine took (a stream that loses
samples with others near 0 and idle 0 is the agent's own CPU limit), and this process's
own CPU per sample (publisher and subscriber). The load average comes with every result:
on a shared machine the wall-clock rates depend on it.

    python bench/ingest.py                      # table; bench/results/ingest.{md,json}
    python bench/ingest.py --json               # one JSON object on stdout as well
    python bench/ingest.py --transport ipc --seconds 2   # shorter
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import struct
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.agent_process import Agent, status  # noqa: E402
from bench.cputime import loadavg  # noqa: E402
from edge_agent.client import Publisher  # noqa: E402
from edge_agent.data import load_dataset  # noqa: E402
from edge_agent.ingest.protocol import encode_sample  # noqa: E402

DEFAULT_BUNDLE = REPO / "edge_agent" / "defaults" / "basicmotions.eab"
RESULTS = REPO / "bench" / "results"
TS_KEY = b"\xa2ts\xcb"  # msgpack: the str "ts", then a float64 (8 bytes, big-endian)
P99_TARGET_MS = 10.0
# the installed configuration's; the shipped unit grants it (LimitRTPRIO=1)
INSTALLED_REALTIME = int(
    tomllib.loads((REPO / "deploy" / "agent.toml").read_text())["inference"]["realtime_priority"]
)
PCTS = ("p50_ms", "p90_ms", "p99_ms")


def _config(
    d: Path,
    bundle: Path,
    transport: str,
    batch_max: int | None = None,
    calibration: bool = True,
    realtime: int = 0,
) -> Path:
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
[inference]
realtime_priority = {realtime}
{f"batch_max = {batch_max}" if batch_max else ""}
{"" if calibration else f"[calibration]{chr(10)}enabled = false"}
[state]
dir = "{d}/state"
runtime_dir = "{d}/run"
[log]
level = "warning"
""")
    return path


class Sink:
    """A thread keeping ``(receive time, payload)`` of every prediction; decoded later, so
    the receiving loop stays short and adds little to the latencies it measures."""

    def __init__(self, endpoint: str) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(endpoint)
        self.got: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        time.sleep(0.3)  # let the subscription reach the agent
        self._thread.start()

    def _run(self) -> None:
        sub, got, clock = self._sub, self.got, time.time
        while not self._stop.is_set():
            if sub.poll(50):
                while True:
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    got.append((clock(), frames[1]))

    def take(
        self, sensor: str, count: int, timeout_s: float, start: int = 0
    ) -> list[tuple[float, dict[str, Any]]]:
        """Wait up to ``timeout_s`` for ``count`` predictions after the ``start``-th kept;
        return those of ``sensor``. Decoded once they are in (or the time is up): decoding
        while the last ones arrive would take this process's GIL from the receiving thread
        and add to their latencies."""
        deadline = time.monotonic() + timeout_s
        while len(self.got) - start < count and time.monotonic() < deadline:
            time.sleep(0.05)
        mine = []
        for t, payload in self.got[start:]:
            msg = msgpack.unpackb(payload)
            if msg["sensor"] == sensor:
                mine.append((t, msg))
        return mine

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        self._thread.join()
        self._sub.close()
        self._ctx.term()


def stream(
    agent: Agent, sink: Sink, pub: Publisher, sensor: str, rate: float, seconds: float
) -> dict[str, Any]:
    """Send ``rate * seconds`` samples of ``sensor`` at ``rate``; measure what came back."""
    count = max(2, int(rate * seconds))
    ds = load_dataset("basicmotions")
    X = ds.X_test.astype(np.float32)
    # Encoded ahead with ts = 0; the send loop writes the send time into the ts bytes.
    # (the offset of the ts bytes varies with the length of the seq's encoding before it)
    # a little noise makes windows distinct, as a sensor's are (the test set has 40; 40 x 997
    # combinations; repeated windows would flatter the calibration's class memo)
    noise = np.random.default_rng(0).normal(0, 0.01, (997, *X.shape[1:])).astype(np.float32)
    bufs = [
        bytearray(encode_sample(sensor, i, X[i % len(X)] + noise[i % len(noise)], 0.0))
        for i in range(count)
    ]
    ats = [b.index(TS_KEY) + len(TS_KEY) for b in bufs]
    pack_into, send, clock = struct.Struct(">d").pack_into, pub.sock.send, time.time
    assert agent.proc is not None
    pid, me = agent.proc.pid, os.getpid()
    cpu0, th0, st0 = _cpu_s(pid), _threads_cpu_s(pid), agent.status()
    own0, sw0, core0 = _threads_cpu_s(me), _threads_cpu_s(pid, 2), _core(pid, agent.cpus)
    batches0 = _batches(agent)
    start = len(sink.got)
    # No collection in this process while the stream runs: the sink's list of 10^5 tuples
    # made a full one stall the receiving thread 20-30 ms, at the same samples each run
    # (measured latency, not the agent's)
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    for i, (buf, at) in enumerate(zip(bufs, ats, strict=True)):
        while (time.perf_counter() - t0) * rate < i:
            time.sleep(0.0001)
        pack_into(buf, at, clock())
        send(buf)
    send_s = time.perf_counter() - t0
    # while the stream came in: the agent's share of its core, the core's idle share
    # (nothing to run: the agent was not CPU-bound), other jobs' share, and the time the
    # agent's threads were runnable but waited (for each other or for other jobs)
    agent_share, idle_share, wait_share = (
        (b - a) / send_s for a, b in zip(core0, _core(pid, agent.cpus), strict=True)
    )
    got = sink.take(sensor, count, 10.0 + seconds, start)
    gc.enable()
    cpu1, th1, st1 = _cpu_s(pid), _threads_cpu_s(pid), agent.status()
    own1, sw1 = _threads_cpu_s(me), _threads_cpu_s(pid, 2)
    batches = _batches(agent) - batches0
    recv = np.array([t for t, _ in got])
    lat = (recv - np.array([m["ts"] for _, m in got])) * 1e3
    span = float(recv.max() - recv.min()) if len(recv) > 1 else float("nan")
    pct = (
        dict(zip(PCTS, map(float, np.percentile(lat, [50, 90, 99])), strict=True))
        if len(lat)
        else dict.fromkeys(PCTS)
    )
    predicted = st1["samples"]["predicted"] - st0["samples"]["predicted"]
    cal0, cal1 = st0["calibration"], st1["calibration"]
    return {
        "sensor": sensor,
        "offered_per_s": count / send_s,
        "count": count,
        "samples_per_s": (len(got) - 1) / span if len(got) > 1 else 0.0,
        **pct,
        "lost": count - len(got),
        "dropped": sum(st1["losses"].values()) - sum(st0["losses"].values()),
        "agent_cpu_us_per_sample": (cpu1 - cpu0) / max(predicted, 1) * 1e6,
        "mean_batch": predicted / max(batches, 1),
        "thread_cpu_us_per_sample": {
            name: round((t - th0.get(name, 0.0)) / max(predicted, 1) * 1e6, 1)
            for name, t in th1.items()
            if t - th0.get(name, 0.0) > 0
        },
        "agent_core_share": agent_share,
        "agent_runnable_wait_share": wait_share,
        "core_idle_share": idle_share,
        "core_others_share": 1.0 - idle_share - agent_share,
        # this process (the publisher's loop, the sink's thread, their libzmq threads)
        "bench_thread_cpu_us_per_sample": {
            name: round((t - own0.get(name, 0.0)) / count * 1e6, 1)
            for name, t in own1.items()
            if t - own0.get(name, 0.0) > 0
        },
        # times each thread was switched in (wake-ups and preemption ends), per sample
        "thread_switches_per_sample": {
            name: round((t - sw0.get(name, 0.0)) * 1e9 / max(predicted, 1), 3)
            for name, t in sw1.items()
            if t - sw0.get(name, 0.0) > 0
        },
        "calibration_rounds": cal1["done"] - cal0["done"],
        "drift_alarms": cal1["drift_alarms"] - cal0["drift_alarms"],
        "loadavg": loadavg(),
    }


def _batches(agent: Agent) -> int:
    """Inference batches the agent has run."""
    return int(status(agent.status_endpoint, "metrics")["counters"].get("inference_batches", 0))


def _threads_cpu_s(pid: int, field: int = 0) -> dict[str, float]:
    """Seconds of each of a process's threads by OS name (the agent names its own; the
    main thread is "main"; threads of one name are summed), from /proc's schedstat:
    ``field`` 0 = on the CPU, 1 = runnable but waiting for a CPU (other jobs ran), 2 =
    times switched in, / 1e9)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[field])
        except OSError:  # the thread ended meanwhile
            continue
        out[name] = out.get(name, 0.0) + ns / 1e9
    return out


def _core(pid: int, cpus: set[int] | None) -> tuple[float, float, float]:
    """Seconds so far: the agent's CPU, its core's idle time, its threads' runnable wait."""
    return _cpu_s(pid), _idle_s(cpus), sum(_threads_cpu_s(pid, 1).values())


def _idle_s(cpus: set[int] | None) -> float:
    """Idle seconds of ``cpus`` (/proc/stat: idle + iowait)."""
    tick, out = os.sysconf("SC_CLK_TCK"), 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *f = line.split()
        if cpus and name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            out += (int(f[3]) + int(f[4])) / tick
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def run_transport(args: argparse.Namespace, transport: str, cpus: list[int]) -> dict[str, Any]:
    """One agent: the rate search, the 50% / 90% streams and the target-rate stream;
    ``cpus``: the CPUs this process may use, read before any run pinned it."""
    d = Path(tempfile.mkdtemp(prefix="eab-", dir="/tmp"))
    agent_cpu = {cpus[args.core % len(cpus)]}
    others = [c for c in cpus if c not in agent_cpu]
    cfg = _config(
        d, args.bundle, transport, args.batch_max, not args.no_calibration, args.realtime_priority
    )
    nice = args.nice if os.geteuid() == 0 else None  # as the unit runs it (Nice=-5)
    # a start under load (the JIT warm-up on a shared core) can take minutes
    agent = Agent(cfg, f"ipc://{d}/run/status.sock", d / "agent.log", agent_cpu, 600.0, nice)
    with agent:
        if others:
            os.sched_setaffinity(0, set(others))
        sink = Sink(agent.endpoints["output"][0])
        pub = Publisher(agent.endpoints["ingest"][0], sndhwm=10_000_000)
        n = 0

        def go(rate: float, seconds: float) -> dict[str, Any]:
            nonlocal n
            n += 1
            r = stream(agent, sink, pub, f"{transport}-{n}", rate, seconds)
            print(
                f"  {transport} {rate:>8.0f}/s: predicted {r['samples_per_s']:8.0f}/s, "
                f"p99 {r['p99_ms']:8.2f} ms, lost {r['lost']}, "
                f"{r['agent_cpu_us_per_sample']:.1f} us CPU/sample, batch {r['mean_batch']:.1f}, "
                f"core {r['agent_core_share']:.2f} idle {r['core_idle_share']:.2f} others "
                f"{r['core_others_share']:.2f} waited {r['agent_runnable_wait_share']:.2f}, "
                f"load {r['loadavg'][0]:.1f}; threads {r['thread_cpu_us_per_sample']} us, "
                f"{r['thread_switches_per_sample']} switches/sample",
                file=sys.stderr,
            )
            return r

        try:
            go(args.rate_start / 2, 1.0)  # warm-up: JIT, buffers, first calibration jobs
            search, capacity, rate = [], 0.0, args.rate_start
            while rate <= args.rate_max:
                r = go(rate, args.seconds)
                search.append(r)
                if r["lost"] > 0:
                    break
                capacity = rate
                rate *= args.rate_step
            at50 = go(capacity * 0.5, args.seconds) if capacity else None
            at90 = go(capacity * 0.9, args.seconds) if capacity else None
            target = go(args.rate, args.seconds)
        finally:
            pub.close()
            sink.close()
        st = agent.status()
        counters = status(agent.status_endpoint, "metrics")["counters"]
    return {
        "transport": transport,
        "agent_cpu": sorted(agent_cpu),
        "agent_nice": nice,
        "realtime_priority": args.realtime_priority,
        "scheduling": st["scheduling"],  # whether the system granted it
        "capacity_per_s": capacity,
        "search": search,
        "at_50": at50,
        "at_90": at90,
        "target": target,
        "agent_rss_mib": st["rss_bytes"] / 2**20,
        "calibration": {
            k: st["calibration"][k] for k in ("done", "drift_alarms", "rounds_skipped")
        },
        "updates_dropped": counters.get("updates_dropped", 0),  # QCore updates shed
        # the latest checkpoint's write time (main thread: a stall of the inference loop)
        "checkpoint_ms": st["checkpoint"].get("ms"),
        # samples whose output drift score needed a model pass of its own (0: every
        # score came from the inference's logits)
        "drift_output_rescored": st["calibration"].get("drift", {}).get("output_rescored"),
    }


def _md(summary: dict[str, Any]) -> str:
    lines = [
        "# Ingest end to end",
        "",
        f"Command: `{summary['command']}`; BasicMotions 6x100 float32, agent pinned to one "
        f"core, publisher and subscriber on the others; {os.cpu_count()} CPUs; load average "
        "per stream in the tables. CPU us/sample: the agent's CPU time (all its threads) per "
        "prediction; 1e6 / it is the rate one core sustains.",
        "",
    ]
    for t in summary["runs"]:
        lines += [
            f"## {t['transport']}: capacity {t['capacity_per_s']:,.0f} samples/s (0 lost)",
            "",
            "| stream | offered /s | predicted /s | p50 ms | p90 ms | p99 ms | lost | "
            "CPU us/sample | mean batch | load |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rows = [("search", r) for r in t["search"]]
        rows += [("50% of capacity", t["at_50"]), ("90% of capacity", t["at_90"])]
        rows += [("target", t["target"])]
        for name, r in rows:
            if r is None:
                continue
            lines.append(
                f"| {name} | {r['offered_per_s']:,.0f} | {r['samples_per_s']:,.0f} | "
                f"{r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['lost']} | "
                f"{r['agent_cpu_us_per_sample']:.1f} | {r.get('mean_batch', 0):.1f} | "
                f"{r['loadavg'][0]:.1f} |"
            )
        lines += [
            "",
            f"agent nice {t['agent_nice']}, realtime_priority {t['realtime_priority']} "
            f"(threads under SCHED_RR: {t['scheduling']['realtime_threads']}), "
            f"RSS {t['agent_rss_mib']:.0f} MiB; calibration "
            f"{t['calibration']}, buffer updates dropped {t['updates_dropped']}, output drift "
            f"scores needing a model pass of their own {t.get('drift_output_rescored')}, "
            f"last checkpoint {t.get('checkpoint_ms') or 0:.1f} ms; CPU us per "
            f"sample by thread at the target rate: {t['target']['thread_cpu_us_per_sample']}",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table (and JSON); write bench/results/ingest.*."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="model bundle")
    p.add_argument("--transport", choices=("ipc", "tcp", "both"), default="both")
    p.add_argument("--rate", type=float, default=20000.0, help="target samples/s (20000)")
    p.add_argument("--rate-start", type=float, default=8000.0, help="search start (8000)")
    p.add_argument("--rate-step", type=float, default=1.25, help="search factor (1.25)")
    p.add_argument("--rate-max", type=float, default=80000.0, help="search end (80000)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds per stream (4)")
    p.add_argument("--core", type=int, default=0, help="index of the CPU the agent runs on")
    p.add_argument(
        "--nice",
        type=int,
        default=-5,
        help="the agent's nice value, as systemd/edge-agent.service sets it (-5; root only)",
    )
    p.add_argument(
        "--batch-max", type=int, help="the agent's inference.batch_max (default: its default)"
    )
    p.add_argument(
        "--no-calibration",
        action="store_true",
        help="calibration off: the agent's CPU per sample without its elastic share",
    )
    p.add_argument(
        "--realtime-priority",
        type=int,
        default=INSTALLED_REALTIME,
        help="the agent's inference.realtime_priority (default: the installed configuration's,"
        f" deploy/agent.toml: {INSTALLED_REALTIME}; 0: off; needs LimitRTPRIO= or root)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = p.parse_args(argv)
    transports = ["ipc", "tcp"] if args.transport == "both" else [args.transport]
    # Read once: the first run pins this process to the CPUs it leaves the agent, and the
    # second, reading them again, put its agent on the publisher's and subscriber's core
    # (session 12's tcp runs: capacity 12,500/s where tcp alone does 19,531/s).
    cpus = sorted(os.sched_getaffinity(0))
    runs = [run_transport(args, t, cpus) for t in transports]
    targets = [r["target"] for r in runs]
    summary = {
        "command": "python bench/ingest.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "samples_per_s": min(r["samples_per_s"] for r in targets),
        "offered_per_s": min(r["offered_per_s"] for r in targets),
        "p99_ms": max(r["p99_ms"] or float("inf") for r in targets),
        "lost": sum(r["lost"] for r in targets),
        "capacity_per_s": min(r["capacity_per_s"] for r in runs),
        "latency_at_50pct_ms": _worst(runs, "at_50"),
        "latency_at_90pct_ms": _worst(runs, "at_90"),
        "agent_cpu_us_per_sample": max(r["agent_cpu_us_per_sample"] for r in targets),
        "realtime_priority": args.realtime_priority,
        # threads the system let run under SCHED_RR (0: refused or off), fewest of the runs
        "realtime_threads": min(r["scheduling"]["realtime_threads"] for r in runs),
        "rate_target": args.rate,
        "p99_target_ms": P99_TARGET_MS,
        "loadavg_end": loadavg(),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "ingest.md").write_text(_md(summary))
    print(json.dumps(summary) if args.json else _md(summary))
    return 0


def _worst(runs: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    """The worst p50 / p90 / p99 over the transports' streams at ``key``."""
    rs = [r[key] for r in runs if r[key] is not None]
    if not rs:
        return None
    return {p: max(r[p] for r in rs) for p in ("p50_ms", "p90_ms", "p99_ms")}


if __name__ == "__main__":
    raise SystemExit(main())
