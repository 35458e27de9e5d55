"""Every loss counted where docs/protocol.md says, in status under names a user reads:
sequence gaps, restarts, unmatched labels, rejections, oversized frames (also those ZeroMQ
drops with the connection), and what status shows after a restart."""

from __future__ import annotations

import time

import numpy as np
import zmq
from test_service_support import AgentProcess, cleanup, make_bundle, short_dir, write_config

from edge_agent.client import Publisher
from edge_agent.ingest.protocol import encode_sample

MAX = 4096  # ingest.max_message_bytes
CEILING = 1 << 16  # ingest.max_frame_bytes: ZeroMQ's own ceiling


def test_sequence_label_and_size_losses_are_counted_in_status() -> None:
    d = short_dir()
    config = write_config(
        d,
        make_bundle(d / "m.eab"),
        extra="",
        ingest=(
            f'endpoints = ["ipc://{d}/in.sock"]\nsocket = "pull"\nmax_message_bytes = {MAX}\n'
            f"max_frame_bytes = {CEILING}"
        ),
    )
    a = AgentProcess(config)
    try:
        a.wait_ready()
        st0 = a.status()
        x = np.zeros((6, 100), np.float32)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        with Publisher(f"ipc://{d}/in.sock", socket="push") as pub:
            for seq in (0, 1, 5):  # 2, 3, 4 never sent: one gap, three missing
                pub.send_sample("s", seq, x)
            pub.send_sample("s", 2, x)  # smaller: a restarted publisher
            pub.send_sample("s", 2, x)  # the same again: a duplicate, rejected
            pub.send_label("s", 999, 1)  # no such sample: an unmatched label
            pub.send_raw(b"\x00" * (MAX + 1))  # over the limit: counted as oversized
        st = a.wait_for(
            lambda s: (
                s["samples"]["feedback_unmatched"] >= 1 and s["samples"]["rejected_total"] >= 2
            ),
            timeout=60,
        )
        s = st["samples"]
        assert (s["seq_gaps"], s["seq_missing"], s["seq_restarts"]) == (1, 3, 1), s
        assert (s["feedback"], s["feedback_unmatched"]) == (1, 1), s
        assert s["rejected"] == {"duplicate": 1, "oversized": 1}, s
        assert st["losses"]["missing_in_transport"] == 3
        assert st["losses"]["rejected"] == 2
        assert st["losses"]["dropped_from_queue"] == 0
        # metrics' "accepted" counts unlabelled samples; status' "accepted" all of them
        m = a.request("metrics")["counters"]
        assert s["accepted"] == m.get("accepted", 0) + m.get("accepted_labelled", 0) == 4
        assert s["accepted"] - st0["samples"]["accepted"] == 4

        # a frame over ZeroMQ's ceiling: libzmq closes the connection before reading it
        before = st["losses"]["transport_disconnects"]
        push = ctx.socket(zmq.PUSH)
        push.connect(f"ipc://{d}/in.sock")
        push.send(b"\x00" * (CEILING + 1))
        st = a.wait_for(lambda s: s["losses"]["transport_disconnects"] > before, timeout=60)
        push.close(linger=0)
        ctx.term()
        assert st["losses"]["transport_disconnects"] >= before + 1

        # status after a restart: the checkpoint it restored, not "none yet"
        assert a.terminate(60)[0] == 0
        b = AgentProcess(config)
        try:
            b.wait_ready()
            ck = b.status()["checkpoint"]
            assert ck.get("generation", 0) >= 1 and ck.get("restored") is True, ck
            assert ck["time"] <= time.time()
        finally:
            b.stop()
    finally:
        a.stop()
        cleanup(d)


def test_the_documented_example_encodes_as_documented() -> None:
    # protocol.md's example map encodes as documented
    raw = encode_sample("watch-1", 17, np.zeros((6, 100), np.float32), 1732350000.25, 2)
    assert raw[:4] == bytes.fromhex("89a17601")
