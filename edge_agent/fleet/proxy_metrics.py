"""Prometheus exposition of the proxy: its counters, read at scrape time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import psutil
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge_agent.fleet.proxy import STAT_KEYS, Proxy

log = logging.getLogger(__name__)


class ProxyCollector:
    """``edge_agent_proxy_{messages,frames,bytes}_total{socket,direction}`` and health
    gauges (a sample is one message, in one frame or the two-frame form).

    ``socket="backend", direction="out"`` is what reached the agents' side;
    ``socket="frontend", direction="in"`` what publishers sent; the reverse pair carries
    subscriptions.
    """

    def __init__(self, proxy: Proxy, board: str) -> None:
        self.proxy = proxy
        self.board = board
        self.errors = 0
        self._process = psutil.Process()

    def describe(self) -> list[Metric]:
        """Nothing up front (a scrape reads the counters)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One scrape."""
        b = self.board
        up = GaugeMetricFamily(
            "edge_agent_proxy_up", "1 while the forwarder runs.", labels=["board"]
        )
        try:
            st = self.proxy.stats()
        except RuntimeError as exc:
            self.errors += 1
            log.error("proxy statistics: %s", exc)
            st = None
        up.add_metric([b], float(st is not None))
        yield up
        err = CounterMetricFamily(
            "edge_agent_proxy_scrape_errors",
            "Scrapes whose statistics read failed.",
            labels=["board"],
        )
        err.add_metric([b], self.errors)
        yield err
        rss = GaugeMetricFamily(
            "edge_agent_proxy_resident_memory_bytes",
            "Resident set size of the proxy process.",
            labels=["board"],
        )
        rss.add_metric([b], self._process.memory_info().rss)
        yield rss
        uptime = GaugeMetricFamily(
            "edge_agent_proxy_uptime_seconds", "Seconds since the proxy started.", labels=["board"]
        )
        uptime.add_metric([b], time.monotonic() - self.proxy.started)
        yield uptime
        if st is None:
            return
        for name, values, doc in (
            ("messages", st.messages, "Messages (a sample is one, in either form)"),
            ("frames", st.frames, "Frames (a two-frame sample is two)"),
            ("bytes", st.bytes, "Payload bytes"),
        ):
            fam = CounterMetricFamily(
                f"edge_agent_proxy_{name}",
                f"{doc} per socket and direction.",
                labels=["board", "socket", "direction"],
            )
            for sock, direction in STAT_KEYS:
                fam.add_metric([b, sock, direction], values[(sock, direction)])
            yield fam


def serve(proxy: Proxy, board: str, host: str, port: int) -> tuple[object, str]:
    """Serve /metrics for ``proxy``; return the server and its URL."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ProxyCollector(proxy, board))
    try:
        server, _ = start_http_server(port, host, reg)
    except OSError as exc:
        raise RuntimeError(f"proxy metrics endpoint {host}:{port}: {exc}") from None
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{server.server_port}/metrics"
