"""A real Prometheus server (Debian's ``prometheus``) scraping two real agents: both
targets up, and the summed predictions through its HTTP API equal what was sent."""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
from test_service_support import AgentProcess, cleanup, make_bundle, short_dir, write_config

from edge_agent.client import Publisher
from edge_agent.data import load_dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fleet_support import Prometheus  # noqa: E402

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="needs the prometheus server binary (Debian: apt-get install prometheus)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_scrapes_every_agent_and_sums_match(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "m.eab")
    d = short_dir()
    agents: list[AgentProcess] = []
    prom = None
    try:
        ports = [_free_port(), _free_port()]
        for i, port in enumerate(ports):
            ad = d / f"a{i}"
            ad.mkdir()
            extra = f'[metrics]\nhttp = true\nlisten = "127.0.0.1:{port}"\nboard = "a{i}"\n'
            agents.append(AgentProcess(write_config(ad, bundle, extra=extra)))
        for a in agents:
            a.wait_ready()
        prom = Prometheus(
            d, _free_port(), [("a0", ports[0]), ("a1", ports[1])], _free_port(), interval_s=0.5
        )
        X = load_dataset("basicmotions").X_test
        sent = [30, 45]
        for a, n in zip(agents, sent, strict=True):
            with Publisher(f"ipc://{a.dir}/in.sock") as pub:
                for i in range(n):
                    pub.send_sample("s", i, X[i % len(X)])
        for a, n in zip(agents, sent, strict=True):
            a.wait_for(lambda s, n=n: s["samples"]["predicted"] == n)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            total = prom.scalar("sum(edge_agent_samples_predicted_total)")
            if prom.targets_up() == 2 and total == sum(sent):
                break
            time.sleep(0.3)
        assert prom.targets_up() == 2
        assert prom.scalar("sum(edge_agent_samples_predicted_total)") == sum(sent)
        assert prom.scalar('edge_agent_samples_predicted_total{board="a1"}') == 45
        assert prom.scalar("sum(edge_agent_samples_dropped_total)") == 0
    finally:
        if prom is not None:
            prom.stop()
        for a in agents:
            a.stop()
        cleanup(d)
