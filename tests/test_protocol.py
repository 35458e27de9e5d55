"""Wire protocol v1: round trips, every rejection reason, and fuzzed input."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.ingest.control import (
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
)
from edge_agent.ingest.protocol import (
    REASONS,
    Feedback,
    ProtocolError,
    Sample,
    decode_ingest,
    encode_feedback,
    encode_sample,
)

SHAPE = (6, 100)
CLASSES = 4


def _decode(raw: bytes, max_bytes: int = 1 << 20) -> Sample | Feedback:
    return decode_ingest(raw, SHAPE, CLASSES, max_bytes)


def _reason(raw: bytes, max_bytes: int = 1 << 20) -> str:
    with pytest.raises(ProtocolError) as info:
        _decode(raw, max_bytes)
    assert info.value.reason in REASONS
    return info.value.reason


def _good(**over: object) -> dict[str, object]:
    x = np.arange(600, dtype="<f4").reshape(SHAPE)
    msg: dict[str, object] = {
        "v": 1,
        "type": "sample",
        "sensor": "s1",
        "seq": 7,
        "ts": 1.5,
        "dtype": "float32",
        "shape": [6, 100],
        "data": x.tobytes(),
    }
    msg.update(over)
    return msg


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def test_sample_round_trip_all_dtypes() -> None:
    x = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32) * 10
    for dtype in ("float32", "float64", "float16", "int16", "int32", "int8", "uint8", "uint16"):
        src = np.clip(x, 0, 100) if dtype.startswith("u") else x
        s = _decode(encode_sample("acc", 3, src, 12.5, label=2, dtype=dtype))
        assert isinstance(s, Sample)
        assert (s.sensor, s.seq, s.ts, s.label) == ("acc", 3, 12.5, 2)
        assert s.x.dtype == np.float32 and s.x.shape == SHAPE
        np.testing.assert_allclose(s.x, src.astype(dtype).astype(np.float32))


def test_feedback_and_request_round_trip() -> None:
    fb = _decode(encode_feedback("acc", 2**64 - 1, 3))
    assert fb == Feedback("acc", 2**64 - 1, 3)
    req = decode_request(encode_request("status", "abc"))
    assert (req.cmd, req.id) == ("status", "abc")
    rep = decode_reply(encode_reply(4, "ping", {"pong": True}))
    assert rep["ok"] and rep["id"] == 4 and rep["result"] == {"pong": True}
    err = decode_reply(encode_error(None, "msgpack", "bad"))
    assert not err["ok"] and err["error"]["code"] == "msgpack"


def test_unknown_keys_are_ignored() -> None:
    assert isinstance(_decode(_pack(_good(extra="future field"))), Sample)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "msgpack"),
        (b"\xc1", "msgpack"),  # never-used byte
        (_pack(_good())[:-10], "msgpack"),  # truncated
        (_pack(_good()) + b"\x00", "msgpack"),  # trailing bytes
        (b"\xdb\xff\xff\xff\xf0", "msgpack"),  # str32 declaring ~4 GiB
        (b"\xc6\x7f\xff\xff\xff", "msgpack"),  # bin32 declaring 2 GiB
        (b"\xdd\xff\xff\xff\xff", "msgpack"),  # array32 declaring 4G items
        (b"\xdf\xff\xff\xff\xff", "msgpack"),  # map32 declaring 4G pairs
        (_pack(msgpack.ExtType(5, b"xx")), "msgpack"),  # ext types are not allowed
        (_pack({1: 2}), "msgpack"),  # non-string keys
        (_pack([1, 2, 3]), "not_map"),
        (_pack(42), "not_map"),
        (_pack({"type": "sample"}), "version"),
        (_pack(_good(v=2)), "version"),
        (_pack(_good(v="1")), "version"),
        (_pack(_good(v=True)), "version"),
        (_pack(_good(type="bogus")), "type"),
        (_pack(_good(type=None)), "type"),
        (_pack({k: v for k, v in _good().items() if k != "seq"}), "field"),
        (_pack(_good(seq=-1)), "field"),
        (_pack(_good(seq=1.0)), "field"),
        (_pack(_good(seq=True)), "field"),
        (_pack(_good(sensor="")), "field"),
        (_pack(_good(sensor="x" * 65)), "field"),
        (_pack(_good(sensor=5)), "field"),
        (_pack(_good(ts=math.nan)), "field"),
        (_pack(_good(ts="now")), "field"),
        (_pack(_good(dtype="complex64")), "dtype"),
        (_pack(_good(dtype=None)), "field"),  # wrong type, not an unknown dtype
        (_pack(_good(shape=[100, 6])), "shape"),
        (_pack(_good(shape=[600])), "shape"),
        (_pack(_good(shape="6x100")), "field"),
        (_pack(_good(shape=[6.0, 100])), "field"),  # integers only
        (_pack(_good(shape=[6, True])), "field"),  # a bool is no integer here
        (_pack({**_good(), b"extra": 1}), "msgpack"),  # one bin key among str keys
        (_pack(_good(shape=[6, 100, 1, 1, 1])), "msgpack"),  # more dims than allowed
        (_pack(_good(data="text")), "field"),
        (_pack(_good(data=b"\x00" * 100)), "size"),
        (_pack(_good(data=np.full(SHAPE, np.nan, "<f4").tobytes())), "nonfinite"),
        (_pack(_good(data=np.full(SHAPE, np.inf, "<f4").tobytes())), "nonfinite"),
        (_pack(_good(dtype="float64", data=np.full(SHAPE, 1e300, "<f8").tobytes())), "nonfinite"),
        (_pack(_good(label=4)), "label"),
        (_pack(_good(label=-1)), "label"),
        (_pack(_good(label="Running")), "field"),
        (_pack({"v": 1, "type": "label", "sensor": "s", "seq": 1}), "field"),
        (_pack({"v": 1, "type": "label", "sensor": "s", "seq": 1, "label": 9}), "label"),
    ],
)
def test_rejections(raw: bytes, reason: str) -> None:
    assert _reason(raw) == reason


def test_oversized_is_rejected_before_unpacking() -> None:
    assert _reason(_pack(_good()), max_bytes=1000) == "oversized"


def test_request_errors() -> None:
    for raw, reason in [
        (b"\x93", "msgpack"),
        (encode_request("reboot"), "field"),
        (_pack({"v": 1, "type": "sample"}), "type"),
        (_pack({"v": 1, "type": "request", "cmd": "status", "id": [1]}), "field"),
        (b"\x00" * 5000, "oversized"),
    ]:
        with pytest.raises(ProtocolError) as info:
            decode_request(raw)
        assert info.value.reason == reason


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=80)
    | st.binary(max_size=3000),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=12)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=4000))
def test_random_bytes_never_crash(raw: bytes) -> None:
    try:
        _decode(raw)
    except ProtocolError as exc:
        assert exc.reason in REASONS


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from([*_good(), "label", "x"]), values, max_size=12))
def test_random_maps_never_crash(fields: dict[str, object]) -> None:
    msg = _good()
    msg.update(fields)
    try:
        out = _decode(_pack(msg))
    except ProtocolError as exc:
        assert exc.reason in REASONS
    else:
        assert isinstance(out, Sample | Feedback)
        if isinstance(out, Sample):
            assert out.x.shape == SHAPE and np.isfinite(out.x).all()
