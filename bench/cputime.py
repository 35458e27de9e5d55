"""Interleaved timing by thread CPU time (and wall clock, for reference).

Every runtime here runs its work on the calling thread when told to use one thread, so
``time.thread_time_ns`` counts exactly the CPU it spent; time the thread was preempted by
other jobs of a shared machine does not count, which is what makes ratios reproducible
under load (wall-clock rates penalize whichever runtime happens to be preempted more).
``time.process_time_ns`` is recorded beside it: if a runtime quietly ran a helper thread,
process time would exceed thread time and the case is flagged.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Rates:
    """Per-repetition rates (items per second) of one case."""

    cpu: list[float] = field(default_factory=list)  # items / thread CPU second
    wall: list[float] = field(default_factory=list)  # items / wall second
    proc_over_thread: list[float] = field(default_factory=list)  # process / thread CPU time

    def summary(self) -> dict[str, float]:
        """Best (= min time per item) and median rate by both clocks."""
        return {
            "cpu_best": max(self.cpu),
            "cpu_median": statistics.median(self.cpu),
            "wall_best": max(self.wall),
            "wall_median": statistics.median(self.wall),
            "proc_over_thread": max(self.proc_over_thread),
        }


def loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def interleaved(
    cases: dict[str, tuple[Callable[[], Any], int]], seconds: float, reps: int = 5
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Rates of each case (``fn`` handling ``items`` items) over ``reps`` repetitions.

    Repetitions go round-robin over the cases (each gets ``seconds / reps`` of thread CPU
    time per repetition, at least 3 calls), so all of them see the same load of the
    machine. Returns the per-case summary and the load averages seen at start and end.
    """
    for fn, _ in cases.values():  # warm caches, JIT, lazy allocation
        fn()
        fn()
    per = {name: Rates() for name in cases}
    budget = int(seconds / reps * 1e9)
    load_start = loadavg()
    for _ in range(reps):
        for name, (fn, items) in cases.items():
            n = 0
            w0, t0, p0 = time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()
            while True:
                fn()
                n += 1
                t1 = time.thread_time_ns()
                if n >= 3 and t1 - t0 >= budget:
                    break
            w1, p1 = time.perf_counter_ns(), time.process_time_ns()
            cpu = max(t1 - t0, 1)
            per[name].cpu.append(n * items / cpu * 1e9)
            per[name].wall.append(n * items / max(w1 - w0, 1) * 1e9)
            per[name].proc_over_thread.append((p1 - p0) / cpu)
    info = {
        "reps": reps,
        "seconds_per_case": seconds,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
    }
    return {name: r.summary() for name, r in per.items()}, info
