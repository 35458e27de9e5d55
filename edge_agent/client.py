"""Client side of the agent: a sample publisher and a status client (a library).

Library use::

    with Publisher("tcp://127.0.0.1:5556") as pub:
        pub.send_sample("watch-1", seq, x, label=None)
    result = StatusClient("ipc:///run/edge-agent/status.sock").request("status")
    # an agent's CURVE status socket: its public key, and this client's key pair
    agent = AgentAddress.parse("tcp://board-7:5559 board-7.key")
    StatusClient(agent.endpoint, server_key=agent.server_key, client_key=load_secret(f))

``edge-agent publish`` and ``edge-agent status`` (:mod:`edge_agent.cli`) are built on it.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.auth

from edge_agent.curve_keys import KeyFileError, parse_public
from edge_agent.ingest.control import decode_reply, encode_request
from edge_agent.ingest.protocol import ProtocolError, encode_feedback, encode_sample

DEFAULT_INGEST = "tcp://127.0.0.1:5556"
DEFAULT_STATUS = "ipc://" + os.path.join(
    os.environ.get("RUNTIME_DIRECTORY", "/run/edge-agent"), "status.sock"
)


class ClientError(RuntimeError):
    """The agent could not be reached or answered with an error."""


class Publisher:
    """Sends protocol v1 messages to an agent's ingest socket.

    ``socket="pub"`` (matching the agent's default SUB) uses an XPUB socket and waits for
    the agent's subscription before the first send, so nothing is lost to ZeroMQ's slow
    joiner; ``"push"`` matches an agent with a PULL socket. With ``topic`` every message
    goes in the two-frame form (topic, payload), e.g. to agents behind ``edge-agent proxy``
    that subscribe to their board's topic.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_INGEST,
        socket: str = "pub",
        bind: bool = False,
        sndhwm: int = 100_000,
        curve_secret_key: str = "",
        curve_server_key: str = "",
        wait_s: float = 10.0,
        topic: str = "",
    ) -> None:
        self.topic = topic.encode()
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        kind = zmq.XPUB if socket == "pub" else zmq.PUSH
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.setsockopt(zmq.LINGER, 5000)
        if curve_secret_key:
            public, secret = zmq.auth.load_certificate(curve_secret_key)
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret or b""
            if bind:
                self.sock.curve_server = True
            else:
                self.sock.curve_serverkey = zmq.auth.load_certificate(curve_server_key)[0]
        (self.sock.bind if bind else self.sock.connect)(endpoint)
        self.endpoint = endpoint
        if kind == zmq.XPUB and wait_s > 0:
            self._wait_subscriber(wait_s)

    def _wait_subscriber(self, wait_s: float) -> None:
        """Wait for a subscription that takes our topic (XPUB drops what nobody took yet)."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0 and self.sock.poll(int(left * 1000)):
            msg = self.sock.recv()  # 0x01 + prefix: subscribe; 0x00 + prefix: unsubscribe
            if msg[:1] == b"\x01" and self.topic.startswith(msg[1:]):
                return
        self.close()
        what = f" to {self.topic.decode()!r}" if self.topic else ""
        raise ClientError(f"no agent subscribed{what} at {self.endpoint} within {wait_s:.0f} s")

    def send_raw(self, payload: bytes) -> None:
        """Send one already-encoded message (one frame, or topic + payload)."""
        if self.topic:
            self.sock.send_multipart([self.topic, payload])
        else:
            self.sock.send(payload)

    def send_sample(
        self,
        sensor: str,
        seq: int,
        x: np.ndarray,
        label: int | None = None,
        ts: float | None = None,
    ) -> None:
        """Send one sample (float32)."""
        self.send_raw(encode_sample(sensor, seq, x, time.time() if ts is None else ts, label))

    def send_label(self, sensor: str, seq: int, label: int) -> None:
        """Send a label for an earlier sample."""
        self.send_raw(encode_feedback(sensor, seq, label))

    def close(self) -> None:
        """Flush (up to the linger time) and close."""
        self.sock.close()
        self.ctx.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class AgentAddress:
    """An agent's status endpoint and, for its CURVE endpoint, its public key."""

    endpoint: str
    server_key: bytes | None = None  # Z85; set: the connection uses CURVE

    @classmethod
    def parse(cls, text: str) -> AgentAddress:
        """``ENDPOINT [KEY]``: KEY is the agent's public key (40 Z85 characters) or its
        certificate file (``server.key`` from the agent's state directory)."""
        parts = text.split()
        if not parts or len(parts) > 2:
            raise ValueError(f"{text!r}: expected ENDPOINT [SERVER_KEY]")
        if not parts[0].startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"{parts[0]!r} is not a tcp://, ipc:// or inproc:// endpoint")
        if len(parts) == 1:
            return cls(parts[0])
        if not parts[0].startswith("tcp://"):
            raise ValueError(f"{parts[0]}: a server key goes with a tcp:// endpoint only")
        try:
            return cls(parts[0], parse_public(parts[1]))
        except KeyFileError as exc:
            raise ValueError(str(exc)) from None

    def __str__(self) -> str:
        return self.endpoint


