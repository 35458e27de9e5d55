"""ZeroMQ endpoint syntax, checked before a socket sees it: libzmq refuses a bad one only
at bind or connect, which stopped the agent at start after ``run --check`` had passed, and
on the command line named no option."""

from __future__ import annotations

SCHEMES = ("tcp", "ipc", "inproc")


def endpoint_problem(ep: str, schemes: tuple[str, ...] = SCHEMES) -> str | None:
    """What is wrong with ``ep`` as an endpoint of one of ``schemes``; None if nothing."""
    scheme, _, address = ep.partition("://")
    host, _, port = address.rpartition(":")
    tcp_ok = bool(host) and (port == "*" or (port.isdigit() and 0 < int(port) < 65536))
    if scheme in schemes and address and (scheme != "tcp" or tcp_ok):
        return None
    return f"{ep!r} is not a {', '.join(s + '://' for s in schemes)} endpoint" + (
        " (tcp://HOST:PORT, PORT 1..65535 or *)" * (scheme == "tcp")
    )
