"""Batched ingest gives exactly what one message at a time gives: the same samples (the
same float32 values), the same rejection reasons, the same counters, queue drops and
queue order. The batch path is what the ZeroMQ source uses; the one-at-a-time path is
the reference (and what the serial source uses)."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.ingest.intake import Intake, Item
from edge_agent.ingest.protocol import (
    Feedback,
    ProtocolError,
    Sample,
    decode_ingest,
    decode_ingest_many,
    encode_feedback,
    encode_sample,
)
from edge_agent.ingest.queue import DropQueue
from edge_agent.service.metrics import Metrics

SHAPE = (6, 100)
CLASSES = 4
MAX_BYTES = 8192


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def _bad_value(value: float, at: int) -> np.ndarray:
    x = _x(at)
    x.flat[at] = value
    return x


# One of each kind a batch can hold; indexes drawn by hypothesis make the batches.
KINDS: list[bytes] = [
    encode_sample("a", 0, _x(0), 1.0),
    encode_sample("a", 1, _x(1), 1.0, label=2),
    encode_sample("b", 5, _x(2), 2.0, dtype="float64"),
    encode_sample("b", 6, _x(3) * 100, 2.0, dtype="int16"),
    encode_sample("a", 2, _bad_value(np.nan, 0), 1.0),  # NaN in the first value
    encode_sample("a", 3, _bad_value(np.inf, 599), 1.0),  # infinity in the last
    encode_sample("a", 4, _bad_value(-np.inf, 300), 1.0, dtype="float16"),
    encode_sample("c", 0, np.zeros((100, 6), np.float32), 1.0),  # wrong shape
    encode_sample("a", 2, _x(4), 1.0),  # a sequence restart or a duplicate, by position
    encode_feedback("a", 0, 3),
    encode_feedback("a", 1, 9),  # label out of range
    b"\x00" * (MAX_BYTES + 1),  # oversized
    b"\xc1",  # not msgpack
    msgpack.packb([1, 2]),  # not a map
    encode_sample("a", 1, _x(5), 1.0)[:-3],  # truncated
]


def _same(a: Sample | Feedback | ProtocolError, b: Sample | Feedback | ProtocolError) -> bool:
    if isinstance(a, ProtocolError) or isinstance(b, ProtocolError):
        return (
            isinstance(a, ProtocolError) and isinstance(b, ProtocolError) and (a.reason == b.reason)
        )
    if isinstance(a, Feedback) or isinstance(b, Feedback):
        return a == b
    return (
        (a.sensor, a.seq, a.ts, a.label) == (b.sensor, b.seq, b.ts, b.label)
        and a.x.dtype == b.x.dtype == np.float32
        and a.x.shape == b.x.shape == SHAPE
        and np.array_equal(a.x, b.x)
    )


def _one(raw: bytes) -> Sample | Feedback | ProtocolError:
    try:
        return decode_ingest(raw, SHAPE, CLASSES, MAX_BYTES)
    except ProtocolError as exc:
        return exc


def test_every_kind_decodes_in_a_batch_as_alone() -> None:
    many = decode_ingest_many(KINDS, SHAPE, CLASSES, MAX_BYTES)
    assert len(many) == len(KINDS)
    for raw, got in zip(KINDS, many, strict=True):
        assert _same(got, _one(raw)), (got, _one(raw))
    reasons = [m.reason for m in many if isinstance(m, ProtocolError)]
    assert reasons == [
        "nonfinite",
        "nonfinite",
        "nonfinite",
        "shape",
        "label",
        "oversized",
        "msgpack",
        "not_map",
        "msgpack",
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, len(KINDS) - 1), max_size=40))
def test_batches_decode_like_single_messages(picks: list[int]) -> None:
    raws = [KINDS[i] for i in picks]
    many = decode_ingest_many(raws, SHAPE, CLASSES, MAX_BYTES)
    assert len(many) == len(raws)
    assert all(_same(m, _one(r)) for m, r in zip(many, raws, strict=True))


def _intake(capacity: int) -> tuple[Intake, Metrics, DropQueue[Item]]:
    metrics = Metrics()
    queue: DropQueue[Item] = DropQueue(capacity)
    return Intake(queue, metrics, SHAPE, CLASSES, MAX_BYTES), metrics, queue


def _drained(queue: DropQueue[Item]) -> list[tuple[str, int, str]]:
    return [(it.msg.sensor, it.msg.seq, type(it.msg).__name__) for it in queue.get_batch(10**6, 0)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, len(KINDS) - 1), min_size=1, max_size=12), max_size=8),
    st.integers(1, 6),
)
def test_intake_counts_a_batch_like_its_messages_one_by_one(
    batches: list[list[int]], capacity: int
) -> None:
    # a small queue: drops (unlabelled first) happen inside and across batches
    batched, m_batched, q_batched = _intake(capacity)
    single, m_single, q_single = _intake(capacity)
    for picks in batches:
        raws = [KINDS[i] for i in picks]
        batched.submit_raw_many(raws)
        for raw in raws:
            single.submit_raw(raw)
    assert m_batched.counts() == m_single.counts()
    assert batched.sequences() == single.sequences()
    queued = _drained(q_batched)
    assert queued == _drained(q_single)
    n = sum(len(b) for b in batches)
    c = m_batched.counts()
    assert c["counters"].get("received", 0) == n
    accepted = sum(v for k, v in c["counters"].items() if k.startswith("accepted"))
    assert accepted + sum(c["rejected"].values()) == n  # every message one or the other
    assert accepted == len(queued) + sum(c["dropped"].values())  # every accepted one queued


def test_gaps_restarts_and_duplicates_are_counted_within_one_batch() -> None:
    intake, metrics, _ = _intake(64)
    x = _x(0)
    raws = [encode_sample("s", seq, x, 1.0) for seq in (0, 1, 5, 2, 2, 3)]
    intake.submit_raw_many(raws)
    c = metrics.counts()
    # 0, 1, 5: a gap of 3; 5 -> 2: a restart; 2 again: a duplicate; 2 -> 3: in order
    assert c["counters"]["seq_gaps"] == 1 and c["counters"]["seq_missing"] == 3
    assert c["counters"]["seq_restarts"] == 1
    assert c["rejected"] == {"duplicate": 1}
    assert c["counters"]["accepted"] == 5 and c["counters"]["received"] == 6


def _sample_map(extra: dict[object, object] | None = None, **change: object) -> bytes:
    """A float32 sample map as a publisher might write it, with ``change`` and ``extra``
    applied (a value of ... removes the key)."""
    obj: dict[object, object] = {
        "v": 1,
        "type": "sample",
        "sensor": "a",
        "seq": 7,
        "ts": 1.5,
        "dtype": "float32",
        "shape": [6, 100],
        "data": _x(9).tobytes(),
    }
    obj.update(change)
    obj.update(extra or {})
    return msgpack.packb({k: v for k, v in obj.items() if v is not ...}, use_bin_type=True)


# Near misses of the common float32 sample, each a field the batch path's one-step check
# must reject (or accept) exactly as the full checks do.
NEAR: list[bytes] = [
    _sample_map(),
    _sample_map(v=True),
    _sample_map(seq=True),
    _sample_map(seq=-1),
    _sample_map(seq=2**64 - 1),
    _sample_map(ts=True),
    _sample_map(ts=3),
    _sample_map(ts=float("inf")),
    _sample_map(ts=...),
    _sample_map(label=True),
    _sample_map(label=-1),
    _sample_map(label=CLASSES),
    _sample_map(label=None),
    _sample_map(label=3),
    _sample_map(label=1.0),
    _sample_map(shape=[6.0, 100]),
    _sample_map(shape=[6, 100, 1]),
    _sample_map(shape=[600]),
    _sample_map(shape=...),
    _sample_map(dtype="float64"),
    _sample_map(dtype=b"float32"),
    _sample_map(dtype=...),
    _sample_map(data="x" * 2400),
    _sample_map(data=b"\x00" * 2396),
    _sample_map(sensor=""),
    _sample_map(sensor="s" * 64),
    _sample_map(sensor="s" * 65),
    _sample_map(sensor=5),
    _sample_map(type="label"),
    _sample_map(type=...),
    _sample_map({"extra": {"nested": [1, 2]}}),
    _sample_map({b"bin": 1}),
]


def test_near_misses_of_the_common_sample_decode_in_a_batch_as_alone() -> None:
    many = decode_ingest_many(NEAR, SHAPE, CLASSES, MAX_BYTES)
    for raw, got in zip(NEAR, many, strict=True):
        assert _same(got, _one(raw)), (msgpack.unpackb(raw, strict_map_key=False).keys(), got)
    accepted = [isinstance(m, Sample) for m in many]
    # the plain one, seq 2^64-1, an integer ts, labels None and 3, 64 chars, an extra key
    assert sum(accepted) == 7, accepted
