"""Wire protocol v1: msgpack messages between publishers, the agent and status clients.

Every message is one msgpack map with string keys, ``"v": 1`` and a ``"type"``. The
full specification, precise enough to write a publisher in another language, is
``docs/protocol.md``; this module is its reference implementation. Decoding never
trusts its input: sizes are limited before and while unpacking, every field is type
checked, and each failure raises :class:`ProtocolError` with a short machine-readable
``reason`` that the agent counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import msgpack
import numpy as np

VERSION = 1
MAX_SENSOR_LEN = 64
MAX_DIMS = 4
MAX_MAP_KEYS = 32
MAX_SEQ = (1 << 64) - 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20
MAX_STR_LEN = 256
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Wire dtype names (all little-endian on the wire) -> numpy dtype.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float32", "float64", "float16", "int8", "uint8", "int16", "uint16", "int32")
}

# Reasons a message is rejected; every one has a counter in the agent's metrics.
REASONS = (
    "oversized",  # longer than the size limit (checked before unpacking)
    "msgpack",  # not decodable msgpack: truncated, trailing bytes, limits exceeded
    "not_map",  # top level is not a map
    "version",  # missing or unsupported "v"
    "type",  # missing or unknown "type"
    "field",  # a required field is missing or has the wrong type or range
    "dtype",  # dtype not in DTYPES
    "shape",  # shape differs from the model's input shape
    "size",  # data length differs from shape x dtype size
    "nonfinite",  # NaN or infinity in float data
    "label",  # label outside 0..num_classes-1
    "duplicate",  # same (sensor, seq) as the previous sample of that sensor
    "frames",  # a ZeroMQ message with an unexpected number of frames
    "serial",  # an unparsable serial line or frame
)


class ProtocolError(ValueError):
    """A message that cannot be accepted; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.detail = message


class Sample(NamedTuple):
    """One sensor window, converted to float32 with the model's input shape (immutable
    like a frozen dataclass; a NamedTuple is made in a third of the time, once per
    sample on the ingest thread)."""

    sensor: str
    seq: int
    ts: float
    x: np.ndarray
    label: int | None = None


@dataclass(frozen=True)
class Feedback:
    """A label for a sample sent earlier (matched by sensor and sequence number)."""

    sensor: str
    seq: int
    label: int


# ---------------------------------------------------------------- encoding


def encode_sample(
    sensor: str,
    seq: int,
    x: np.ndarray,
    ts: float,
    label: int | None = None,
    dtype: str = "float32",
) -> bytes:
    """Encode a sample message; ``x`` is sent as ``dtype`` little-endian bytes."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    arr = np.ascontiguousarray(x, dtype=DTYPES[dtype])
    msg: dict[str, Any] = {
        "v": VERSION,
        "type": "sample",
        "sensor": sensor,
        "seq": int(seq),
        "ts": float(ts),
        "dtype": dtype,
        "shape": list(arr.shape),
        "data": arr.tobytes(),
    }
    if label is not None:
        msg["label"] = int(label)
    return msgpack.packb(msg, use_bin_type=True)


def encode_feedback(sensor: str, seq: int, label: int) -> bytes:
    """Encode a labelled-feedback message for an earlier sample."""
    return msgpack.packb(
        {"v": VERSION, "type": "label", "sensor": sensor, "seq": int(seq), "label": int(label)},
        use_bin_type=True,
    )


def encode_prediction(
    sensor: str,
    seq: int,
    ts: float,
    cls: int,
    class_name: str,
    confidence: float,
    model_version: str,
    latency_ms: float,
    label: int | None,
    pack: Callable[[Any], bytes] | None = None,
) -> bytes:
    """Encode a prediction published on the output socket. ``pack``: a
    ``msgpack.Packer(use_bin_type=True).pack`` to reuse (one thread's: a packer made
    for each message is a third of the encoding's cost)."""
    msg = {
        "v": VERSION,
        "type": "prediction",
        "sensor": sensor,
        "seq": seq,
        "ts": ts,
        "class": cls,
        "class_name": class_name,
        "confidence": confidence,
        "model_version": model_version,
        "latency_ms": latency_ms,
        "label": label,
    }
    return msgpack.packb(msg, use_bin_type=True) if pack is None else pack(msg)


# ---------------------------------------------------------------- decoding


def unpack_one(raw: bytes, max_bytes: int, strict_map_key: bool = True, **limits: int) -> Any:
    """Unpack exactly one msgpack object of at most ``max_bytes`` (the buffer limit,
    checked before unpacking) under per-type ``limits``; raises on truncation, trailing
    bytes or a limit exceeded."""
    if len(raw) > max_bytes:
        raise ValueError(f"{len(raw)} bytes exceeds the {max_bytes}-byte buffer limit")
    return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=strict_map_key, **limits)


