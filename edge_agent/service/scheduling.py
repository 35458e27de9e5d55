"""Scheduling of the agent's threads: a sample's threads first, background work after.

On a core that is never idle, a thread of the fair class that a frame wakes can wait for
the next scheduler tick, 4 ms at 250 Hz (``bench/results/ingest_s13/README.md``): the
p99 latency and, near capacity, lost samples came from that wait.

- **Hot threads under ``SCHED_RR``**: ``[inference] realtime_priority = N`` (1-99; 0
  leaves them alone; the installed configuration sets 1 and the shipped unit grants it
  with ``LimitRTPRIO=1``) puts the inference loop (the calling thread), the receive
  threads and libzmq's I/O threads (``ZMQbg/IO/*``) under ``SCHED_RR`` priority N; they
  then run at once beside any fair thread, other processes' included. It needs
  ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO`` of at least N and the scheduling calls allowed
  by the seccomp filter; refused, the agent runs on as before, with one log line and
  ``realtime_refused`` counted. The kernel's real-time throttling
  (``sched_rt_runtime_us``, 95% by default) leaves the other threads and processes of
  the core a share even when the agent is overloaded.
- **Background threads at a higher nice value** (:func:`lower_own_priority`): the
  calibration thread. Not ``SCHED_IDLE``, although a thread woken beside it would preempt
  it at once: a busy process of the normal class on the same core starves a
  ``SCHED_IDLE`` thread while it holds the GIL, and the inference thread then waits
  100-250 ms for it (``bench/results/ingest_idle/``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

ZMQ_IO = "ZMQbg/IO/"  # libzmq names its I/O threads so when it starts them


def lower_own_priority(step: int) -> None:
    """Raise the calling thread's nice value by ``step`` (Linux: a thread has its own; no
    privilege needed). Logged, not fatal, where the system refuses it."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except (OSError, AttributeError) as exc:  # AttributeError: no setpriority (not Linux)
        log.warning("background thread keeps the agent's priority: %s", exc)


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
