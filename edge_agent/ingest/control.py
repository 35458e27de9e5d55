"""The control half of the protocol (docs/protocol.md, "Status socket"): requests on the
status socket, their replies and errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from edge_agent.ingest.protocol import VERSION, ProtocolError, is_int, unpack_map, unpack_one

MAX_REQUEST_BYTES = 4096
COMMANDS = (
    "ping",
    "status",
    "metrics",
    "config",
    "checkpoint",
    "collect",
    "reload",
    "push",
    "rollback",
)


@dataclass(frozen=True)
class Request:
    """A control request on the status socket."""

    cmd: str
    id: int | str | None = None
    bundle: bytes | None = None  # ``push`` only: the model bundle's bytes


def encode_request(cmd: str, req_id: int | str | None = None, bundle: bytes | None = None) -> bytes:
    """Encode a control request (``bundle``: the bytes a ``push`` carries)."""
    msg: dict[str, Any] = {"v": VERSION, "type": "request", "cmd": cmd}
    if req_id is not None:
        msg["id"] = req_id
    if bundle is not None:
        msg["bundle"] = bundle
    return msgpack.packb(msg, use_bin_type=True)


def encode_reply(req_id: int | str | None, cmd: str | None, result: dict[str, Any]) -> bytes:
    """Encode a successful reply."""
    return msgpack.packb(
        {"v": VERSION, "type": "reply", "id": req_id, "cmd": cmd, "ok": True, "result": result},
        use_bin_type=True,
    )


def encode_error(req_id: int | str | None, code: str, message: str) -> bytes:
    """Encode an error reply."""
    return msgpack.packb(
        {
            "v": VERSION,
            "type": "reply",
            "id": req_id,
            "ok": False,
            "error": {"code": code, "message": message},
        },
        use_bin_type=True,
    )


def decode_request(
    raw: bytes, max_bytes: int = MAX_REQUEST_BYTES, max_bundle_bytes: int = 0
) -> Request:
    """Decode a control request; raise ProtocolError for anything malformed. Only a
    ``push`` may exceed ``max_bytes``, by its bundle of at most ``max_bundle_bytes``."""
    obj = unpack_map(raw, max_bytes + max_bundle_bytes)
    if obj.get("type") != "request":
        raise ProtocolError("type", f"expected type 'request', got {obj.get('type')!r}")
    req_id = obj.get("id")
    if req_id is not None and not (is_int(req_id) or isinstance(req_id, str)):
        raise ProtocolError("field", "'id' must be an integer or a string")
    cmd = obj.get("cmd")
    if cmd not in COMMANDS:
        raise ProtocolError("field", f"unknown command {cmd!r}; one of {list(COMMANDS)}")
    if cmd != "push":
        if len(raw) > max_bytes:
            raise ProtocolError("oversized", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit")
        return Request(cmd, req_id)
    bundle = obj.get("bundle")
    if not isinstance(bundle, bytes):
        raise ProtocolError("field", "'push' needs the bundle as msgpack bin 'bundle'")
    if len(bundle) > max_bundle_bytes:
        raise ProtocolError(
            "oversized",
            f"a bundle of {len(bundle)} bytes exceeds the {max_bundle_bytes}-byte push limit",
        )
    return Request(cmd, req_id, bundle)


def decode_reply(raw: bytes, max_bytes: int = 16 << 20) -> dict[str, Any]:
    """Decode a reply from the status socket (client side; generous limits)."""
    try:
        obj = unpack_one(raw, max_bytes, strict_map_key=False)
    except Exception as exc:
        raise ProtocolError("msgpack", f"cannot decode reply: {type(exc).__name__}") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION or obj.get("type") != "reply":
        raise ProtocolError("type", "not a v1 reply")
    return obj
