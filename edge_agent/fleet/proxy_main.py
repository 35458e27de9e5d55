"""The proxy as a daemon: arguments, systemd notify and watchdog, signals, a stats log."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from typing import Any

from edge_agent.fleet.proxy import Proxy, ProxyConfig
from edge_agent.service.metrics_config import MetricsConfig
from edge_agent.service.notify import Notifier

log = logging.getLogger("edge_agent.proxy")

EX_CONFIG = 78  # as the agent: the unit's RestartPreventExitStatus=78 stops a restart loop
LOG_EVERY_S = 60.0
TICK_S = 0.5


def add_proxy_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent proxy``."""
    d = ProxyConfig()
    parser.add_argument(
        "--frontend",
        action="append",
        default=None,
        metavar="ENDPOINT",
        help=f"where publishers connect (XSUB; repeatable; default {d.frontend[0]})",
    )
    parser.add_argument(
        "--backend",
        action="append",
        default=None,
        metavar="ENDPOINT",
        help=f'where agents connect with [ingest] mode = "connect" (XPUB; '
        f"repeatable; default {d.backend[0]})",
    )
    parser.add_argument(
        "--capture",
        default="",
        metavar="ENDPOINT",
        help="also publish a copy of every message here (debugging)",
    )
    parser.add_argument(
        "--sndhwm",
        type=int,
        default=d.sndhwm,
        help=f"messages buffered per agent (default {d.sndhwm})",
    )
    parser.add_argument(
        "--rcvhwm",
        type=int,
        default=d.rcvhwm,
        help=f"messages buffered per publisher (default {d.rcvhwm})",
    )
    parser.add_argument(
        "--metrics",
        default="",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics here (default: off)",
    )
    parser.add_argument(
        "--allow-remote-metrics",
        action="store_true",
        help="permit a --metrics address other than loopback",
    )
    parser.add_argument("--board", default="", help="the board label (default: hostname)")


def _config(args: argparse.Namespace) -> tuple[ProxyConfig, MetricsConfig | None]:
    d = ProxyConfig()
    eps = [*(args.frontend or d.frontend), *(args.backend or d.backend)]
    eps += [args.capture] if args.capture else []
    for ep in eps:
        if not ep.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"{ep!r} is not a tcp://, ipc:// or inproc:// endpoint")
    for name in ("sndhwm", "rcvhwm"):
        if not 0 <= getattr(args, name) <= 100_000_000:
            raise ValueError(f"--{name} must be in 0..100000000")
    cfg = ProxyConfig(
        args.frontend or d.frontend,
        args.backend or d.backend,
        args.capture,
        args.rcvhwm,
        args.sndhwm,
    )
    metrics = (
        MetricsConfig(
            http=True, listen=args.metrics, allow_remote=args.allow_remote_metrics, board=args.board
        )
        if args.metrics
        else None
    )
    return cfg, metrics


def _line(proxy: Proxy) -> str:
    try:
        st = proxy.stats()
    except RuntimeError as exc:
        return f"statistics unavailable: {exc}"
    return (
        f"{st.messages[('frontend', 'in')]} messages in, {st.forwarded} forwarded "
        f"({st.bytes[('backend', 'out')] / 2**20:.1f} MiB), "
        f"{st.messages[('backend', 'in')]} subscription messages"
    )


def proxy_main(args: argparse.Namespace) -> int:
    """``edge-agent proxy``: forward until SIGTERM."""
    try:
        cfg, metrics = _config(args)
    except ValueError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    notifier = Notifier()
    try:
        proxy = Proxy(cfg)
    except RuntimeError as exc:
        log.error("cannot start: %s", exc)
        return EX_CONFIG
    server: Any = None
    if metrics is not None:
        from edge_agent.fleet.proxy_metrics import serve

        host, port = metrics.host_port
        try:
            server, url = serve(proxy, metrics.board_name, host, port)
        except RuntimeError as exc:
            log.error("cannot start: %s", exc)
            proxy.close()
            return EX_CONFIG
        log.info("metrics at %s", url)
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    proxy.start()
    eps = proxy.endpoints()
    log.info("forwarding publishers at %s to agents at %s", eps["frontend"], eps["backend"])
    notifier.ready(f"forwarding {eps['frontend']} -> {eps['backend']}")
    next_log = next_dog = time.monotonic()
    try:
        while not stop:
            time.sleep(TICK_S)
            now = time.monotonic()
            if not proxy.alive():
                log.error("the forwarding thread died (%s); exiting for a restart", proxy.error)
                return 1
            wd = notifier.watchdog_interval_s
            if wd is not None and now >= next_dog:
                notifier.watchdog()  # only while the forwarder thread is alive (checked above)
                next_dog = now + wd
            if now >= next_log:
                line = _line(proxy)
                notifier.status(line)
                log.info("%s", line)
                next_log = now + LOG_EVERY_S
    finally:
        notifier.stopping()
        log.info("stopping: %s", _line(proxy))
        if server is not None:
            server.shutdown()
            server.server_close()
        proxy.stop()
        proxy.ctx.term()
        notifier.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_agent.fleet.proxy_main``: the proxy without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="edge-agent proxy", description=__doc__)
    add_proxy_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    return proxy_main(args)


if __name__ == "__main__":
    sys.exit(main())
