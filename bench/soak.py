"""Soak: millions of samples through the real agent at a steady rate, labels and
calibration on, watching for leaks and lost samples.

A publisher thread sends BasicMotions samples (6 x 100 float32, every ``--labels-every``
th one labelled, so the agent logs labelled samples and runs calibration rounds) over
ipc PUSH -> PULL at ``--rate``; a subscriber counts the published predictions. Every
``--every`` seconds the agent's RSS (/proc/PID/status) and open file descriptors
(/proc/PID/fd) are sampled with its counters and thread liveness. At the end: the slopes
of RSS and descriptors per million samples after the warm-up (least squares), whether
the counters are exact (sent == predicted + dropped + rejected), and whether a thread
died (``status.threads`` at every sample, and the agent's log).

    python bench/soak.py --md                   # 5 million samples (about 14 min at 6,000/s)
    python bench/soak.py --samples 200000 --md  # shorter; also bench/results/soak.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.agent_process import Agent, status  # noqa: E402
from edge_agent.client import ClientError, Publisher  # noqa: E402
from edge_agent.data import load_dataset  # noqa: E402
from edge_agent.data.drift import rotate_axes  # noqa: E402
from edge_agent.ingest.protocol import encode_sample  # noqa: E402

DEFAULT_BUNDLE = REPO / "edge_agent" / "defaults" / "basicmotions.eab"
RESULTS = REPO / "bench" / "results"
AGENT_NICE = -5  # systemd/edge-agent.service: Nice=-5 (applied when run as root)
WARMUP_FRACTION = 0.2  # of the samples: JIT, buffers and the labelled log filling up


def _config(d: Path, bundle: Path, checkpoint_s: float) -> Path:
    path = d / "agent.toml"
    path.write_text(f"""
[model]
bundle = "{bundle}"
[ingest]
endpoints = ["ipc://{d}/in.sock"]
socket = "pull"
rcvhwm = 100000
queue_capacity = 4096
[output]
endpoints = ["ipc://{d}/out.sock"]
[state]
dir = "{d}/state"
runtime_dir = "{d}/run"
checkpoint_interval_s = {checkpoint_s}
[log]
level = "warning"
""")
    return path


def _proc(pid: int) -> tuple[int, int, float]:
    """RSS bytes, open descriptors and CPU seconds of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return rss, len(os.listdir(f"/proc/{pid}/fd")), cpu


def _status(agent: Agent, tries: int = 5) -> dict[str, Any]:
    """The agent's status, asking again when a reply is late (a loaded machine)."""
    for i in range(tries):
        try:
            return agent.status()
        except ClientError:
            if i == tries - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """Least-squares slope of y over x (None with fewer than 3 points)."""
    if len(x) < 3 or np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


class _Counter:
    """A thread counting the agent's published predictions."""

    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"pred/")
        self.sock.connect(endpoint)
        self.n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(100):
                while True:
                    try:
                        self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.n += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        self.ctx.term()


def _publish(
    endpoint: str, n: int, rate: float, labels_every: int, drift_period: int, out: dict[str, Any]
) -> None:
    ds = load_dataset("basicmotions")
    clean = [(ds.X_test[i], int(ds.y_test[i])) for i in range(len(ds.X_test))]
    drifted = [(rotate_axes(x, 60.0), y) for x, y in clean]  # axes rotated 60 degrees
    with Publisher(endpoint, socket="push", sndhwm=1_000_000) as pub:
        t0 = time.monotonic()
        for i in range(n):
            # the second half of every drift period is drifted: drift alarms, rounds
            on = drift_period > 0 and i % drift_period >= drift_period // 2
            x, y = (drifted if on else clean)[i % len(clean)]
            label = y if labels_every and i % labels_every == 0 else None
            pub.send_raw(encode_sample("soak", i, x, time.time(), label))
            out["sent"] = i + 1
            if rate > 0 and i % 16 == 15:
                delay = t0 + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        out["send_s"] = time.monotonic() - t0


