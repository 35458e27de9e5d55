"""``[inference] realtime_priority``: the threads a sample waits for under SCHED_RR, or a
counted refusal where the system does not allow it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from test_service_support import cleanup, short_dir

from edge_agent.service.agent import Agent
from edge_agent.service.config import local_config_text, parse_config

BUNDLE = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"


def _policies() -> dict[str, int]:
    """OS thread name -> scheduling policy, for this process's threads."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        name = (task / "comm").read_text().strip()
        policy = os.sched_getscheduler(int(task.name)) & ~os.SCHED_RESET_ON_FORK
        out["main" if int(task.name) == threading.get_native_id() else name] = policy
    return out


def test_hot_threads_go_real_time_or_the_refusal_is_counted() -> None:
    d = short_dir()
    text = local_config_text(d, BUNDLE, '[log]\nlevel = "warning"\n[inference]\n')
    agent = Agent(parse_config(text + "realtime_priority = 1\n"))
    try:
        agent.start()
        policies = _policies()
        refused = agent.metrics.snapshot()["counters"].get("realtime_refused", 0)
        if refused:  # no CAP_SYS_NICE / RLIMIT_RTPRIO here: counted, nothing changed
            assert refused == 1
            assert os.SCHED_RR not in policies.values()
        else:
            for name in ("main", "ingest-zmq", "ZMQbg/IO/0"):
                assert policies[name] == os.SCHED_RR, name
            for name in ("calibration", "status"):  # these stay in the fair class
                assert policies[name] == os.SCHED_OTHER, name
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # pytest's thread
        agent.request_stop()
        agent.shutdown()
        cleanup(d)
