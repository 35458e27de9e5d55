"""CURVE for the remote status socket: the server key, the allow-list of client keys
(checked by a ZAP handler, ``zmq.auth``'s ThreadAuthenticator) and the count of refused
handshakes (read from the socket's monitor).

The guard owns a ZeroMQ context of its own: a context has one ZAP endpoint, and the
ingest socket's CURVE (``[ingest.curve]``) may run an authenticator in the agent's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from edge_agent.curve_keys import KeyFileError, load_allowed, load_secret, server_pair
from edge_agent.service.config import StatusCurveConfig

log = logging.getLogger("edge_agent.agent")

ZAP_DOMAIN = "edge-agent-status"
# handshakes refused, by the monitor event: an unknown client key (ZAP said 400); any
# other failed handshake (a plaintext client, a wrong server key, a peer gone during it:
# libzmq reports a plaintext client as a protocol error or, when it hangs up first,
# without detail)
REFUSALS: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "unknown_key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake",
}
# what status reports under control.refused (bad_key_file: an unusable allow-list file)
REFUSED_REASONS = ("unknown_key", "handshake", "bad_key_file")


class CurveGuard:
    """The server side of CURVE for one socket; ``count(reason)`` is called per refusal
    and per unusable allow-list file."""

    def __init__(
        self, cfg: StatusCurveConfig, state_dir: Path, count: Callable[[str], None]
    ) -> None:
        self.cfg = cfg
        self.count = count
        if cfg.server_key:
            self.public, self.secret = load_secret(cfg.server_key)
            self.public_file = Path(cfg.server_key).with_suffix(".key")
        else:
            self.public, self.secret, self.public_file = server_pair(state_dir)
        self._lock = threading.Lock()
        self._allowed: frozenset[bytes] = frozenset()
        self.reload_keys()
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("edge_agent.zap"))
        self.auth.start()
        self.auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)
        self.monitor: zmq.Socket[bytes] | None = None

    def reload_keys(self) -> int:
        """Read the allow-list again (at start and on SIGHUP); return how many keys."""
        keys, errors = load_allowed(self.cfg.authorized_keys)
        for err in errors:
            log.error("status.curve.authorized_keys: skipping %s", err)
            self.count("bad_key_file")
        with self._lock:
            self._allowed = frozenset(keys)
        log.info(
            "remote status socket: %d client key(s) allowed from %s",
            len(keys),
            self.cfg.authorized_keys,
        )
        return len(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: whether the client's public key (Z85) is allowed."""
        with self._lock:
            return key in self._allowed

    def secure(self, sock: zmq.Socket[bytes]) -> None:
        """Make ``sock`` a CURVE server in our ZAP domain, with a monitor for refusals."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN.encode()
        self.monitor = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        )

    def drain_monitor(self) -> None:
        """Count the refused handshakes the monitor reported (the socket's thread)."""
        if self.monitor is None:
            return
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = parse_monitor_message(frames)
            reason = REFUSALS.get(event["event"], "handshake")
            log.warning("remote status socket: refused a client (%s, %s)", reason, event["value"])
            self.count(reason)

    def close(self) -> None:
        """Stop the authenticator and close the context (after the socket is closed)."""
        if self.monitor is not None:
            self.monitor.close(linger=0)
            self.monitor = None
        self.auth.stop()
        self.ctx.term()


def describe(guard: CurveGuard) -> str:
    """One line for the log: where clients find the server's public key."""
    return f"server key {guard.public.decode()} ({guard.public_file})"


__all__ = ["REFUSED_REASONS", "CurveGuard", "KeyFileError", "describe"]