class StatusClient:
    """Sends control requests to the agent's status socket (a DEALER, so a timed-out
    request never wedges the client). With ``server_key`` (the agent's public key) and
    ``client_key`` (this client's (public, secret) pair) it speaks CURVE."""

    def __init__(
        self,
        endpoint: str = DEFAULT_STATUS,
        timeout_s: float = 5.0,
        server_key: bytes | None = None,
        client_key: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.curve = server_key is not None
        self._ids = itertools.count(1)
        if server_key is not None and client_key is None:
            raise ClientError(
                f"{endpoint}: a CURVE endpoint needs this client's key pair "
                "(create one with `edge-agent keys client`)"
            )
        if endpoint.startswith("ipc://") and not Path(endpoint[6:]).exists():
            raise ClientError(
                f"no status socket at {endpoint[6:]} (is the agent running? "
                "as another user, run with sudo or use --endpoint tcp://...)"
            )
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if server_key is not None and client_key is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey = client_key
            self.sock.curve_serverkey = server_key
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ClientError(f"{endpoint}: {exc}") from None

    def request(self, cmd: str, bundle: bytes | None = None) -> dict[str, Any]:
        """Send ``cmd`` (``bundle``: what a ``push`` carries) and return the reply's
        result; raise ClientError on an error reply or when no reply comes within the
        timeout (also what a CURVE server that refused our key looks like)."""
        req_id = next(self._ids)
        self.sock.send_multipart([b"", encode_request(cmd, req_id, bundle)])
        deadline = time.monotonic() + self.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                break
            frames = self.sock.recv_multipart()
            try:
                reply = decode_reply(frames[-1])
            except ProtocolError as exc:
                raise ClientError(f"bad reply from {self.endpoint}: {exc}") from None
            if reply.get("id") not in (req_id, None):
                continue  # a late answer to an earlier, timed-out request
            if not reply.get("ok"):
                err = reply.get("error") or {}
                raise ClientError(f"agent refused {cmd!r}: {err.get('code')}: {err.get('message')}")
            result: dict[str, Any] = reply.get("result") or {}
            return result
        curve = " (CURVE: is this client's key allowed there?)" if self.curve else ""
        raise ClientError(f"no reply from {self.endpoint} within {self.timeout_s:.1f} s{curve}")

    def close(self) -> None:
        """Close the socket."""
        self.sock.close(linger=0)
        self.ctx.term()

    def __enter__(self) -> StatusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def status_client(
    agent: str | AgentAddress, timeout_s: float, client_key: tuple[bytes, bytes] | None = None
) -> StatusClient:
    """A client for ``agent`` (an endpoint, or an address with the agent's public key)."""
    a = agent if isinstance(agent, AgentAddress) else AgentAddress(agent)
    return StatusClient(a.endpoint, timeout_s, a.server_key, client_key)


# ---------------------------------------------------------------- replay


@dataclass(frozen=True)
class StreamItem:
    """One element of a replayed stream."""

    index: int
    x: np.ndarray
    y: int
    labelled: bool


def stream(
    X: np.ndarray,
    y: np.ndarray,
    count: int,
    seed: int = 0,
    drift: Callable[[np.ndarray], np.ndarray] | None = None,
    drift_start: int = 0,
    labels_every: int = 0,
) -> Iterator[StreamItem]:
    """``count`` samples drawn from (X, y) in shuffled passes, drifted from ``drift_start``
    on, every ``labels_every``-th one labelled (0: none)."""
    rng = np.random.default_rng(seed)
    order: np.ndarray = np.empty(0, dtype=np.int64)
    for i in range(count):
        if i % len(X) == 0:
            order = rng.permutation(len(X))
        j = int(order[i % len(X)])
        x = X[j]
        if drift is not None and i >= drift_start:
            x = drift(x)
        yield StreamItem(i, x, int(y[j]), labels_every > 0 and (i + 1) % labels_every == 0)


def replay(
    pub: Publisher,
    items: Iterator[StreamItem],
    rate: float,
    sensor: str = "replay",
    feedback: bool = False,
    first_seq: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send a stream at ``rate`` samples/s (0: as fast as possible); labels go inside the
    sample or, with ``feedback``, as a separate label message right after it. Returns
    the number of samples sent."""
    t0 = time.perf_counter()
    sent = 0
    for item in items:
        if rate > 0:
            delay = t0 + item.index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        seq = first_seq + item.index
        inline = item.y if item.labelled and not feedback else None
        pub.send_sample(sensor, seq, item.x, label=inline)
        if item.labelled and feedback:
            pub.send_label(sensor, seq, item.y)
        sent += 1
        if on_progress is not None and sent % 1000 == 0:
            on_progress(sent)
    return sent