def soak(
    samples: int,
    rate: float,
    labels_every: int = 4,
    every_s: float = 5.0,
    bundle: Path = DEFAULT_BUNDLE,
    checkpoint_s: float = 5.0,
    drift_period: int = 100_000,
) -> dict[str, Any]:
    """Run one soak; return the measurements (see the module docstring)."""
    d = Path(tempfile.mkdtemp(prefix="eas-", dir="/tmp"))
    nice = AGENT_NICE if os.geteuid() == 0 else None  # as the unit runs it
    agent = Agent(
        _config(d, bundle, checkpoint_s), f"ipc://{d}/run/status.sock", d / "agent.log", nice=nice
    )
    series: list[dict[str, Any]] = []
    dead: set[str] = set()
    with agent:
        assert agent.proc is not None
        pid = agent.proc.pid
        counter = _Counter(agent.endpoints["output"][0])
        time.sleep(0.3)  # the subscription reaches the agent
        pub: dict[str, Any] = {"sent": 0}
        sender = threading.Thread(
            target=_publish,
            args=(agent.endpoints["ingest"][0], samples, rate, labels_every, drift_period, pub),
            daemon=True,
        )
        t0 = time.monotonic()
        sender.start()
        while True:
            done = not sender.is_alive()
            st = _status(agent)
            rss, fds, cpu = _proc(pid)
            s = st["samples"]
            series.append(
                {
                    "t_s": round(time.monotonic() - t0, 2),
                    "sent": pub["sent"],
                    "predicted": s["predicted"],
                    "rss_mib": round(rss / 2**20, 2),
                    "fds": fds,
                    "cpu_s": round(cpu, 2),
                    "calibrations": st["calibration"]["done"],
                    "queue": st["queue"]["depth"],
                }
            )
            dead |= {name for name, alive in st["threads"].items() if not alive}
            if done:
                handled = s["predicted"] + sum(s["dropped"].values()) + s["rejected_total"]
                if handled >= samples or time.monotonic() - t0 > pub["send_s"] + 60:
                    break
                time.sleep(0.5)
                continue
            time.sleep(every_s)
        final = _status(agent)
        counters = status(agent.status_endpoint, "metrics")["counters"]
        time.sleep(0.5)
        counter.close()
    log = (d / "agent.log").read_text(errors="replace")
    shutil.rmtree(d, ignore_errors=True)
    s = final["samples"]
    dropped, rejected = sum(s["dropped"].values()), s["rejected_total"]
    return {
        "samples": samples,
        "rate_target": rate,
        "rate_sent": samples / pub["send_s"],
        "labels_every": labels_every,
        "drift_period": drift_period,
        "drift_alarms": counters.get("drift_alarms", 0),
        "sent": pub["sent"],
        "predicted": s["predicted"],
        "dropped": s["dropped"],
        "rejected": s["rejected"],
        "predictions_received": counter.n,
        "counters_exact": pub["sent"] == s["predicted"] + dropped + rejected,
        "rss_mib_start": series[0]["rss_mib"],
        "rss_mib_end": series[-1]["rss_mib"],
        "fds_start": series[0]["fds"],
        "fds_end": series[-1]["fds"],
        "agent_nice": nice,
        "rounds_skipped": counters.get("rounds_skipped", 0),
        "updates_dropped": counters.get("updates_dropped", 0),
        "calibrations": final["calibration"]["done"],
        "calibrations_accepted": final["calibration"]["accepted"],
        "checkpoints": final["storage"]["checkpoints"],
        "storage_errors": {k: v for k, v in final["storage"].items() if k.endswith("errors")},
        "threads": final["threads"],
        "thread_died": bool(dead) or "thread(s) died" in log,
        "agent_cpu_s": series[-1]["cpu_s"],
        "wall_s": series[-1]["t_s"],
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_end": os.getloadavg(),
            "python": platform.python_version(),
        },
        "series": series,
        **slopes(series, samples),
    }


def slopes(series: list[dict[str, Any]], samples: int) -> dict[str, Any]:
    """RSS and descriptor slopes per million samples after the warm-up, and over the
    second half alone (does the growth level off?)."""
    out: dict[str, Any] = {"warmup_samples": int(WARMUP_FRACTION * samples)}
    for tag, start in (("", WARMUP_FRACTION), ("_second_half", 0.5)):
        pts = [p for p in series if p["predicted"] >= start * samples]
        x = np.array([p["predicted"] for p in pts], dtype=np.float64) / 1e6
        out[f"rss_mib_per_million{tag}"] = _slope(x, np.array([p["rss_mib"] for p in pts]))
        fds = np.array([p["fds"] for p in pts], dtype=np.float64)
        out[f"fds_per_million{tag}"] = _slope(x, fds)
    out["rss_mib_max"] = max(p["rss_mib"] for p in series)
    out["fds_max"] = max(p["fds"] for p in series)
    return out


