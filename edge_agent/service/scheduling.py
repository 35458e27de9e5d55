"""Scheduling classes of the agent's threads: a sample's threads run at once when it
arrives, background work takes the CPU time they leave.

On a core that is never idle, a thread of the fair class that a frame wakes can wait for
the next scheduler tick, 4 ms at 250 Hz (``bench/results/ingest_s13/README.md``): the
p99 latency and, near capacity, lost samples came from that wait. Two remedies:

- **Background threads under ``SCHED_IDLE``** (always): the calibration thread. A fair
  thread woken beside a ``SCHED_IDLE`` one preempts it at once, and ``SCHED_IDLE`` gets
  only what the others leave. Lowering its own policy needs no privilege and no more
  than the scheduling calls the unit's seccomp filter allows; refused, the thread takes
  a higher nice value instead. ``bench/results/ingest_idle/`` measures the difference.
- **Hot threads under ``SCHED_RR``** (opt-in): ``[inference] realtime_priority = N``
  (1-99; 0, the default, leaves them alone) puts the inference loop (the calling
  thread), the receive threads and libzmq's I/O threads (``ZMQbg/IO/*``) under
  ``SCHED_RR`` priority N; they then run at once beside any fair thread, other
  processes' included. It needs ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO`` of at least N
  (systemd: ``LimitRTPRIO=``) and the scheduling calls allowed by the seccomp filter;
  refused, the agent runs on as before, with one log line and ``realtime_refused``
  counted. The kernel's real-time throttling (``sched_rt_runtime_us``, 95% by default)
  leaves the other threads and processes of the core a share even when the agent is
  overloaded.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ZMQ_IO = "ZMQbg/IO/"  # libzmq names its I/O threads so when it starts them


def run_in_idle_time(fallback_nice: int) -> str:
    """Put the calling thread under ``SCHED_IDLE``; where that is refused (not Linux, a
    filter), raise its nice value by ``fallback_nice``. Returns what it got, for the log."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "SCHED_IDLE"
    except (OSError, AttributeError):  # AttributeError: no sched_setscheduler (not Linux)
        pass
    try:
        tid = threading.get_native_id()
        nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + fallback_nice)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
        return f"nice {nice}"
    except (OSError, AttributeError) as exc:
        log.warning("background thread keeps the agent's priority: %s", exc)
        return "unchanged"


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
