"""``edge-agent proxy`` as a real subprocess between several publishers and several agent
subprocesses that subscribe by topic; its counters and its /metrics."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families
from test_service_support import AgentProcess, cleanup, make_bundle, short_dir, write_config

from edge_agent.client import ClientError, Publisher
from edge_agent.data import load_dataset
from edge_agent.fleet.proxy import Proxy, ProxyConfig

REPO = Path(__file__).resolve().parents[1]


class ProxyProcess:
    """``python -m edge_agent.fleet.proxy_main`` with its log in a file."""

    def __init__(self, d: Path) -> None:
        self.log_path = d / "proxy.log"
        self.front, self.back = f"ipc://{d}/front.sock", f"ipc://{d}/back.sock"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_agent.fleet.proxy_main",
                    "--frontend",
                    self.front,
                    "--backend",
                    self.back,
                    "--metrics",
                    "127.0.0.1:0",
                    "--board",
                    "gw",
                ],
                cwd=REPO,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while not (m := re.search(r"metrics at (\S+)", self.log())):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
            time.sleep(0.05)
        self.url = m.group(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def scrape(self) -> dict[tuple[str, str], float]:
        with urllib.request.urlopen(self.url, timeout=10) as r:
            text = r.read().decode()
        return {
            (s.labels.get("socket", "") + "/" + s.labels.get("direction", ""), s.name): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProxyProcess, list[AgentProcess]]]:
    bundle = make_bundle(tmp_path_factory.mktemp("bundle") / "p.eab")
    d = short_dir()
    proxy = ProxyProcess(d)
    agents = []
    try:
        for board in ("board-a", "board-b"):
            ad = d / board
            ad.mkdir()
            ingest = f'mode = "connect"\nendpoints = ["{proxy.back}"]\ntopics = ["{board}/"]'
            agents.append(AgentProcess(write_config(ad, bundle, ingest=ingest)))
        for a in agents:
            a.wait_ready()
        yield proxy, agents
    finally:
        for a in agents:
            a.stop()
        proxy.proc.kill()
        proxy.proc.wait(10)
        cleanup(d)


def test_publishers_reach_the_agents_of_their_topic(
    fleet: tuple[ProxyProcess, list[AgentProcess]],
) -> None:
    proxy, (a, b) = fleet
    X = load_dataset("basicmotions").X_test
    plan = [
        ("board-a/", "p1", 50),
        ("board-b/", "p2", 40),
        ("board-a/", "p3", 30),
        ("board-b/", "p3", 20),
    ]

    def send(topic: str, sensor: str, n: int) -> None:
        with Publisher(proxy.front, topic=topic + sensor) as pub:
            for i in range(n):
                pub.send_sample(sensor, i, X[i % len(X)], label=i % 4)

    threads = [threading.Thread(target=send, args=p) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sa = a.wait_for(lambda s: s["samples"]["predicted"] >= 80)
    sb = b.wait_for(lambda s: s["samples"]["predicted"] >= 60)
    time.sleep(0.5)
    sa, sb = a.status(), b.status()
    assert sa["samples"]["predicted"] == 80 and sa["samples"]["rejected_total"] == 0
    assert sb["samples"]["predicted"] == 60 and sb["samples"]["rejected_total"] == 0
    m = proxy.scrape()
    # 140 samples in the two-frame form: 140 messages, 280 frames
    assert m[("frontend/in", "edge_agent_proxy_messages_total")] == 140
    assert m[("backend/out", "edge_agent_proxy_messages_total")] == 140
    assert m[("frontend/in", "edge_agent_proxy_frames_total")] == 280
    assert m[("backend/in", "edge_agent_proxy_messages_total")] >= 2  # the subscriptions
    assert m[("backend/out", "edge_agent_proxy_bytes_total")] > 140 * 2400
    assert m[("/", "edge_agent_proxy_up")] == 1


def test_a_topic_nobody_takes_is_not_waited_for_forever(
    fleet: tuple[ProxyProcess, list[AgentProcess]],
) -> None:
    proxy, _ = fleet
    with pytest.raises(ClientError, match="no agent subscribed to 'board-z/s'"):
        Publisher(proxy.front, topic="board-z/s", wait_s=0.5)


def test_the_proxy_stops_on_sigterm_with_its_totals_logged(tmp_path: Path) -> None:
    d = short_dir()
    try:
        p = ProxyProcess(d)
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(10) == 0
        assert "stopping: 0 messages in, 0 forwarded" in p.log()
    finally:
        cleanup(d)


def test_a_bad_endpoint_is_a_config_error_without_traceback() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.fleet.proxy_main", "--frontend", "udp://x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 78 and "is not a tcp://" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "edge_agent.fleet.proxy_main", "--metrics", "0.0.0.0:9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 78 and "allow_remote" in r.stderr


def test_statistics_in_process() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    proxy = Proxy(ProxyConfig(["inproc://f"], ["inproc://b"]), ctx)
    proxy.start()
    sub = ctx.socket(zmq.SUB)
    sub.connect("inproc://b")
    sub.setsockopt(zmq.SUBSCRIBE, b"t/")
    pub = ctx.socket(zmq.XPUB)
    pub.connect("inproc://f")
    assert pub.poll(2000) and pub.recv() == b"\x01t/"
    for _ in range(5):
        pub.send_multipart([b"t/1", b"x" * 10])
    for _ in range(3):  # the one-frame form: a topic-prefixed payload
        pub.send(b"t/2" + b"y" * 7)
    got = [sub.recv_multipart() for _ in range(8)]
    assert got == [[b"t/1", b"x" * 10]] * 5 + [[b"t/2" + b"y" * 7]] * 3
    st = proxy.stats()
    assert st.forwarded == 8 and st.messages[("frontend", "in")] == 8  # messages, either form
    assert st.frames[("backend", "out")] == 13 and st.bytes[("backend", "out")] == 5 * 13 + 3 * 10
    assert st.messages[("backend", "in")] == 1  # the subscription
    proxy.stop()
    with pytest.raises(RuntimeError, match="not running"):
        proxy.stats()
    for s in (sub, pub):
        s.close(linger=0)
    ctx.term()
