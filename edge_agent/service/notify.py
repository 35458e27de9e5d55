"""systemd notification (sd_notify) over ``$NOTIFY_SOCKET``; a no-op outside systemd."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

# A first start without AOT kernels JIT-compiles them: minutes on a Pi, longer than the
# unit's TimeoutStartSec. While starting, the agent asks systemd for more time in steps
# (EXTEND_TIMEOUT_USEC, systemd >= 236), up to a bound, so a start that hangs still fails.
EXTEND_EVERY_S = 10.0
EXTEND_BY_S = 30.0
EXTEND_LIMIT_S = 1800.0


class Notifier:
    """Sends ``READY=1``, ``STATUS=...``, ``WATCHDOG=1`` and ``STOPPING=1`` datagrams."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        self._sock: socket.socket | None = None
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        if addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        wanted = usec.isdigit() and (not pid or pid == str(os.getpid()))
        # Ping at half the timeout, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if wanted else None
        self._status = ""

    @property
    def enabled(self) -> bool:
        """Whether a notification socket is configured."""
        return self._sock is not None

    def send(self, *fields: str) -> None:
        """Send one notification; failures are logged, never raised."""
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(fields).encode(), self._addr)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self._addr, exc)

    def ready(self, status: str) -> None:
        """Tell systemd the service is up."""
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """Update the one-line status shown by ``systemctl status``."""
        self._status = status
        self.send(f"STATUS={status}")

    @contextlib.contextmanager
    def starting(
        self,
        every_s: float = EXTEND_EVERY_S,
        extend_s: float = EXTEND_BY_S,
        limit_s: float = EXTEND_LIMIT_S,
    ) -> Iterator[None]:
        """Keep extending systemd's start timeout while the block runs, for at most
        ``limit_s``; the status line says how long the start has taken so far."""
        if self._sock is None:
            yield
            return
        done = threading.Event()
        t0 = time.monotonic()

        def extend() -> None:
            while not done.wait(every_s) and time.monotonic() - t0 < limit_s:
                took = time.monotonic() - t0
                self.send(
                    f"EXTEND_TIMEOUT_USEC={int(extend_s * 1e6)}",
                    f"STATUS={self._status or 'starting'} ({took:.0f} s)",
                )

        thread = threading.Thread(target=extend, name="start-extend", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def watchdog(self) -> None:
        """Keep the watchdog from firing."""
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        """Announce a configuration reload."""
        self.send("RELOADING=1", "STATUS=reloading configuration")

    def stopping(self) -> None:
        """Announce shutdown."""
        self.send("STOPPING=1", "STATUS=stopping")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
