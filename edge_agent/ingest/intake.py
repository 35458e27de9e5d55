"""The gate every source passes: decode, validate, check sequences, enqueue, count.

Sources (ZeroMQ, serial) hand raw messages or parsed samples to :class:`Intake`, which
rejects bad input with a counted reason and a rate-limited log line, tracks sequence
numbers per sensor, and puts accepted items on the bounded :class:`DropQueue`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from typing import NamedTuple, Protocol

from edge_agent.ingest.protocol import (
    Feedback,
    ProtocolError,
    Sample,
    decode_ingest,
    decode_ingest_many,
)
from edge_agent.ingest.queue import DropQueue

log = logging.getLogger(__name__)

MAX_TRACKED_SENSORS = 4096
LOG_EVERY_S = 10.0


class Counters(Protocol):
    """What intake counts through (the agent hands in its metrics registry)."""

    def inc(self, name: str, n: int = 1) -> None: ...

    def accept(self, kind: str) -> None: ...

    def reject(self, reason: str) -> None: ...

    def drop(self, kind: str) -> None: ...

    def add(
        self,
        received: int,
        counters: dict[str, int],
        rejected: dict[str, int],
        dropped: dict[str, int],
    ) -> None: ...


class Item(NamedTuple):
    """An accepted sample or label with its arrival time (``time.perf_counter``); a
    NamedTuple, as :class:`Sample` is."""

    msg: Sample | Feedback
    arrived: float


class Intake:
    """Thread-safe validation and enqueueing shared by all sources."""

    def __init__(
        self,
        queue: DropQueue[Item],
        metrics: Counters,
        input_shape: tuple[int, ...],
        num_classes: int,
        max_bytes: int,
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self._last_log: dict[str, float] = {}

    def submit_raw(self, raw: bytes) -> None:
        """Decode one wire message and submit it."""
        arrived = time.perf_counter()
        try:
            msg = decode_ingest(raw, self.input_shape, self.num_classes, self.max_bytes)
        except ProtocolError as exc:
            self.reject(exc)
            return
        self.submit(msg, arrived)

    def submit_raw_many(self, raws: list[bytes]) -> None:
        """Decode a batch of wire messages (drained from a socket together) and submit
        them in order: one decode call, one lock for the sequence checks, one for the
        counters and one for the queue, instead of one of each per message."""
        arrived = time.perf_counter()
        decoded = decode_ingest_many(raws, self.input_shape, self.num_classes, self.max_bytes)
        counts: Counter[str] = Counter()  # accepted by kind, sequence gaps and restarts
        rejected: Counter[str] = Counter()
        items: list[tuple[Item, bool]] = []
        errors: list[ProtocolError] = []
        with self._lock:
            for msg in decoded:
                if isinstance(msg, Sample):
                    err = self._check_seq_locked(msg.sensor, msg.seq, counts)
                    if err is not None:
                        msg = err
                if isinstance(msg, ProtocolError):
                    rejected[msg.reason] += 1
                    errors.append(msg)
                    continue
                labelled = isinstance(msg, Feedback) or msg.label is not None
                counts[_kind(msg)] += 1
                items.append((Item(msg, arrived), labelled))
        dropped = Counter(self.queue.put_many(items)) if items else Counter()
        self.metrics.add(len(raws), counts, rejected, dropped)
        for exc in errors:
            self._log_rejection(exc)

    def submit(self, msg: Sample | Feedback, arrived: float) -> None:
        """Sequence-check and enqueue a decoded message."""
        if isinstance(msg, Sample):
            seq_counts: Counter[str] = Counter()
            with self._lock:
                err = self._check_seq_locked(msg.sensor, msg.seq, seq_counts)
            if err is not None:
                self.reject(err)
                return
            for name, n in seq_counts.items():
                self.metrics.inc(name, n)
        self.metrics.accept(_kind(msg))
        labelled = isinstance(msg, Feedback) or msg.label is not None
        dropped = self.queue.put(Item(msg, arrived), labelled)
        if dropped is not None:
            self.metrics.drop(dropped)

    def reject(self, exc: ProtocolError) -> None:
        """Count a rejected message; log each reason at most every few seconds."""
        self.metrics.reject(exc.reason)
        self._log_rejection(exc)

    def _log_rejection(self, exc: ProtocolError) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_log.get(exc.reason)
            if last is not None and now - last < LOG_EVERY_S:
                return
            self._last_log[exc.reason] = now
        log.warning(
            "rejected message (%s); same-reason rejections are counted and logged "
            "at most every %.0f s",
            exc,
            LOG_EVERY_S,
        )

    def _check_seq_locked(
        self, sensor: str, seq: int, counts: Counter[str]
    ) -> ProtocolError | None:
        """Track ``sensor``'s sequence (the caller holds the lock): the duplicate error, or
        None with gaps and restarts added to ``counts``."""
        last = self._last_seq.get(sensor)
        if last is not None and seq == last:
            return ProtocolError("duplicate", f"sensor {sensor!r} sent seq {seq} twice")
        self._last_seq[sensor] = seq
        self._last_seq.move_to_end(sensor)
        if len(self._last_seq) > MAX_TRACKED_SENSORS:
            self._last_seq.popitem(last=False)
        if last is None:
            return None
        if seq > last + 1:
            counts["seq_gaps"] += 1
            counts["seq_missing"] += seq - last - 1
        elif seq < last:
            counts["seq_restarts"] += 1
        return None

    def sequences(self) -> dict[str, int]:
        """Last sequence number per sensor (for checkpoints)."""
        with self._lock:
            return dict(self._last_seq)

    def restore_sequences(self, seqs: dict[str, int]) -> None:
        """Continue gap detection from a checkpoint."""
        with self._lock:
            for sensor, seq in list(seqs.items())[-MAX_TRACKED_SENSORS:]:
                self._last_seq[str(sensor)] = int(seq)


def _kind(msg: Sample | Feedback) -> str:
    """The ``accepted*`` counter of an accepted message."""
    if isinstance(msg, Feedback):
        return "accepted_feedback"
    return "accepted_labelled" if msg.label is not None else "accepted"
