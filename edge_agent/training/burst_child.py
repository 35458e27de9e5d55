"""The QAT burst child process (torch): ``python -m edge_agent.training.burst_child WORK_DIR``.

Started by :class:`edge_agent.calibrate.burst_runner.BurstRunner`: lowers its priority,
sets its CPU and memory limits, reads the job the parent wrote, runs the burst on one torch
thread and writes the result; SIGTERM or a spent CPU budget stops it cleanly.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.calibrate.burst_config import BurstConfig
from edge_agent.calibrate.burst_runner import (
    EXIT_PREEMPTED,
    INPUT_BUNDLE,
    JOB,
    POOL,
    RESULT,
    RESULT_BUNDLE,
)
from edge_agent.container import atomic_write_bytes

log = logging.getLogger(__name__)


def _apply_limits(limits: dict[str, Any]) -> None:
    try:
        os.nice(int(limits["nice"]))
    except OSError as exc:
        # A seccomp filter without setpriority (e.g. ~@resources) refuses even lowering
        # one's own priority; the CPU and memory limits below still hold.
        log.warning("cannot lower the burst's priority (%s); it runs at the agent's", exc)
    cpu = math.ceil(float(limits["cpu_s"])) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + math.ceil(limits["grace_s"])))
    mem = int(limits["memory_mb"]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))


def _write_result(work: Path, state: str, reason: str, stats: dict[str, Any]) -> None:
    body = {"state": state, "reason": reason, "stats": stats}
    atomic_write_bytes(work / RESULT, json.dumps(body, default=float).encode())


def child_main(work: Path) -> int:
    """Entry point of the burst process: read the job, train, write the result."""
    job = json.loads((work / JOB).read_text())
    limits = job["limits"]
    _apply_limits(limits)
    stop: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("pre-empted (SIGTERM)"))
    signal.signal(signal.SIGXCPU, lambda *_: stop.append("CPU limit"))
    cpu_budget = float(limits["cpu_s"])

    def should_stop() -> bool:
        if time.process_time() > cpu_budget:
            stop.append(f"CPU budget of {cpu_budget:g} s spent")
        return bool(stop)

    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    from edge_agent.training.burst import BurstInterrupted, run_burst

    config = BurstConfig(**job["config"])
    bundle = load_bundle(work / INPUT_BUNDLE)
    with np.load(work / POOL, allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    try:
        result = run_burst(bundle, x, y, config, should_stop)
    except BurstInterrupted as exc:
        _write_result(work, "interrupted", f"{stop[0] if stop else 'stopped'}: {exc}", {})
        return EXIT_PREEMPTED
    save_bundle(result.bundle, work / RESULT_BUNDLE)
    stats = {k: v for k, v in result.stats.items() if k != "config"}
    _write_result(work, "done", "finished", stats)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s burst %(levelname)s %(message)s")
    sys.exit(child_main(Path(sys.argv[1])))