def unpack_map(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """Unpack one msgpack map under strict size limits and check its version."""
    if len(raw) > max_bytes:
        raise ProtocolError("oversized", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit")
    try:
        # msgpack.unpackb itself, not unpack_one: the **limits hand-over cost a third of
        # the unpacking (len(raw) is checked above)
        obj = msgpack.unpackb(
            raw,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_STR_LEN,
            max_bin_len=max_bytes,
            max_array_len=MAX_DIMS,
            max_map_len=MAX_MAP_KEYS,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many unrelated types for bad input
        raise ProtocolError("msgpack", f"cannot decode msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("not_map", f"top level is {type(obj).__name__}, not a map")
    # msgpack lets bin keys through as bytes (the set of key types: one C-level pass)
    if not set(map(type, obj)) <= _STR_ONLY:
        raise ProtocolError("msgpack", "map keys must be msgpack str, not bin or other types")
    version = obj.get("v")
    if is_int(version) and version == VERSION:
        return obj
    if "v" not in obj:
        raise ProtocolError("version", "missing protocol version 'v'")
    raise ProtocolError("version", f"unsupported protocol version {version!r} (this is v{VERSION})")


_STR_ONLY, _INT_ONLY = frozenset((str,)), frozenset((int,))  # msgpack makes no subclasses


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field(obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise ProtocolError("field", f"missing field {key!r}")
    return obj[key]


def _sensor(obj: dict[str, Any]) -> str:
    sensor = _field(obj, "sensor")
    if not isinstance(sensor, str) or not 1 <= len(sensor) <= MAX_SENSOR_LEN:
        raise ProtocolError("field", f"'sensor' must be a string of 1..{MAX_SENSOR_LEN} chars")
    return sensor


def _seq(obj: dict[str, Any]) -> int:
    seq = _field(obj, "seq")
    if not is_int(seq) or not 0 <= seq <= MAX_SEQ:
        raise ProtocolError("field", "'seq' must be an integer in 0..2^64-1")
    return int(seq)


def _label(obj: dict[str, Any], num_classes: int, required: bool) -> int | None:
    label = obj.get("label")
    if label is None:
        if required:
            raise ProtocolError("field", "missing field 'label'")
        return None
    if not is_int(label):
        raise ProtocolError("field", f"'label' must be an integer, got {type(label).__name__}")
    if not 0 <= label < num_classes:
        raise ProtocolError("label", f"label {label} outside 0..{num_classes - 1}")
    return int(label)


def _ts(obj: dict[str, Any]) -> float:
    ts = _field(obj, "ts")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
        raise ProtocolError("field", "'ts' must be a finite number (Unix seconds)")
    return float(ts)


def _sample_header(
    obj: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> tuple[str, int, float, np.dtype[Any], bytes, int | None]:
    """A sample map's fields checked against the model (everything but the data's
    values): sensor, seq, ts, wire dtype, data bytes, label."""
    sensor, seq, ts = _sensor(obj), _seq(obj), _ts(obj)
    dtype_name = _field(obj, "dtype")
    if not isinstance(dtype_name, str):  # wrong type, like any other field
        raise ProtocolError("field", f"'dtype' must be a string, got {type(dtype_name).__name__}")
    if dtype_name not in DTYPES:
        raise ProtocolError("dtype", f"dtype {dtype_name!r} is not one of {sorted(DTYPES)}")
    shape = _field(obj, "shape")
    if not isinstance(shape, list) or not set(map(type, shape)) <= _INT_ONLY:  # no bool
        raise ProtocolError("field", "'shape' must be an array of integers")
    if tuple(shape) != input_shape:
        raise ProtocolError("shape", f"shape {shape} differs from the model's {list(input_shape)}")
    data = _field(obj, "data")
    if not isinstance(data, bytes):
        raise ProtocolError("field", f"'data' must be binary, got {type(data).__name__}")
    dt = DTYPES[dtype_name]
    expected = math.prod(input_shape) * dt.itemsize
    if len(data) != expected:
        raise ProtocolError(
            "size", f"data has {len(data)} bytes, shape x {dtype_name} needs {expected}"
        )
    return sensor, seq, ts, dt, data, _label(obj, num_classes, required=False)


def _to_float32(data: bytes, dt: np.dtype[Any], input_shape: tuple[int, ...]) -> np.ndarray:
    """The data as float32 of the model's shape: a read-only view of ``data`` when it is
    float32 already (no copy), a converted copy otherwise; non-finite values rejected."""
    raw = np.frombuffer(data, dtype=dt).reshape(input_shape)
    if dt.kind == "f":
        if not np.isfinite(raw).all():
            raise ProtocolError("nonfinite", "data holds NaN or infinity")
        if dt.itemsize > 4 and np.abs(raw).max() > FLOAT32_MAX:
            raise ProtocolError("nonfinite", "data overflows float32")
    return raw.astype(np.float32, copy=False)


def decode_sample_fields(
    obj: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> Sample:
    """Validate a sample map against the model's input shape and class count."""
    sensor, seq, ts, dt, data, label = _sample_header(obj, input_shape, num_classes)
    return Sample(sensor, seq, ts, _to_float32(data, dt, input_shape), label)


def decode_ingest(
    raw: bytes,
    input_shape: tuple[int, ...],
    num_classes: int,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Sample | Feedback:
    """Decode and validate one ingest message (a sample or a label)."""
    obj = unpack_map(raw, max_bytes)
    kind = obj.get("type")
    if kind == "sample":
        return decode_sample_fields(obj, input_shape, num_classes)
    return _decode_other(obj, kind, num_classes)


def _decode_other(obj: dict[str, Any], kind: object, num_classes: int) -> Feedback:
    """An ingest message that is not a sample: a label, or an error."""
    if kind == "label":
        label = _label(obj, num_classes, required=True)
        assert label is not None
        return Feedback(_sensor(obj), _seq(obj), label)
    raise ProtocolError("type", f"unknown message type {kind!r} (expected 'sample' or 'label')")


F32 = DTYPES["float32"]


def decode_ingest_many(
    raws: list[bytes],
    input_shape: tuple[int, ...],
    num_classes: int,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> list[Sample | Feedback | ProtocolError]:
    """Decode a batch of ingest messages, one result per message in order (the message or
    the error that rejects it); the same checks as :func:`decode_ingest`. float32 samples
    (the common case) are finite-checked together and share one array: each ``x`` is a
    read-only row of it, so the data is copied once for the whole batch."""
    out: list[Sample | Feedback | ProtocolError | None] = []
    fast: list[tuple[int, str, int, float, int | None]] = []  # float32 samples, checked below
    datas: list[bytes] = []
    for raw in raws:
        try:
            obj = unpack_map(raw, max_bytes)
            kind = obj.get("type")
            if kind != "sample":
                out.append(_decode_other(obj, kind, num_classes))
                continue
            sensor, seq, ts, dt, data, label = _sample_header(obj, input_shape, num_classes)
            if dt == F32:
                fast.append((len(out), sensor, seq, ts, label))
                datas.append(data)
                out.append(None)  # set below
            else:
                out.append(Sample(sensor, seq, ts, _to_float32(data, dt, input_shape), label))
        except ProtocolError as exc:
            out.append(exc)
    if fast:
        X = np.frombuffer(b"".join(datas), dtype=F32).reshape(len(fast), *input_shape)
        finite = np.isfinite(X.reshape(len(fast), -1)).all(axis=1).tolist()
        for (i, sensor, seq, ts, label), x, ok in zip(fast, X, finite, strict=True):
            out[i] = (
                Sample(sensor, seq, ts, x, label)
                if ok
                else ProtocolError("nonfinite", "data holds NaN or infinity")
            )
    return cast(list[Sample | Feedback | ProtocolError], out)  # every None was set above
