"""ZeroMQ ingest: a SUB or PULL socket (bind or connect), optional CURVE, in its own thread.

The socket is created and bound in the constructor (so a bad endpoint fails start-up
with a clear error) and then used only by the source's thread. A message is one frame
(the payload) or two frames (a topic, then the payload); a SUB socket receives the
configured topic prefixes only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from edge_agent.ingest import ipc
from edge_agent.ingest.config import IngestConfig
from edge_agent.ingest.intake import Intake
from edge_agent.ingest.protocol import ProtocolError
from edge_agent.ingest.worker import ThreadWorker

log = logging.getLogger(__name__)

POLL_MS = 100
# Messages decoded and enqueued together: large enough that per-batch costs (locks, the
# queue's wake-up) vanish per sample, small enough that inference starts on the first
# ones within a fraction of a millisecond.
DRAIN_BATCH = 128
# At most this much latency added to a message that arrives alone. Each wake-up costs
# tens of microseconds of Python (poll, drain, one intake batch): at 20,000/s, 1 ms
# instead of 0.5 took the thread from 13.9-14.1 to 12.2-12.8 us per message
# (bench.ingest_cost, pinned to one core).
GATHER_S = 0.001


def frame_ceiling(cfg: IngestConfig) -> int:
    """ZMQ_MAXMSGSIZE: ``max_frame_bytes``, never below ``max_message_bytes``."""
    return max(cfg.max_frame_bytes, cfg.max_message_bytes)


class ZmqSource(ThreadWorker):
    """Receives wire messages and hands them to the intake."""

    thread_name = "ingest-zmq"

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], cfg: IngestConfig, intake: Intake
    ) -> None:
        self.cfg = cfg
        self.intake = intake
        self._auth: ThreadAuthenticator | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        kind = zmq.SUB if cfg.socket == "sub" else zmq.PULL
        self.sock = ctx.socket(kind)
        try:
            self.sock.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
            self.sock.setsockopt(zmq.LINGER, 0)
            # Frames up to the hard ceiling reach intake and are counted as oversized; a
            # peer announcing a larger one is disconnected by libzmq before it is buffered
            # (docs/protocol.md, "Encoding rules").
            self.sock.setsockopt(zmq.MAXMSGSIZE, frame_ceiling(cfg))
            if kind == zmq.SUB:
                for topic in cfg.topics:
                    self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
            if cfg.curve.enabled:
                self._setup_curve(ctx)
            for ep in cfg.endpoints:
                if cfg.mode == "bind":
                    ipc.prepare_bind(ep)  # never replace a regular file with the socket
                    self.sock.bind(ep)
                else:
                    self.sock.connect(ep)
            # Read once here: a ZeroMQ socket belongs to one thread at a time (the source's
            # own from start on), and status asks from another while reloads close it.
            self._endpoints = (
                list(cfg.endpoints)
                if cfg.mode == "connect"
                else [*cfg.endpoints[:-1], self.sock.getsockopt_string(zmq.LAST_ENDPOINT)]
            )
            # Connections libzmq closes (a frame over MAXMSGSIZE, a peer gone) are seen only
            # here: counted as ingest_disconnects.
            self._monitor = self.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        except (zmq.ZMQError, OSError, ValueError) as exc:
            self._release()
            raise RuntimeError(
                f"ingest socket ({cfg.socket} {cfg.mode} {', '.join(cfg.endpoints)}): {exc}"
            ) from None
        super().__init__()

    def _setup_curve(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        public, secret = zmq.auth.load_certificate(self.cfg.curve.secret_key)
        if secret is None:
            raise ValueError(f"{self.cfg.curve.secret_key} holds no secret key")
        self.sock.curve_publickey = public
        self.sock.curve_secretkey = secret
        if self.cfg.mode == "bind":
            keys = Path(self.cfg.curve.authorized_keys)
            if not keys.is_dir():
                raise ValueError(f"ingest.curve.authorized_keys: {keys} is not a directory")
            self._auth = ThreadAuthenticator(ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(keys))
            self.sock.curve_server = True
        else:
            server_public, _ = zmq.auth.load_certificate(self.cfg.curve.server_public_key)
            self.sock.curve_serverkey = server_public

    @property
    def endpoints(self) -> list[str]:
        """The endpoints actually bound (wildcard ports resolved) or connected."""
        return list(self._endpoints)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if not ready:
                    continue
                if self._monitor is not None and self._monitor in ready:
                    self._count_disconnects()
                while self._drain() == DRAIN_BATCH and not self._stop.is_set():
                    pass
                # Let the next messages gather in ZeroMQ's queue: one wake-up then takes
                # several, instead of one wake-up (and thread switch) per message.
                time.sleep(GATHER_S)
        except zmq.ZMQError as exc:
            if not self._stop.is_set():
                log.error("ingest socket failed: %s", exc)
        finally:
            self._close_monitor()
            self.sock.close(linger=0)

    def _drain(self) -> int:
        """Receive what is waiting, up to DRAIN_BATCH messages, without blocking, and hand
        the payloads to intake as one batch; the number of messages received."""
        payloads: list[bytes] = []
        n = 0
        recv = self.sock.recv
        while n < DRAIN_BATCH:
            try:
                # a Frame tells whether more parts follow without a getsockopt call, and
                # .bytes copies once: a third of the receive's CPU of recv() + rcvmore
                frame = recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            n += 1
            if not frame.more:
                payloads.append(frame.bytes)
                continue
            # parts arrive together
            frames = [frame.bytes, *self.sock.recv_multipart(zmq.NOBLOCK)]
            if len(frames) == 2:
                payloads.append(frames[1])
            else:  # decode what came before in order, then count this one
                self._submit(payloads)
                payloads = []
                self.intake.reject(
                    ProtocolError("frames", f"{len(frames)} frames (expected 1 or 2)")
                )
        self._submit(payloads)
        return n

    def _submit(self, payloads: list[bytes]) -> None:
        if payloads:
            self.intake.submit_raw_many(payloads)

    def _count_disconnects(self) -> None:
        assert self._monitor is not None
        while True:
            try:
                frames = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = int.from_bytes(frames[0][:2], "little") if len(frames) == 2 else 0
            if event == zmq.EVENT_DISCONNECTED:
                self.intake.metrics.inc("ingest_disconnects")

    def _close_monitor(self) -> None:
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):  # the socket may be closed already
                self.sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None

    def _release_unstarted(self) -> None:
        self._close_monitor()
        self.sock.close(linger=0)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop receiving; the thread closes the socket on its way out."""
        super().stop(timeout)
        self._release()
        if self.cfg.mode == "bind":
            ipc.remove_bound(self.cfg.endpoints)

    def _release(self) -> None:
        if self._thread_less():
            self._close_monitor()
            self.sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def _thread_less(self) -> bool:
        return not hasattr(self, "_thread")
