"""The crash-safe state store: corruption, torn logs, rotation, and kill -9 of a live agent."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from test_service_support import (
    AgentProcess,
    cleanup,
    make_bundle,
    short_dir,
    subscribe,
    write_config,
)

from edge_agent.client import Publisher
from edge_agent.data import load_dataset
from edge_agent.service.state import LabelledSample, StateStore


def _sample(i: int) -> LabelledSample:
    return LabelledSample("s", i, float(i), i % 4, -1, np.full((6, 100), i, np.float32))


def test_checkpoints_round_trip_and_keep_the_newest(tmp_path: Path) -> None:
    store = StateStore(tmp_path, keep=2, capacity=10)
    assert store.restore() == (None, [])
    for g in range(4):
        store.checkpoint({"counts": {"n": g}})
    assert len(list(tmp_path.glob("checkpoint-*.eas"))) == 2
    payload, _ = StateStore(tmp_path).restore()
    assert payload is not None and payload["generation"] == 4 and payload["counts"] == {"n": 3}


def test_corrupt_checkpoint_is_set_aside_and_the_previous_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    store.checkpoint({"counts": {"n": 1}})
    newest = store.checkpoint({"counts": {"n": 2}})
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF
    newest.write_bytes(bytes(data))
    (tmp_path / ".checkpoint-000000000003.eas.x.tmp").write_bytes(b"half")
    again = StateStore(tmp_path)
    payload, _ = again.restore()
    assert payload is not None and payload["counts"] == {"n": 1}
    assert again.corrupt_found == 1
    assert [p.name.split(".")[0] for p in (tmp_path / "corrupt").iterdir()] == [
        "checkpoint-000000000002"
    ]
    assert "checksum mismatch" in caplog.text
    assert not list(tmp_path.glob(".checkpoint-*.tmp"))
    assert again.checkpoint({}).name == "checkpoint-000000000003.eas"


def test_labelled_log_survives_a_torn_tail_and_rotates(tmp_path: Path) -> None:
    store = StateStore(tmp_path, capacity=5)
    store.restore()
    for i in range(12):
        store.append_labelled([_sample(i)])
    store.close()
    seg = sorted(tmp_path.glob("labelled-*.log"))
    assert len(seg) == 2, "segments older than the previous one are removed"
    with open(seg[-1], "ab") as f:
        f.write(_sample(99).to_record()[:-7])  # a record cut short by a crash
    _, samples = StateStore(tmp_path, capacity=5).restore()
    assert [s.seq for s in samples] == [7, 8, 9, 10, 11]
    np.testing.assert_array_equal(samples[-1].x, np.full((6, 100), 11, np.float32))
    again = StateStore(tmp_path, capacity=5)
    _, samples = again.restore()
    assert [s.seq for s in samples] == [7, 8, 9, 10, 11]
    again.append_labelled([_sample(12)])
    again.close()
    assert [s.seq for s in StateStore(tmp_path, capacity=5).restore()[1]] == [8, 9, 10, 11, 12]


def test_kill_9_during_checkpointing_then_restore(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Checkpoint every 50 ms under a labelled stream, kill -9 at random moments, and
    check each time that state reads back and holds every labelled sample whose
    prediction was published before the kill (the log is written before publishing)."""
    bundle = make_bundle(tmp_path_factory.mktemp("bundle") / "t.eab")
    d = short_dir()
    interval = 0.05
    cfg = write_config(d, bundle, checkpoint_s=interval)
    ds = load_dataset("basicmotions")
    rng = np.random.default_rng(3)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    restarts_seen = 0
    try:
        for cycle in range(3):
            a = AgentProcess(cfg)
            st = a.wait_ready() and a.status()
            assert st["samples"]["accepted_labelled"] >= restarts_seen  # counters restored
            sub = subscribe(ctx, st["endpoints"]["output"][0])
            time.sleep(0.2)
            seen: list[tuple[float, int]] = []
            stop = threading.Event()

            def send(
                ep: str = st["endpoints"]["ingest"][0], c: int = cycle, ev: threading.Event = stop
            ) -> None:
                with Publisher(ep) as pub:
                    i = 0
                    while not ev.is_set():
                        pub.send_sample(f"k{c}", i, ds.X_test[i % 40], label=int(ds.y_test[i % 40]))
                        i += 1
                        time.sleep(0.0005)

            sender = threading.Thread(target=send)
            sender.start()
            kill_at = time.monotonic() + rng.uniform(0.5, 1.2)
            while time.monotonic() < kill_at:
                if sub.poll(10):
                    p = msgpack.unpackb(sub.recv_multipart()[1])
                    seen.append((time.monotonic(), p["seq"]))
            a.kill()
            stop.set()
            sender.join()
            sub.close()
            store = StateStore(d / "state", capacity=4096)
            payload, samples = store.restore()
            assert payload is not None, a.log()
            assert store.corrupt_found == 0
            kept = {s.seq for s in samples if s.sensor == f"k{cycle}"}
            due = {seq for _, seq in seen}
            assert due, "the stream produced predictions before the kill"
            assert due <= kept, f"lost labelled samples: {sorted(due - kept)[:10]}"
            restarts_seen = payload["counts"]["counters"].get("accepted_labelled", 0)
        a = AgentProcess(cfg)
        a.wait_ready()
        st = a.status()
        assert st["buffer"]["labelled"] > 0
        assert st["model"]["path"] == str(d / "state" / "model.eab"), "the state's model is used"
        a.terminate()
    finally:
        a.stop()
        ctx.term()
        cleanup(d)
