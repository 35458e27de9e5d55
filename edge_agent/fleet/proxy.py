"""``edge-agent proxy``: one fan-in address for many publishers and many agents.

An XSUB socket that publishers connect to and an XPUB socket that agents connect to
(``[ingest] mode = "connect"``), with a forwarding loop between them in its own thread.
Subscriptions travel upstream, so an agent subscribed to ``board-7/`` only receives
messages whose first frame (the topic of the protocol's two-frame form) starts with it.

The loop counts messages, frames and bytes per socket and direction. libzmq's own
forwarder (``zmq.proxy_steerable``) would forward in C, but the libzmq 4.3.5 that pyzmq
bundles counts frames there, not messages (a two-frame sample counted twice, a one-frame
one once: no count of samples can be had from it). This loop receives whole messages
(``recv_multipart``), drains each socket in bursts and forwards the frames as they came.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import zmq

log = logging.getLogger(__name__)

STAT_KEYS = (
    ("frontend", "in"),
    ("frontend", "out"),
    ("backend", "in"),
    ("backend", "out"),
)
BURST = 1000  # messages forwarded from one socket before the other gets its turn
POLL_MS = 100  # how often the loop looks at the stop flag when idle


@dataclass(frozen=True)
class ProxyConfig:
    """Where the proxy listens and how much it buffers per peer."""

    frontend: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5556"])
    backend: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5560"])
    capture: str = ""  # optional: a PUB socket bound here gets a copy of every message
    rcvhwm: int = 100_000  # per publisher
    sndhwm: int = 100_000  # per agent; beyond it libzmq drops for that agent (PUB rules)


@dataclass(frozen=True)
class ProxyStats:
    """Messages, frames and bytes per socket and direction."""

    messages: dict[tuple[str, str], int]
    frames: dict[tuple[str, str], int]
    bytes: dict[tuple[str, str], int]

    @property
    def forwarded(self) -> int:
        """Messages forwarded from publishers to agents."""
        return self.messages[("backend", "out")]


class _Counts:
    """One direction's counters, updated by the forwarding thread only (ints under the
    GIL: a reader sees each value whole)."""

    __slots__ = ("bytes", "frames", "messages")

    def __init__(self) -> None:
        self.messages = self.frames = self.bytes = 0


class Proxy:
    """The XSUB/XPUB forwarder in its own thread."""

    def __init__(self, cfg: ProxyConfig, ctx: zmq.Context[zmq.Socket[bytes]] | None = None):
        self.cfg = cfg
        self.ctx: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context()
        self.started = time.monotonic()
        self._sockets: list[zmq.Socket[bytes]] = []
        self._stop = threading.Event()
        self._up, self._down = _Counts(), _Counts()  # publishers -> agents; subscriptions
        try:
            self.front = self._socket(zmq.XSUB, cfg.frontend, zmq.RCVHWM, cfg.rcvhwm)
            self.back = self._socket(zmq.XPUB, cfg.backend, zmq.SNDHWM, cfg.sndhwm)
            self.capture = (
                self._socket(zmq.PUB, [cfg.capture], zmq.SNDHWM, cfg.sndhwm)
                if cfg.capture
                else None
            )
        except zmq.ZMQError as exc:
            self.close()
            raise RuntimeError(f"proxy: {exc}") from None
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)
        self.error: str | None = None

    def _socket(self, kind: int, endpoints: list[str], opt: int, value: int) -> zmq.Socket[bytes]:
        s = self.ctx.socket(kind)
        self._sockets.append(s)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(opt, value)
        for ep in endpoints:
            try:
                s.bind(ep)
            except zmq.ZMQError as exc:
                raise zmq.ZMQError(exc.errno, f"cannot bind {ep}: {exc.strerror}") from None
        return s

    def endpoints(self) -> dict[str, str]:
        """The bound frontend and backend (wildcard ports resolved)."""
        return {
            "frontend": self.front.getsockopt_string(zmq.LAST_ENDPOINT),
            "backend": self.back.getsockopt_string(zmq.LAST_ENDPOINT),
        }

    def start(self) -> None:
        """Start forwarding."""
        self._thread.start()

    def alive(self) -> bool:
        """Whether the forwarding thread runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if self.front in ready:
                    self._forward(self.front, self.back, self._up)
                if self.back in ready:  # subscriptions and unsubscriptions, upstream
                    self._forward(self.back, self.front, self._down)
        except zmq.ZMQError as exc:  # the context was terminated, or a socket failed
            if not self._stop.is_set():
                self.error = str(exc)
                log.error("proxy stopped: %s", exc)

    def _forward(self, src: zmq.Socket[bytes], dst: zmq.Socket[bytes], c: _Counts) -> None:
        """Up to BURST whole messages from ``src`` to ``dst`` (and the capture socket),
        frame by frame as they come (no list per message); a message is counted before
        its last frame is sent: whoever received one sees it counted."""
        recv, send, more = src.recv, dst.send, src.get
        capture = self.capture
        RCVMORE, SNDMORE, NOBLOCK = zmq.RCVMORE, zmq.SNDMORE, zmq.NOBLOCK
        for _ in range(BURST):
            try:
                frame = recv(NOBLOCK)
            except zmq.Again:
                return
            while True:  # the rest of a message is there once its first frame is
                c.frames += 1
                c.bytes += len(frame)
                if more(RCVMORE):
                    send(frame, SNDMORE)  # XPUB and XSUB never block (PUB rules: drop)
                    if capture is not None:
                        capture.send(frame, SNDMORE)
                    frame = recv()
                    continue
                c.messages += 1
                send(frame)
                if capture is not None:
                    capture.send(frame)
                break

    def stats(self) -> ProxyStats:
        """The counters (raises RuntimeError when the forwarder is not running)."""
        if not self.alive():
            raise RuntimeError(f"proxy not running ({self.error or 'stopped'})")
        up, down = self._up, self._down
        # publishers' messages come in at the frontend and go out at the backend; the
        # agents' subscriptions the other way
        by_key = {
            ("frontend", "in"): up,
            ("backend", "out"): up,
            ("backend", "in"): down,
            ("frontend", "out"): down,
        }
        return ProxyStats(
            {k: v.messages for k, v in by_key.items()},
            {k: v.frames for k, v in by_key.items()},
            {k: v.bytes for k, v in by_key.items()},
        )

    def stop(self, timeout: float = 2.0) -> None:
        """Stop forwarding and close the sockets."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.close()

    def close(self) -> None:
        """Close every socket (the context stays for its owner)."""
        for s in self._sockets:
            s.close(linger=0)
