"""Prometheus exposition: the real agent subprocess scraped over HTTP and through its
textfile; every number against ``status``; the [metrics] configuration rules."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_service_support import AgentProcess, cleanup, make_bundle, short_dir, write_config

from edge_agent.client import Publisher
from edge_agent.data import load_dataset
from edge_agent.service.config import ConfigError, parse_config

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted({"board": "bench-7", **labels}.items())))
    assert key in samples, f"{name}{labels} missing; have {sorted({k[0] for k in samples})}"
    return samples[key]


@pytest.fixture(scope="module")
def metrics_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path]]:
    bundle = make_bundle(tmp_path_factory.mktemp("bundle") / "m.eab")
    d = short_dir()
    extra = f"""
[metrics]
http = true
listen = "127.0.0.1:0"
board = "bench-7"
textfile = "{d}/agent.prom"
textfile_interval_s = 0.5
"""
    a = AgentProcess(write_config(d, bundle, extra=extra, checkpoint_s=0.5))
    try:
        a.wait_ready()
        yield a, d
    finally:
        a.stop()
        cleanup(d)


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return _parse(r.read().decode())


def test_metrics_match_status(metrics_agent: tuple[AgentProcess, Path]) -> None:
    agent, d = metrics_agent
    ds = load_dataset("basicmotions")
    with Publisher(f"ipc://{d}/in.sock") as pub:
        for i in range(60):
            pub.send_sample(
                "s1", i, ds.X_test[i % 40], label=int(ds.y_test[i % 40]) if i % 2 else None
            )
        pub.send_raw(b"\xc1not msgpack")
        pub.send_raw(msgpack.packb({"v": 1, "type": "sample", "sensor": "s1"}))  # no seq
    st = agent.wait_for(
        lambda s: (
            s["samples"]["predicted"] >= 60
            and s["samples"]["rejected_total"] >= 2
            and s["checkpoint"]
        )
    )
    time.sleep(0.3)
    st = agent.status()
    (url,) = st["endpoints"]["metrics"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    m = _scrape(url)
    s = st["samples"]
    assert _value(m, "edge_agent_samples_received_total") == s["received"] == 62
    assert _value(m, "edge_agent_samples_accepted_total") == s["accepted"] == 60
    assert _value(m, "edge_agent_samples_accepted_labelled_total") == 30
    assert _value(m, "edge_agent_samples_predicted_total") == s["predicted"] == 60
    for reason, n in s["rejected"].items():
        assert _value(m, "edge_agent_samples_rejected_total", reason=reason) == n
    assert (
        sum(v for (name, _), v in m.items() if name == "edge_agent_samples_rejected_total")
        == s["rejected_total"]
        == 2
    )
    assert (
        _value(m, "edge_agent_labelled_predictions_total") == st["accuracy"]["labelled_total"] == 30
    )
    assert _value(m, "edge_agent_labelled_correct_total") == st["accuracy"]["labelled_correct"]
    assert _value(m, "edge_agent_rolling_accuracy_ratio") == pytest.approx(
        st["accuracy"]["rolling"]
    )
    assert _value(m, "edge_agent_queue_capacity") == st["queue"]["capacity"]
    assert _value(m, "edge_agent_model_bits") == st["model"]["bits"] == 4
    assert (
        _value(
            m,
            "edge_agent_model_info",
            model_version=st["model"]["version"],
            agent_version=st["agent"]["version"],
        )
        == 1
    )
    assert (
        _value(m, "edge_agent_calibration_rounds_total", outcome="kept")
        == st["calibration"]["accepted"]
    )
    assert (
        _value(m, "edge_agent_calibration_rounds_total", outcome="rolled_back")
        == st["calibration"]["rolled_back"]
    )
    assert _value(m, "edge_agent_bursts_total", outcome="started") == 0
    assert _value(m, "edge_agent_bundle_pushes_total") == st["fleet"]["pushes"] == 0
    for reason, n in st["control"]["refused"].items():  # every reason from 0
        assert _value(m, "edge_agent_status_refused_total", reason=reason) == n == 0
    assert _value(m, "edge_agent_checkpoints_total") >= 1
    assert 0 <= _value(m, "edge_agent_checkpoint_age_seconds") < 30
    assert _value(m, "edge_agent_resident_memory_bytes") > 10e6
    # the latency histogram counts every prediction once, cumulative buckets
    assert _value(m, "edge_agent_inference_latency_seconds_count") == 60
    assert _value(m, "edge_agent_inference_latency_seconds_bucket", le="+Inf") == 60
    buckets = sorted(
        (float(dict(k[1])["le"]), v)
        for k, v in m.items()
        if k[0] == "edge_agent_inference_latency_seconds_bucket"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert all(dict(labels)["board"] == "bench-7" for _, labels in m)


def test_textfile_is_written_atomically_with_the_same_metrics(
    metrics_agent: tuple[AgentProcess, Path],
) -> None:
    agent, d = metrics_agent
    path = d / "agent.prom"
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    predicted = agent.status()["samples"]["predicted"]
    time.sleep(1.2)  # at least one more write
    m = _parse(path.read_text())
    assert _value(m, "edge_agent_samples_predicted_total") == predicted
    assert not list(d.glob("agent.prom.*")), "temporary files are renamed, never left"


def test_metrics_config_rules() -> None:
    with pytest.raises(ConfigError, match=r"metrics: listen: host '0.0.0.0' is not loopback"):
        parse_config('[metrics]\nhttp = true\nlisten = "0.0.0.0:9941"\n')
    cfg = parse_config('[metrics]\nhttp = true\nlisten = "0.0.0.0:9941"\nallow_remote = true\n')
    assert cfg.metrics.host_port == ("0.0.0.0", 9941)
    assert parse_config('[metrics]\nlisten = "[::1]:9"\n').metrics.host_port == ("::1", 9)
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        parse_config('[metrics]\nlisten = "9941"\n')
    with pytest.raises(ConfigError, match=r"must end in \.prom"):
        parse_config('[metrics]\ntextfile = "/tmp/x.txt"\n')
    with pytest.raises(ConfigError, match="board"):
        parse_config('[metrics]\nboard = "a b"\n')
    assert not parse_config("").metrics.enabled


def test_a_taken_port_fails_start_up_with_a_clear_message(tmp_path: Path) -> None:
    import socket

    bundle = make_bundle(tmp_path / "m.eab")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        d = short_dir()
        try:
            a = AgentProcess(
                write_config(
                    d, bundle, extra=f'[metrics]\nhttp = true\nlisten = "127.0.0.1:{port}"\n'
                )
            )
            rc = a.proc.wait(120)
            a.stop()
            assert rc == 1
            assert f"metrics endpoint 127.0.0.1:{port}" in a.log()
            assert "Traceback" not in a.log()
        finally:
            cleanup(d)


def test_histogram_buckets_are_cumulative() -> None:
    from edge_agent.service.histogram import Histogram

    h = Histogram((0.001, 0.01))
    h.observe_many(np.array([0.0005, 0.001, 0.002, 5.0]))
    buckets, total, count = h.snapshot()
    assert buckets == [(0.001, 2), (0.01, 3), (float("inf"), 4)]
    assert count == 4 and total == pytest.approx(5.0035)


def test_the_dashboard_uses_only_exposed_metrics(metrics_agent: tuple[AgentProcess, Path]) -> None:
    """Every edge_agent_* series in deploy/grafana-dashboard.json is one the agent (scraped
    here) or the proxy (its collector over a real in-process proxy) exposes."""
    import json
    import re

    import zmq

    from edge_agent.fleet.proxy import Proxy, ProxyConfig
    from edge_agent.fleet.proxy_metrics import ProxyCollector

    agent, _ = metrics_agent
    exposed = {name for name, _ in _scrape(agent.status()["endpoints"]["metrics"][0])}
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    proxy = Proxy(ProxyConfig(["inproc://df"], ["inproc://db"]), ctx)
    proxy.start()
    try:
        exposed |= {s.name for fam in ProxyCollector(proxy, "gw").collect() for s in fam.samples}
    finally:
        proxy.stop()
        ctx.term()
    dash = json.loads(
        (Path(__file__).resolve().parents[1] / "deploy" / "grafana-dashboard.json").read_text()
    )
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows == ["Ingest", "Accuracy and drift", "Calibration", "Energy", "Health"]
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bedge_agent_\w+", e)}
    assert used and used <= exposed, sorted(used - exposed)


def test_a_reload_keeps_the_running_exporter(metrics_agent: tuple[AgentProcess, Path]) -> None:
    agent, d = metrics_agent
    cfg = d / "agent.toml"
    text = cfg.read_text()
    url = agent.status()["endpoints"]["metrics"]
    try:
        cfg.write_text(text.replace('board = "bench-7"', 'board = "renamed"'))
        assert agent.request("reload")["error"] is None
        st = agent.status()
        assert st["board"] == "bench-7" and st["endpoints"]["metrics"] == url
        assert _value(_scrape(url[0]), "edge_agent_model_reloads_total") == 0
        assert "[metrics] changes take effect at the next restart" in agent.log()
    finally:
        cfg.write_text(text)
