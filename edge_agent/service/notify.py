"""systemd notification (sd_notify) over ``$NOTIFY_SOCKET``; a no-op outside systemd."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


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
        self.send(f"STATUS={status}")

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
