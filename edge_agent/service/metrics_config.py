"""The ``[metrics]`` section: Prometheus exposition over HTTP and/or a textfile.

Kept apart from the exporter so that reading a configuration never imports
prometheus_client (an agent with metrics off does not load it at all).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_BOARD = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus metrics: off by default; HTTP on loopback unless ``allow_remote``."""

    http: bool = False  # serve /metrics over HTTP at ``listen``
    listen: str = "127.0.0.1:9941"  # HOST:PORT ([::1]:PORT for IPv6; port 0: any free one)
    allow_remote: bool = False  # permit a listen address other than loopback
    textfile: str = ""  # node_exporter textfile-collector file (*.prom); "" disables
    textfile_interval_s: float = 15.0
    board: str = ""  # the board label on every metric; "" means the hostname

    def __post_init__(self) -> None:
        host, port = self.host_port  # raises ValueError on a malformed address
        if not self.allow_remote and host not in LOOPBACK:
            raise ValueError(
                f"listen: host {host!r} is not loopback; set "
                "metrics.allow_remote = true to expose it (and widen "
                "IPAddressAllow= in the unit)"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"listen: port {port} is not in 0..65535")
        if not 0.5 <= self.textfile_interval_s <= 86400:
            raise ValueError(
                f"textfile_interval_s: must be in 0.5..86400, not {self.textfile_interval_s!r}"
            )
        if self.textfile and not self.textfile.endswith(".prom"):
            raise ValueError(
                f"textfile: {self.textfile!r} must end in .prom (node_exporter reads only those)"
            )
        if self.board and not _BOARD.match(self.board):
            raise ValueError(f"board: {self.board!r} must be 1-64 letters, digits or _.:-")

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        m = re.fullmatch(r"\[([0-9A-Fa-f:]+)\]:(\d+)|([^:\[\]]+):(\d+)", self.listen)
        if not m:
            raise ValueError(f"listen: {self.listen!r} is not HOST:PORT")
        host = m.group(1) or m.group(3)
        return host, int(m.group(2) or m.group(4))

    @property
    def board_name(self) -> str:
        """The board identity: the configured one or the hostname."""
        return self.board or socket.gethostname()

    @property
    def enabled(self) -> bool:
        """Whether any exposition is on."""
        return self.http or bool(self.textfile)