def _md(r: dict[str, Any], command: str) -> str:
    def f(v: float | None, fmt: str = ".3f") -> str:
        return "n/a" if v is None else format(v, fmt)

    counts = (
        f"{r['sent']:,} / {r['predicted']:,} / {sum(r['dropped'].values()):,} / "
        f"{sum(r['rejected'].values()):,}"
    )
    rss = f"{f(r['rss_mib_per_million'])} / {f(r['rss_mib_per_million_second_half'])}"
    fds = f"{f(r['fds_per_million'])} / {f(r['fds_per_million_second_half'])}"
    period = r.get("drift_period", 0)
    drift = (
        f"{r['samples'] // period:,} of {period:,} samples (second half rotated 60 degrees), "
        f"{r.get('drift_alarms', 'n/a')} alarms"
        if period
        else "none"
    )
    behind = f"{r.get('rounds_skipped', 'n/a')}, {r.get('updates_dropped', 'n/a')}"
    return f"""# Soak: {r["samples"]:,} samples through the real agent

Command: `{command}`; {r["rate_sent"]:.0f} samples/s sent (target {r["rate_target"]:.0f}),
every {r["labels_every"]}th sample labelled, calibration on; {r["wall_s"]:.0f} s wall,
{r["machine"]["cpus"]} CPUs, load average at the end {r["machine"]["loadavg_end"][0]:.1f};
the agent at nice {r.get("agent_nice")} (the unit's `Nice=-5`).
Slopes are least squares over the samples after the first {r["warmup_samples"]:,}.

| measure | value |
|---|---|
| sent / predicted / dropped / rejected | {counts} |
| counters exact (sent == predicted + dropped + rejected) | {r["counters_exact"]} |
| predictions received by a subscriber | {r["predictions_received"]:,} |
| RSS start -> end | {r["rss_mib_start"]:.1f} -> {r["rss_mib_end"]:.1f} MiB |
| RSS slope after warm-up / over the second half | {rss} MiB per million samples |
| RSS max | {r["rss_mib_max"]:.1f} MiB |
| open fds start -> end | {r["fds_start"]} -> {r["fds_end"]} |
| fd slope after warm-up / over the second half | {fds} per million samples |
| open fds max | {r["fds_max"]} |
| drift periods, drift alarms | {drift} |
| calibration rounds (accepted) | {r["calibrations"]:,} ({r["calibrations_accepted"]:,}) |
| rounds skipped, buffer updates dropped (calibration behind) | {behind} |
| checkpoints, storage errors | {r["checkpoints"]:,}, {r["storage_errors"]} |
| a thread died | {r["thread_died"]} |
| agent CPU | {r["agent_cpu_s"]:.0f} s |
"""


def main(argv: list[str] | None = None) -> int:
    """Run the soak and write bench/results/soak.json (and .md with ``--md``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=5_000_000, help="default 5,000,000")
    p.add_argument("--rate", type=float, default=6000.0, help="samples/s (default 6000)")
    p.add_argument("--labels-every", type=int, default=4, help="label every Nth (default 4)")
    p.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    p.add_argument(
        "--drift-period",
        type=int,
        default=100_000,
        help="samples; the second half of each is drifted (0: none; default 100,000)",
    )
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    p.add_argument("--md", action="store_true", help="also write the .md beside --out")
    p.add_argument(
        "--rescore", action="store_true", help="recompute the slopes of --out's series, no run"
    )
    args = p.parse_args(argv)
    if args.rescore:
        r = json.loads(args.out.read_text())
        r.update(slopes(r["series"], r["samples"]))
    else:
        r = soak(
            args.samples,
            args.rate,
            args.labels_every,
            args.every,
            args.bundle,
            drift_period=args.drift_period,
        )
        command = "python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
        r["command"] = command.strip()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1) + "\n")
    if args.md:
        args.out.with_suffix(".md").write_text(_md(r, r["command"]))
    print(_md(r, r["command"]))
    ok = r["counters_exact"] and not r["thread_died"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
