"""Configuration sections of the ingest sources (``[ingest]``, ``[ingest.curve]``,
``[serial]`` in agent.toml); validated with the rest by :mod:`edge_agent.service.config`
(field metadata: ``choices``, ``range`` (lo, hi), ``length`` (lo, hi) of a string)."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.ingest.protocol import DEFAULT_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class CurveConfig:
    """Optional CURVE encryption and authentication of the ingest socket (zmq.auth)."""

    enabled: bool = False
    secret_key: str = ""  # the agent's certificate (zmq.auth.create_certificates)
    authorized_keys: str = ""  # bind mode: directory of accepted publisher .key files
    server_public_key: str = ""  # connect mode: the publisher's public certificate


@dataclass(frozen=True)
class IngestConfig:
    """The ZeroMQ ingest socket and the bounded queue behind it."""

    socket: str = field(default="sub", metadata={"choices": ("sub", "pull")})
    mode: str = field(default="bind", metadata={"choices": ("bind", "connect")})
    endpoints: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5556"])
    rcvhwm: int = field(default=10000, metadata={"range": (1, 10_000_000)})
    max_message_bytes: int = field(
        default=DEFAULT_MAX_MESSAGE_BYTES, metadata={"range": (64, 64 << 20)}
    )
    # The hard ceiling on one ZeroMQ frame (ZMQ_MAXMSGSIZE): frames above
    # max_message_bytes and up to this are received and counted as "oversized"; a larger
    # one makes ZeroMQ close the publisher's connection (counted as a transport
    # disconnect). It bounds the memory one frame can take.
    max_frame_bytes: int = field(default=64 << 20, metadata={"range": (64, 1 << 30)})
    queue_capacity: int = field(default=1024, metadata={"range": (1, 1_000_000)})
    # SUB only: topic prefixes (first frame of the two-frame form) to receive; "" is all.
    # Behind `edge-agent proxy`, e.g. ["board-7/"] takes only this board's messages.
    topics: list[str] = field(default_factory=lambda: [""])
    curve: CurveConfig = field(default_factory=CurveConfig)


@dataclass(frozen=True)
class SerialConfig:
    """An optional serial sensor feeding the same queue."""

    enabled: bool = False
    port: str = "/dev/ttyUSB0"  # a device path or a pyserial URL such as loop://
    baud: int = field(default=115200, metadata={"range": (1, 100_000_000)})
    # "line" (text values) or "frame" (binary, see protocol.md)
    framing: str = field(default="line", metadata={"choices": ("line", "frame")})
    sensor: str = field(default="serial0", metadata={"length": (1, 64)})
    reconnect_s: float = field(default=1.0, metadata={"range": (0.01, 3600)})
