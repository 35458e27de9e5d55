"""The threads a sample waits for under a real-time scheduling policy (opt-in).

``[inference] realtime_priority = N`` (1-99; 0, the default, leaves them alone) puts the
inference loop (the calling thread), the receive threads and libzmq's I/O threads
(``ZMQbg/IO/*``) under ``SCHED_RR`` priority N; the calibration, checkpoint and
status threads stay in the fair class. Why: on a core that is never idle (the elastic
calibration thread, other jobs) a thread of the fair class that a frame wakes waits for
the next scheduler tick, 4 ms at 250 Hz (``bench/results/ingest_s13/README.md``): the p99
latency and, at 20,000 samples/s, lost samples came from that wait. A real-time thread
runs at once. It needs ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO`` of at least N (systemd:
``LimitRTPRIO=``) and the scheduling calls allowed by the seccomp filter; refused, the
agent runs on as before, with one log line and ``realtime_refused`` counted. The kernel's
real-time throttling (``sched_rt_runtime_us``, 95% by default) leaves the other threads
and processes of the core a share even when the agent is overloaded.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ZMQ_IO = "ZMQbg/IO/"  # libzmq names its I/O threads so when it starts them


def promote_hot_threads(
    priority: int, receivers: list[int], count: Callable[[str], None]
) -> list[int]:
    """The calling thread, the ``receivers`` (thread ids) and libzmq's I/O threads under
    ``SCHED_RR`` ``priority`` (0: none); the ids promoted. A refusal is logged and counted
    once."""
    if priority <= 0:
        return []
    tids = [threading.get_native_id(), *receivers]
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().startswith(ZMQ_IO):
                tids.append(int(task.name))
        except OSError:  # the thread ended meanwhile
            continue
    done: list[int] = []
    for tid in tids:
        try:
            # reset on fork: threads and processes they start (calibration, checkpoints,
            # the burst child) begin in the fair class
            policy = os.SCHED_RR | os.SCHED_RESET_ON_FORK
            os.sched_setscheduler(tid, policy, os.sched_param(priority))
        except ProcessLookupError:  # the thread ended meanwhile
            continue
        except OSError as exc:
            log.warning(
                "inference.realtime_priority = %d refused (%s): the threads keep the fair "
                "scheduler (needs CAP_SYS_NICE or LimitRTPRIO=%d)",
                priority,
                exc.strerror or exc,
                priority,
            )
            count("realtime_refused")
            return done
        done.append(tid)
    log.info("SCHED_RR priority %d: threads %s", priority, done)
    return done
