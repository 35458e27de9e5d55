"""A cumulative latency histogram (Prometheus buckets), kept beside the percentile window.

The percentile window forgets; a scraper needs counts that only grow, so rates and
quantiles can be computed over any range (``histogram_quantile`` in PromQL).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

# Seconds. Received -> published is sub-millisecond when the queue is empty and grows to
# seconds only when it backs up; the buckets cover both.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Histogram:
    """Counts of observations at or below each bound, their sum and count (thread-safe)."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last: +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        """Add observations (in the bounds' unit)."""
        v = np.asarray(values, dtype=np.float64)
        if v.size == 0:
            return
        idx = np.searchsorted(self.bounds, v, side="left")  # le: value <= bound
        with self._lock:
            self._counts += np.bincount(idx, minlength=len(self._counts))
            self._sum += float(v.sum())

    def snapshot(self) -> tuple[list[tuple[float, int]], float, int]:
        """Cumulative ``(upper bound, count)`` pairs ending with ``inf``, the sum and count."""
        with self._lock:
            cum = np.cumsum(self._counts)
            total = self._sum
        bounds = [*map(float, self.bounds), float("inf")]
        return list(zip(bounds, map(int, cum), strict=True)), total, int(cum[-1])
