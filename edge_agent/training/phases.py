"""Where training time goes: wall and process CPU seconds per named phase.

Process CPU time (``time.process_time``) counts every thread of the process, torch's
intra-op threads included; wall time shows what the user waits. Phases nest: a phase's
seconds exclude the phases timed inside it (QCore snapshots inside FP training), so the
lines add up to the total.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class PhaseTime:
    """Exclusive seconds of one phase (summed over its entries) and how often it ran."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    calls: int = 0


@dataclass
class PhaseTimer:
    """Collects :class:`PhaseTime` per phase name, in the order phases first ran."""

    phases: dict[str, PhaseTime] = field(default_factory=dict)
    _stack: list[list[float]] = field(default_factory=list)  # per open phase: child cpu, wall

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (exclusive of phases opened inside it)."""
        t = self.phases.setdefault(name, PhaseTime())  # listed in the order phases start
        cpu0, wall0 = time.process_time(), time.perf_counter()
        self._stack.append([0.0, 0.0])
        try:
            yield
        finally:
            child_cpu, child_wall = self._stack.pop()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            if self._stack:  # the parent excludes this phase's inclusive time
                self._stack[-1][0] += cpu
                self._stack[-1][1] += wall
            t.cpu_s += cpu - child_cpu
            t.wall_s += wall - child_wall
            t.calls += 1

    def total(self) -> PhaseTime:
        """The sum over all phases."""
        return PhaseTime(
            sum(p.cpu_s for p in self.phases.values()),
            sum(p.wall_s for p in self.phases.values()),
            sum(p.calls for p in self.phases.values()),
        )

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{phase: {"cpu_s", "wall_s", "calls"}}`` for JSON reports."""
        return {
            k: {"cpu_s": round(v.cpu_s, 3), "wall_s": round(v.wall_s, 3), "calls": v.calls}
            for k, v in self.phases.items()
        }

    def report(self) -> list[str]:
        """One line per phase, then the total: CPU and wall seconds."""
        width = max([len(k) for k in self.phases] + [5])
        rows = [*self.phases.items(), ("total", self.total())]
        return [f"  {k:<{width}}  {v.cpu_s:7.1f} s CPU  {v.wall_s:7.1f} s wall" for k, v in rows]
