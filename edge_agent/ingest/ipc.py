"""Socket files of ``ipc://`` endpoints the agent binds: checked before binding (never
replace a file that is not a socket), removed after a clean close."""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "ipc://"
MAX_PATH_BYTES = 107  # sun_path


def ipc_path(endpoint: str) -> Path | None:
    """The file of an ``ipc://`` endpoint (None for tcp, inproc, or an abstract socket)."""
    if not endpoint.startswith(PREFIX) or endpoint.startswith(PREFIX + "@"):
        return None
    return Path(endpoint[len(PREFIX) :])


def prepare_bind(endpoint: str) -> None:
    """Make room for binding ``endpoint``: create its directory and remove a stale socket
    file; OSError when the path holds anything else (libzmq would replace it) or is too
    long for a unix socket."""
    path = ipc_path(endpoint)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or (path.exists() and not path.is_socket()):
        raise OSError(f"{path} exists and is not a socket: not replacing it")
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise OSError(f"{path} is too long for a unix socket path (max {MAX_PATH_BYTES} bytes)")
    path.unlink(missing_ok=True)


def remove_bound(endpoints: list[str]) -> None:
    """Remove the socket files of bound ``ipc://`` endpoints after their socket closed."""
    for ep in endpoints:
        path = ipc_path(ep)
        if path is not None and path.is_socket():
            path.unlink(missing_ok=True)
