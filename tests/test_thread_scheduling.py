"""The agent's threads' scheduling: the calibration thread at a higher nice value; with
``[inference] realtime_priority`` the threads a sample waits for under SCHED_RR, or a
counted refusal where the system does not allow it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from test_service_support import cleanup, short_dir

from edge_agent.service.agent import CALIBRATION_NICE, Agent
from edge_agent.service.config import local_config_text, parse_config

BUNDLE = Path(__file__).resolve().parents[1] / "edge_agent" / "defaults" / "basicmotions.eab"


def _policies() -> dict[int, tuple[str, int]]:
    """Thread id -> (OS name, scheduling policy) of this process's threads."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        policy = os.sched_getscheduler(int(task.name)) & ~os.SCHED_RESET_ON_FORK
        out[int(task.name)] = ((task / "comm").read_text().strip(), policy)
    return out


def _calibration_thread(agent: Agent) -> int:
    """The calibration thread's id, once it has lowered its priority (it does so first)."""
    assert agent._cal_thread is not None
    tid = agent._cal_thread.native_id
    assert tid is not None
    deadline = time.monotonic() + 10
    while os.getpriority(os.PRIO_PROCESS, tid) == os.getpriority(os.PRIO_PROCESS, 0):
        assert time.monotonic() < deadline, "the calibration thread kept the agent's nice"
        time.sleep(0.01)
    return tid


def _agent(d: Path, inference: str = "") -> Agent:
    text = local_config_text(d, BUNDLE, '[log]\nlevel = "warning"\n[inference]\n')
    return Agent(parse_config(text + inference))


def test_the_calibration_thread_alone_runs_at_a_higher_nice_value() -> None:
    d = short_dir()
    agent = _agent(d)
    try:
        agent.start()
        cal = _calibration_thread(agent)
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, cal) == min(19, mine + CALIBRATION_NICE)
        assert all(p == os.SCHED_OTHER for _, p in _policies().values())
    finally:
        agent.request_stop()
        agent.shutdown()
        cleanup(d)


def test_hot_threads_go_real_time_or_the_refusal_is_counted() -> None:
    d = short_dir()
    agent = _agent(d, "realtime_priority = 1\n")
    try:
        agent.start()
        policies = _policies()
        refused = agent.metrics.snapshot()["counters"].get("realtime_refused", 0)
        sched = agent.status()["scheduling"]
        assert sched["realtime_priority"] == 1 and sched["realtime_refused"] == refused
        if refused:  # no CAP_SYS_NICE / RLIMIT_RTPRIO here: counted, nothing changed
            assert refused == 1 and sched["realtime_threads"] == 0
            assert all(policy != os.SCHED_RR for _, policy in policies.values())
            return
        # by thread id: the agent's threads name themselves once running
        hot = {threading.get_native_id(), *(s.native_id for s in agent.sources)}  # type: ignore[attr-defined]
        hot |= {tid for tid, (name, _) in policies.items() if name.startswith("ZMQbg/IO/")}
        assert len(hot) >= 3  # this process may hold other ZeroMQ contexts: their I/O threads too
        assert sched["realtime_threads"] >= 3
        assert _calibration_thread(agent) not in hot
        for tid, (name, policy) in policies.items():
            assert policy == (os.SCHED_RR if tid in hot else os.SCHED_OTHER), name
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # pytest's thread
        agent.request_stop()
        agent.shutdown()
        cleanup(d)
