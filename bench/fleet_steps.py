"""Steps of the fleet benchmark (``bench/fleet.py``): settling the counters through
Prometheus, the proxy throughput phase, retraining with the collected samples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fleet_support import Fleet, Prometheus, ProxyProc  # noqa: E402

SUMS = {
    "predicted": "edge_agent_samples_predicted_total",
    "received": "edge_agent_samples_received_total",
    "dropped": "edge_agent_samples_dropped_total",
    "rejected": "edge_agent_samples_rejected_total",
    "labelled": "edge_agent_labelled_predictions_total",
    "correct": "edge_agent_labelled_correct_total",
}


def settle(fleet: Fleet, prom: Prometheus, timeout_s: float = 180.0) -> dict[str, float]:
    """Wait until every agent is idle and Prometheus has scraped its final counters;
    return the fleet sums as Prometheus reports them."""
    deadline = time.monotonic() + timeout_s
    prev: tuple[int, ...] | None = None
    while time.monotonic() < deadline:
        st = fleet.statuses()
        tot = (
            sum(s["samples"]["predicted"] for s in st),
            sum(s["samples"]["received"] for s in st),
            sum(s["accuracy"]["labelled_total"] for s in st),
        )
        if tot == prev and all(s["queue"]["depth"] == 0 for s in st):
            break
        prev = tot
        time.sleep(1.0)
    assert prev is not None
    while time.monotonic() < deadline:
        sums = {k: prom.scalar(f"sum({m})") for k, m in SUMS.items()}
        if (sums["predicted"], sums["received"], sums["labelled"]) == tuple(map(float, prev)):
            return sums
        time.sleep(0.5)
    raise RuntimeError(f"Prometheus never showed the agents' totals {prev}")


def throughput(proxy: ProxyProc, n_blast: int, seconds: float) -> dict[str, float]:
    """Blasters -> proxy -> one counting subscriber; samples/s delivered and proxy CPU."""
    cmd = [sys.executable, "-m", "bench.fleet_publish"]
    sink = subprocess.Popen(
        [*cmd, "sink", "--endpoint", proxy.back, "--seconds", str(seconds + 15)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    sink.stdout.readline()  # "ready"
    f0, c0 = proxy.messages(), proxy.cpu_s()
    blasters = [
        subprocess.Popen(
            [*cmd, "blast", "--endpoint", proxy.front, "--seconds", str(seconds)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n_blast)
    ]
    outs = [
        json.loads(b.communicate(timeout=seconds + 120)[0].strip().splitlines()[-1])
        for b in blasters
    ]
    sent = sum(o["sent"] for o in outs)
    # the sending window: first blaster's first send to the last one's flush (start-up and
    # the wait for the subscription excluded)
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    time.sleep(1.0)  # let the proxy and the sink drain
    f1, c1 = proxy.messages(), proxy.cpu_s()
    sink.terminate()
    received = json.loads(sink.communicate(timeout=60)[0].strip().splitlines()[-1])["received"]
    forwarded = f1["backend/out"] - f0["backend/out"]  # messages: one per sample
    return {
        "sent": sent,
        "forwarded": forwarded,
        "received": received,
        "wall_s": wall,
        "samples_per_s": received / wall,
        "forwarded_per_s": forwarded / wall,
        "proxy_cpu_s": c1 - c0,
        "proxy_cpu_share": (c1 - c0) / wall,
    }


def retrain(work: Path, collected: Path, steps: tuple[int, int]) -> tuple[Path, float]:
    """``edge-agent train --extra``; returns the bundle and its CPU seconds."""
    out = work / "retrained.eab"
    t0 = os.times()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "train",
            "--data",
            "basicmotions",
            "--bits",
            "4",
            "--extra",
            str(collected),
            "--out",
            str(out),
            "--quiet",
            "--no-flipper",
            "--fp-steps",
            str(steps[0]),
            "--qat-steps",
            str(steps[1]),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=1800,
    )
    t1 = os.times()
    return out, (t1.children_user - t0.children_user) + (t1.children_system - t0.children_system)
