"""Frames over the message limit, through real ZeroMQ sockets into the ingest source.

Every frame longer than ``ingest.max_message_bytes`` and up to ``ingest.max_frame_bytes``
(the ZMQ_MAXMSGSIZE ceiling) reaches intake and is counted as ``oversized``, and the
publisher's connection stays up. Before the ceiling was raised it was 4 x the message
limit: a 4 MiB + 1 frame vanished inside ZeroMQ with the connection and no counter. Only a
frame above the ceiling is refused by ZeroMQ, which closes the connection; that shows as a
transport disconnect (docs/protocol.md, "Encoding rules").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zmq

from edge_agent.ingest.config import IngestConfig
from edge_agent.ingest.intake import Intake, Item
from edge_agent.ingest.protocol import DEFAULT_MAX_MESSAGE_BYTES, encode_sample
from edge_agent.ingest.queue import DropQueue
from edge_agent.ingest.zmq_source import ZmqSource
from edge_agent.service.metrics import Metrics

MIB = 1 << 20


@contextmanager
def _source(tmp_path: Path, **cfg: int) -> Iterator[tuple[ZmqSource, Metrics, str]]:
    """A running PULL source bound to an ipc socket in ``tmp_path``, its metrics, the
    endpoint."""
    ep = f"ipc://{tmp_path}/in.sock"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    metrics = Metrics()
    queue: DropQueue[Item] = DropQueue(64)
    intake = Intake(queue, metrics, (6, 100), 4, cfg.get("max_message_bytes", MIB))
    src = ZmqSource(ctx, IngestConfig(socket="pull", endpoints=[ep], **cfg), intake)
    src.start()
    try:
        yield src, metrics, ep
    finally:
        src.stop()
        ctx.term()


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _sample(seq: int) -> bytes:
    return encode_sample("s", seq, np.zeros((6, 100), np.float32), 1.0)


def test_every_frame_up_to_the_ceiling_is_counted_as_oversized(tmp_path: Path) -> None:
    # the default limits: 1 MiB messages, a 64 MiB frame ceiling
    assert DEFAULT_MAX_MESSAGE_BYTES == MIB and IngestConfig().max_frame_bytes == 64 * MIB
    with _source(tmp_path) as (_, metrics, ep):
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(ep)
        sizes = [MIB + 1, 4 * MIB, 4 * MIB + 1, 16 * MIB, 64 * MIB]  # 4 MiB + 1: the old ceiling
        push.send(_sample(0))
        for size in sizes:
            push.send(b"\x00" * size)
        push.send(_sample(1))  # after them, on the same connection
        _wait(lambda: metrics.counts()["counters"].get("accepted", 0) == 2)
        counts = metrics.counts()  # before the publisher leaves (a disconnect, too)
        push.close(linger=0)
        ctx.term()
        assert counts["rejected"] == {"oversized": len(sizes)}, counts
        assert counts["counters"]["received"] == len(sizes) + 2
        assert counts["counters"].get("ingest_disconnects", 0) == 0  # the connection held
        assert counts["counters"].get("seq_gaps", 0) == 0


def test_a_frame_over_the_ceiling_is_a_transport_disconnect(tmp_path: Path) -> None:
    # ceiling 64 KiB: a larger frame never reaches the agent; ZeroMQ drops the connection
    with _source(tmp_path, max_message_bytes=4096, max_frame_bytes=64 << 10) as (_, m, ep):
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(ep)
        push.send(b"\x00" * (64 << 10))  # at the ceiling: received, oversized
        _wait(lambda: m.counts()["rejected"].get("oversized", 0) == 1)
        push.send(b"\x00" * ((64 << 10) + 1))  # over it
        _wait(lambda: m.counts()["counters"].get("ingest_disconnects", 0) >= 1)
        push.close(linger=0)
        ctx.term()
        counts = m.counts()
        assert counts["rejected"] == {"oversized": 1}, counts


def test_the_ceiling_is_never_below_the_message_limit(tmp_path: Path) -> None:
    with _source(tmp_path, max_message_bytes=2 * MIB, max_frame_bytes=MIB) as (src, _, _):
        assert src.sock.getsockopt(zmq.MAXMSGSIZE) == 2 * MIB
