"""``edge-agent proxy``: one fan-in address for many publishers and many agents.

ZeroMQ's own forwarder (``zmq.proxy_steerable``) between an XSUB socket that publishers
connect to and an XPUB socket that agents connect to (``[ingest] mode = "connect"``).
Subscriptions travel upstream, so an agent subscribed to ``board-7/`` only receives
messages whose first frame (the topic of the protocol's two-frame form) starts with it.
The counters are libzmq's: the control socket's ``STATISTICS`` command returns frames
and bytes per socket and direction (libzmq's documentation says "messages", but the
libzmq 4.3.5 that pyzmq bundles counts every frame: a sample in the protocol's two-frame
form is two); nothing here counts per message, so the forwarding path stays in C.
"""

from __future__ import annotations

import logging
import struct
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
    """libzmq's proxy counters: frames and bytes per socket and direction."""

    frames: dict[tuple[str, str], int]
    bytes: dict[tuple[str, str], int]

    @property
    def forwarded(self) -> int:
        """Frames forwarded from publishers to agents."""
        return self.frames[("backend", "out")]


class Proxy:
    """The XSUB/XPUB forwarder in its own thread, steerable over an inproc PAIR."""

    def __init__(self, cfg: ProxyConfig, ctx: zmq.Context[zmq.Socket[bytes]] | None = None):
        self.cfg = cfg
        self.ctx: zmq.Context[zmq.Socket[bytes]] = ctx or zmq.Context()
        self.started = time.monotonic()
        self._lock = threading.Lock()  # the control socket is used by scrapes and the main loop
        self._sockets: list[zmq.Socket[bytes]] = []
        ctl_ep = f"inproc://proxy-control-{id(self)}"
        try:
            self.front = self._socket(zmq.XSUB, cfg.frontend, zmq.RCVHWM, cfg.rcvhwm)
            self.back = self._socket(zmq.XPUB, cfg.backend, zmq.SNDHWM, cfg.sndhwm)
            self.capture = (
                self._socket(zmq.PUB, [cfg.capture], zmq.SNDHWM, cfg.sndhwm)
                if cfg.capture
                else None
            )
            self.control = self._socket(zmq.PAIR, [ctl_ep], zmq.LINGER, 0)
            self._peer = self.ctx.socket(zmq.PAIR)
            self._peer.connect(ctl_ep)
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
        try:
            zmq.proxy_steerable(self.front, self.back, self.capture, self._peer)
        except zmq.ZMQError as exc:  # the context was terminated, or a socket failed
            self.error = str(exc)
            log.error("proxy stopped: %s", exc)

    def stats(self, timeout_ms: int = 2000) -> ProxyStats:
        """libzmq's counters (raises RuntimeError when the proxy does not answer)."""
        with self._lock:
            if not self.alive():
                raise RuntimeError(f"proxy not running ({self.error or 'stopped'})")
            self.control.send(b"STATISTICS")
            if not self.control.poll(timeout_ms):
                raise RuntimeError("proxy did not answer STATISTICS")
            raw = self.control.recv_multipart()
        values = [struct.unpack("=Q", f)[0] for f in raw]
        if len(values) != 8:
            raise RuntimeError(f"proxy STATISTICS gave {len(values)} values, expected 8")
        # libzmq order: frontend frames in, bytes in, frames out, bytes out; then the backend
        frames = {k: values[2 * i] for i, k in enumerate(STAT_KEYS)}
        nbytes = {k: values[2 * i + 1] for i, k in enumerate(STAT_KEYS)}
        return ProxyStats(frames, nbytes)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop forwarding and close the sockets."""
        if self._thread.is_alive():
            with self._lock:
                self.control.send(b"TERMINATE")
            self._thread.join(timeout)
        self.close()

    def close(self) -> None:
        """Close every socket (the context stays for its owner)."""
        for s in self._sockets:
            s.close(linger=0)
        if hasattr(self, "_peer"):
            self._peer.close(linger=0)
