"""The status server: a ROUTER socket answering control requests in its own thread.

Works with REQ and DEALER clients alike (the reply repeats the request's envelope).
Every request gets a reply: malformed, oversized or unknown ones an error reply with a
code and message. ``deferred`` commands (``checkpoint``, ``collect``, ``reload``,
``push``, ``rollback``) are carried out by the main loop; their reply is sent when the
main loop has done them (or failed to). The agent runs one server on its local endpoints
(ipc, plain tcp) and, with ``[status.curve]``, a second one on the CURVE endpoint.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import zmq

from edge_agent.ingest.control import (
    MAX_REQUEST_BYTES,
    Request,
    decode_request,
    encode_error,
    encode_reply,
)
from edge_agent.ingest.protocol import ProtocolError
from edge_agent.ingest.worker import ThreadWorker
from edge_agent.service.status_curve import CurveGuard

log = logging.getLogger(__name__)

POLL_MS = 50
# libzmq disconnects a peer sending more than this, or twice the push limit if larger
# (no reply possible); requests between the limits and it get an "oversized" error reply
HARD_MAX_BYTES = 1 << 20


class StatusServer(ThreadWorker):
    """Answers ``handlers`` in this thread and ``deferred`` commands via the main loop."""

    thread_name = "status"

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        endpoints: list[str],
        handlers: dict[str, Callable[[], dict[str, Any]]],
        deferred: dict[str, Callable[[Request], Future[dict[str, Any]]]],
        on_error: Callable[[str], None],
        max_push_bytes: int = 0,
        curve: CurveGuard | None = None,
    ) -> None:
        self.handlers = handlers
        self.deferred = deferred
        self.on_error = on_error
        self.max_push_bytes = max_push_bytes
        self.curve = curve
        self._pending: list[tuple[list[bytes], Any, str, Future[dict[str, Any]]]] = []
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, max(HARD_MAX_BYTES, 2 * max_push_bytes))
        self.sock.setsockopt(zmq.SNDHWM, 1000)
        try:
            if curve is not None:
                curve.secure(self.sock)
            for ep in endpoints:
                if ep.startswith("ipc://"):
                    _prepare_ipc(Path(ep[len("ipc://") :]))
                self.sock.bind(ep)
        except (zmq.ZMQError, OSError) as exc:
            self.sock.close(linger=0)
            raise RuntimeError(f"status socket {', '.join(endpoints)}: {exc}") from None
        self.endpoints = endpoints
        super().__init__()

    def _release_unstarted(self) -> None:
        self.sock.close(linger=0)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop answering and close the socket (removing the ipc file)."""
        super().stop(timeout)
        if self.curve is not None:
            self.curve.close()
        for ep in self.endpoints:
            if ep.startswith("ipc://"):
                Path(ep[len("ipc://") :]).unlink(missing_ok=True)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        monitor = self.curve.monitor if self.curve is not None else None
        if monitor is not None:
            poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                self._finish_pending()
                ready = dict(poller.poll(POLL_MS))
                if monitor is not None and monitor in ready:
                    assert self.curve is not None
                    self.curve.drain_monitor()
                if self.sock not in ready:
                    continue
                while True:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(frames)
        except zmq.ZMQError as exc:
            if not self._stop.is_set():
                log.error("status socket failed: %s", exc)
        finally:
            self.sock.close(linger=0)

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return  # nothing to reply to
        envelope, payload = frames[:-1], frames[-1]
        try:
            req = decode_request(payload, MAX_REQUEST_BYTES, self.max_push_bytes)
        except ProtocolError as exc:
            self.on_error(exc.reason)
            self._send(envelope, encode_error(None, exc.reason, exc.detail))
            return
        if req.cmd in self.deferred:
            self._pending.append((envelope, req.id, req.cmd, self.deferred[req.cmd](req)))
            return
        try:
            result = self.handlers[req.cmd]()
        except Exception as exc:  # a failing handler must not kill the status thread
            log.exception("status command %s failed", req.cmd)
            self._send(envelope, encode_error(req.id, "internal", f"{type(exc).__name__}: {exc}"))
            return
        self._send(envelope, encode_reply(req.id, req.cmd, result))

    def _finish_pending(self) -> None:
        still = []
        for envelope, req_id, cmd, fut in self._pending:
            if not fut.done():
                still.append((envelope, req_id, cmd, fut))
                continue
            exc = fut.exception()
            if exc is None:
                self._send(envelope, encode_reply(req_id, cmd, fut.result()))
            else:
                self._send(envelope, encode_error(req_id, f"{cmd}_failed", str(exc)))
        self._pending = still

    def _send(self, envelope: list[bytes], reply: bytes) -> None:
        try:
            self.sock.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.Again:
            log.warning("status reply dropped: client not reading")


def _prepare_ipc(path: Path) -> None:
    """Make room for an ipc socket file: create the directory, remove a stale socket."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_socket():
        raise OSError(f"{path} exists and is not a socket")
    if len(os.fsencode(path)) > 107:
        raise OSError(f"{path} is too long for a unix socket path (max 107 bytes)")
    path.unlink(missing_ok=True)
