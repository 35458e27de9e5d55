"""docs/protocol.md, statement by statement, where a publisher written from it alone found
the agent doing otherwise."""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from test_service_support import AgentProcess, serial_config

from edge_agent.data import load_dataset
from edge_agent.ingest.protocol import ProtocolError, decode_ingest
from edge_agent.ingest.serial_source import format_line

SHAPE = (2, 3)


def _sample(**over: object) -> dict[object, object]:
    msg: dict[object, object] = {
        "v": 1,
        "type": "sample",
        "sensor": "s",
        "seq": 1,
        "ts": 0.0,
        "dtype": "float32",
        "shape": [2, 3],
        "data": np.zeros(SHAPE, "<f4").tobytes(),
    }
    msg.update(over)
    return msg


def _reason(raw: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_ingest(raw, SHAPE, 2)
    return info.value.reason


def test_binary_map_keys_are_msgpack_errors() -> None:
    # "non-string keys" -> msgpack; bin keys used to reach the version check
    raw = msgpack.packb(
        {
            k.encode(): v
            for k, v in _sample().items()  # type: ignore[union-attr]
        },
        use_bin_type=True,
    )
    assert _reason(raw) == "msgpack"


def test_a_dtype_of_the_wrong_type_is_a_field_error_an_unknown_one_dtype() -> None:
    assert _reason(msgpack.packb(_sample(dtype=7))) == "field"
    del_dtype = _sample()
    del del_dtype["dtype"]
    assert _reason(msgpack.packb(del_dtype)) == "field"
    assert _reason(msgpack.packb(_sample(dtype="complex64"))) == "dtype"


def test_a_non_finite_ts_is_a_field_error() -> None:
    assert _reason(msgpack.packb(_sample(ts=float("nan")))) == "field"


def test_unknown_keys_count_toward_the_limits() -> None:
    extra = {f"k{i}": 0 for i in range(32 - 8)}  # 8 known keys + 24 unknown = 32: fine
    assert decode_ingest(msgpack.packb(_sample(**extra), use_bin_type=True), SHAPE, 2)
    extra["one_more"] = 0  # 33 keys
    assert _reason(msgpack.packb(_sample(**extra), use_bin_type=True)) == "msgpack"
    assert _reason(msgpack.packb(_sample(note="x" * 257), use_bin_type=True)) == "msgpack"


@pytest.mark.parametrize(("depth", "ok"), [(100, True), (1024, True), (1025, False)])
def test_nesting_depth_limit(depth: int, ok: bool) -> None:
    # the top-level map is level 1; an unknown key holds depth - 1 nested one-item arrays
    head = msgpack.packb(_sample(), use_bin_type=True)
    n = head[0] & 0x0F
    deep = msgpack.packb("deep") + b"\x91" * (depth - 1) + b"\x00"
    raw = bytes([0x80 | (n + 1)]) + head[1:] + deep
    if ok:
        assert decode_ingest(raw, SHAPE, 2).seq == 1
    else:
        assert _reason(raw) == "msgpack"


def test_serial_lines_as_the_document_states(agent_bundle: Path, workdir: Path) -> None:
    # "\r" before "\n" dropped; a line past 65536 bytes without "\n" is `serial`
    master, slave = os.openpty()
    agent = AgentProcess(serial_config(workdir, agent_bundle, os.ttyname(slave), "line"))
    try:
        agent.wait_ready()
        time.sleep(0.5)  # the agent opens the port right after start-up
        x = load_dataset("basicmotions").X_test[0]
        os.write(master, format_line(x, 1).replace(b"\n", b"\r\n"))  # a Windows sensor
        for _ in range(18):  # 18 x 4096 bytes: a line that never ends, in pieces
            os.write(master, b"1," * 2048)
        os.write(master, b"\n" + format_line(x))
        st = agent.wait_for(lambda s: s["samples"]["predicted"] >= 2)
        assert st["samples"]["accepted_labelled"] == 1 and st["samples"]["accepted"] == 2
        assert st["samples"]["rejected"].get("serial", 0) >= 1, st["samples"]["rejected"]
    finally:
        agent.stop()
        os.close(master)
        os.close(slave)
