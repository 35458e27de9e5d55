"""The bounded queue between ingest and inference, with the drop policy.

When full, a new item evicts the oldest *unlabelled* sample; only when the queue holds
nothing but labelled items (samples with a label, label feedback) is the oldest labelled
one dropped. The number of items never exceeds the capacity, and every drop is counted
by kind. Items come out in arrival order.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropQueue(Generic[T]):
    """A thread-safe bounded FIFO that sheds unlabelled items first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be >= 1")
        self.capacity = capacity
        self._plain: deque[tuple[int, T]] = deque()
        self._labelled: deque[tuple[int, T]] = deque()
        self._order = itertools.count()
        self._cond = threading.Condition()
        self.dropped_unlabelled = 0
        self.dropped_labelled = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._plain) + len(self._labelled)

    def put(self, item: T, labelled: bool) -> str | None:
        """Enqueue ``item``; return the kind dropped to make room ("unlabelled",
        "labelled") or None."""
        dropped = self.put_many([(item, labelled)])
        return dropped[0] if dropped else None

    def put_many(self, items: list[tuple[T, bool]]) -> list[str]:
        """Enqueue ``(item, labelled)`` pairs in order under one lock (the same policy as
        :meth:`put` for each); the kinds dropped to make room, one per drop."""
        dropped: list[str] = []
        with self._cond:
            for item, labelled in items:
                if len(self._plain) + len(self._labelled) >= self.capacity:
                    if self._plain:
                        self._plain.popleft()
                        self.dropped_unlabelled += 1
                        dropped.append("unlabelled")
                    else:
                        self._labelled.popleft()
                        self.dropped_labelled += 1
                        dropped.append("labelled")
                (self._labelled if labelled else self._plain).append((next(self._order), item))
            self._cond.notify()
        return dropped

    def get_batch(self, max_items: int, timeout: float, gather: float = 0.0) -> list[T]:
        """Up to ``max_items`` items in arrival order; waits up to ``timeout`` s for the
        first one and returns an empty list if none came. With ``gather`` > 0 and fewer
        than ``max_items`` waiting, it then sleeps ``gather`` s once (without the lock) so
        that more arrive and go in the same batch: one wake-up for many items."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._plain or self._labelled):
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            short = len(self._plain) + len(self._labelled) < max_items
        if gather > 0 and short:
            time.sleep(gather)
        with self._cond:
            out: list[T] = []
            plain, lab = self._plain, self._labelled
            while len(out) < max_items and (plain or lab):
                if lab and (not plain or lab[0][0] < plain[0][0]):
                    out.append(lab.popleft()[1])
                else:
                    out.append(plain.popleft()[1])
            return out
