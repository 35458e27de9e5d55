"""The metrics registry every stage updates and the status socket reads.

Counters (monotonic, by name), rejections by reason, drops by kind, a rolling accuracy
over the last labelled predictions, end-to-end and inference latency percentiles over a
recent window, the prediction rate over the last seconds, and the process RSS.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from edge_agent.service.histogram import Histogram

LATENCY_WINDOW = 4096
RATE_WINDOW_S = 10.0


class Metrics:
    """Thread-safe counters and rolling statistics."""

    def __init__(self, accuracy_window: int = 200) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._correct: deque[bool] = deque(maxlen=accuracy_window)
        self._latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._infer_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._pred_times: deque[tuple[float, int]] = deque()
        self._process = psutil.Process()
        # received -> published, in seconds, for Prometheus (counts only grow)
        self.latency_histogram = Histogram()

    def inc(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self.counters[name] += n

    def accept(self, kind: str) -> None:
        """Count one received and accepted message of ``kind``."""
        with self._lock:
            self.counters["received"] += 1
            self.counters[kind] += 1

    def reject(self, reason: str) -> None:
        """Count one rejected message under ``reason``."""
        with self._lock:
            self.counters["received"] += 1
            self.rejected[reason] += 1

    def drop(self, kind: str) -> None:
        """Count one accepted item shed by the queue."""
        with self._lock:
            self.dropped[kind] += 1

    def add(
        self,
        received: int,
        counters: dict[str, int],
        rejected: dict[str, int],
        dropped: dict[str, int],
    ) -> None:
        """Count a batch of ``received`` messages at once: counters (accepted kinds,
        sequence gaps), rejections by reason, queue drops by kind."""
        with self._lock:
            self.counters["received"] += received
            self.counters.update(counters)
            self.rejected.update(rejected)
            self.dropped.update(dropped)

    def set_accuracy_window(self, n: int) -> None:
        """Resize the rolling accuracy window, keeping the newest outcomes."""
        with self._lock:
            self._correct = deque(self._correct, maxlen=n)

    def record_batch(
        self, n: int, infer_ms: float, latencies_ms: Sequence[float] | np.ndarray
    ) -> None:
        """Record one inference batch of ``n`` predictions."""
        lat = np.asarray(latencies_ms, dtype=np.float64)
        now = time.monotonic()
        with self._lock:
            self.counters["predicted"] += n
            self.counters["inference_batches"] += 1  # predicted / it: the mean batch
            self._infer_ms.append(infer_ms)
            self._latency_ms.extend(lat.tolist())
            self._pred_times.append((now, n))
            while self._pred_times and now - self._pred_times[0][0] > RATE_WINDOW_S:
                self._pred_times.popleft()
        self.latency_histogram.observe_many(lat / 1e3)

    def record_outcome(self, correct: bool) -> None:
        """Record whether a labelled prediction was right."""
        with self._lock:
            self._correct.append(correct)
            self.counters["labelled_predictions"] += 1
            self.counters["labelled_correct"] += int(correct)

    def restore(
        self, counters: dict[str, int], rejected: dict[str, int], dropped: dict[str, int]
    ) -> None:
        """Continue counting from a checkpoint."""
        with self._lock:
            self.counters.update(counters)
            self.rejected.update(rejected)
            self.dropped.update(dropped)

    def counts(self) -> dict[str, dict[str, int]]:
        """Plain copies of the counters (for checkpoints)."""
        with self._lock:
            return {
                "counters": dict(self.counters),
                "rejected": dict(self.rejected),
                "dropped": dict(self.dropped),
            }

    def snapshot(self) -> dict[str, Any]:
        """Everything the ``metrics`` command reports."""
        now = time.monotonic()
        with self._lock:
            lat = np.fromiter(self._latency_ms, dtype=np.float64)
            inf = np.fromiter(self._infer_ms, dtype=np.float64)
            recent = [(t, n) for t, n in self._pred_times if now - t <= RATE_WINDOW_S]
            rate = _rate(recent, now)
            correct = list(self._correct)
            out: dict[str, Any] = {
                "uptime_s": now - self.started,
                "counters": dict(self.counters),
                "rejected": dict(self.rejected),
                "dropped": dict(self.dropped),
            }
        out["rolling_accuracy"] = float(np.mean(correct)) if correct else None
        out["rolling_accuracy_n"] = len(correct)
        out["prediction_rate_per_s"] = rate
        out["latency_ms"] = percentiles(lat)
        out["inference_batch_ms"] = percentiles(inf)
        out["rss_bytes"] = int(self._process.memory_info().rss)
        return out


def percentiles(a: np.ndarray) -> dict[str, float | None]:
    """p50 and p99 of ``a`` (None for an empty array)."""
    if a.size == 0:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(a, [50, 99])
    return {"p50": float(p50), "p99": float(p99)}


def _rate(batches: list[tuple[float, int]], now: float) -> float:
    """Predictions per second over the time the stream has run within the window: from
    the first batch in it (whose predictions arrived before it, so they are not counted)
    to now. Dividing by the whole window read 30/s for a 300/s stream 1 s old."""
    if len(batches) < 2:
        return 0.0
    span = now - batches[0][0]
    return sum(n for _, n in batches[1:]) / span if span > 0 else 0.0
