"""Agent memory with Prometheus metrics on (HTTP + textfile) against off, AOT kernels.

Starts the real agent (the bundled BasicMotions model) once per setting, alternating
off/on ``--repeats`` times, streams 3,000 labelled samples into it, scrapes /metrics 50
times when on, and reads the process's peak (VmHWM) and current (VmRSS) resident memory.
Target: on within 5 MB of off.

    nice -n 5 python -m bench.metrics_memory      # writes bench/results/metrics_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.agent_process import Agent  # noqa: E402
from bench.fleet_support import compile_aot  # noqa: E402
from edge_agent.client import Publisher  # noqa: E402
from edge_agent.data import load_dataset  # noqa: E402

BUNDLE = REPO / "edge_agent" / "defaults" / "basicmotions.eab"


def _mem(pid: int) -> dict[str, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    kb = {
        ln.split(":")[0]: int(ln.split()[1])
        for ln in text.splitlines()
        if ln.startswith(("VmHWM", "VmRSS"))
    }
    return {"peak_mb": kb["VmHWM"] / 1024, "rss_mb": kb["VmRSS"] / 1024}


def one(work: Path, metrics: bool, port: int) -> dict[str, float]:
    d = Path(tempfile.mkdtemp(prefix="eam-", dir=work))
    extra = (
        (
            f'[metrics]\nhttp = true\nlisten = "127.0.0.1:{port}"\n'
            f'textfile = "{d}/agent.prom"\ntextfile_interval_s = 1.0\n'
        )
        if metrics
        else ""
    )
    cfg = d / "agent.toml"
    cfg.write_text(f"""
[model]
bundle = "{BUNDLE}"
[ingest]
endpoints = ["ipc://{d}/in.sock"]
[output]
endpoints = ["ipc://{d}/out.sock"]
[state]
dir = "{d}/state"
runtime_dir = "{d}/run"
[log]
level = "warning"
{extra}""")
    ds = load_dataset("basicmotions")
    with Agent(cfg, f"ipc://{d}/run/status.sock", d / "agent.log") as agent:
        assert agent.proc is not None
        with Publisher(f"ipc://{d}/in.sock") as pub:
            for i in range(3000):
                pub.send_sample("m", i, ds.X_test[i % 40], label=int(ds.y_test[i % 40]))
                if i % 100 == 99:
                    time.sleep(0.05)
        deadline = time.monotonic() + 60
        while agent.status()["samples"]["predicted"] < 3000 and time.monotonic() < deadline:
            time.sleep(0.2)
        if metrics:
            for _ in range(50):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    r.read()
            time.sleep(1.5)  # a textfile write or two
        return _mem(agent.proc.pid)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--port", type=int, default=19590)
    p.add_argument("--kernel-cache", default="")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="eam-", dir="/tmp"))
    try:
        cache = Path(args.kernel_cache) if args.kernel_cache else work / "kcache"
        if not args.kernel_cache:
            compile_aot(cache)
        os.environ.update(EDGE_AGENT_KERNELS="aot", EDGE_AGENT_JIT_CACHE=str(cache))
        runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for _ in range(args.repeats):
            runs["off"].append(one(work, False, args.port))
            runs["on"].append(one(work, True, args.port))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med: dict[str, Any] = {}
    for k, rs in runs.items():
        med[k] = {m: sorted(r[m] for r in rs)[len(rs) // 2] for m in ("peak_mb", "rss_mb")}
    res = {
        "runs": runs,
        "median": med,
        "peak_delta_mb": med["on"]["peak_mb"] - med["off"]["peak_mb"],
        "rss_delta_mb": med["on"]["rss_mb"] - med["off"]["rss_mb"],
        "target_mb": 5.0,
        "load_average": os.getloadavg(),
    }
    res["met"] = res["peak_delta_mb"] <= 5.0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics_memory.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
