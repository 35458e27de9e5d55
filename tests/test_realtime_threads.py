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


def _policies() -> dict[int, tuple[str, int]]:
    """Thread id -> (OS name, scheduling policy) of this process's threads."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        policy = os.sched_getscheduler(int(task.name)) & ~os.SCHED_RESET_ON_FORK
        out[int(task.name)] = ((task / "comm").read_text().strip(), policy)
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
            assert all(policy != os.SCHED_RR for _, policy in policies.values())
            return
        # by thread id: the agent's threads name themselves once running
        hot = {threading.get_native_id(), *(s.native_id for s in agent.sources)}  # type: ignore[attr-defined]
        hot |= {tid for tid, (name, _) in policies.items() if name.startswith("ZMQbg/IO/")}
        assert len(hot) >= 3  # this process may hold other ZeroMQ contexts: their I/O threads too
        for tid, (name, policy) in policies.items():
            assert policy == (os.SCHED_RR if tid in hot else os.SCHED_OTHER), name
        assert agent._cal_thread is not None and agent._cal_thread.native_id not in hot
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # pytest's thread
        agent.request_stop()
        agent.shutdown()
        cleanup(d)
