"""Config validation, the drop queue's policy and bound, and systemd notification."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_service_support import AgentProcess, cleanup, make_bundle, short_dir, write_config

from edge_agent.ingest.queue import DropQueue
from edge_agent.service.config import AgentConfig, ConfigError, load_config, parse_config
from edge_agent.service.notify import Notifier


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[ingest]\nendpont = 'tcp://x:1'", "ingest.endpont: unknown key"),
        ("[ingset]\n", "ingset: unknown key"),
        ("[ingest]\nrcvhwm = '10'", "ingest.rcvhwm: expected int"),
        ("[ingest]\nrcvhwm = true", "ingest.rcvhwm: expected int"),
        ("[ingest]\nendpoints = 'tcp://a:1'", "ingest.endpoints: expected a list"),
        ("[ingest]\nendpoints = ['tcp://a:1', 'udp://b']", "ingest.endpoints[1]"),
        ("[ingest]\nsocket = 'req'", "ingest.socket: must be one of sub, pull"),
        ("[ingest]\nqueue_capacity = 0", "ingest.queue_capacity: must be in"),
        ("[ingest.curve]\nenabled = true", "ingest.curve.secret_key"),
        ("[status]\ntcp = 'tcp://0.0.0.0:5558'", "status.tcp: host '0.0.0.0' is not loopback"),
        ("[state]\ncheckpoint_interval_s = -1", "state.checkpoint_interval_s"),
        ("[log]\nlevel = 'loud'", "log.level"),
        ("[serial]\nframing = 'xml'", "serial.framing"),
        ("model = 3", "model: expected a table"),
        ("[model\n", "not valid TOML"),
        # ranges and choices (field metadata) name the key, the value and what is allowed
        ("[calibration]\nchunk = 0", "calibration.chunk: must be in 1..100000, not 0"),
        (  # a flip-round knob, nested in FlipConfig, keeps its flat key
            "[calibration]\nholdout_fraction = 0.99",
            "calibration.holdout_fraction: must be in 0.05..0.95, not 0.99",
        ),
        (
            "[calibration]\ntrigger = 'often'",
            "calibration.trigger: must be one of drift, samples, not 'often'",
        ),
        ("[ingest]\nrcvhwm = 0", "ingest.rcvhwm: must be in 1..1e+07, not 0"),
        ("[serial]\nsensor = ''", "serial.sensor (length): must be in 1..64, not 0"),
        ("[state]\nkeep = 101", "state.keep: must be in 1..100, not 101"),
        ("[bursts]\nenergy_poll_s = 0.01", "bursts.energy_poll_s: must be in 0.1..3600, not 0.01"),
        # these passed `run --check` and stopped the agent at start (or were ignored: a
        # bit-width no bundle can hold)
        ("[ingest]\nendpoints = ['tcp://nohost']", "ingest.endpoints[0]: 'tcp://nohost'"),
        ("[ingest]\nendpoints = ['tcp://h:0']", "PORT 1..65535"),
        ("[ingest]\nendpoints = ['tcp://h:99999']", "PORT 1..65535"),
        ("[ingest]\nendpoints = ['ipc://']", "ingest.endpoints[0]: 'ipc://' is not a"),
        ("[output]\nendpoints = ['tcp://:5557']", "output.endpoints[0]"),
        ("[status]\ntcp = 'tcp://127.0.0.1'", "status.tcp: 'tcp://127.0.0.1' is not a tcp://"),
        ("[status]\ntcp = 'ipc:///x'", "status.tcp: 'ipc:///x' is not a tcp:// endpoint"),
        ("[energy]\nnormal_bits = 7", "energy.normal_bits: not one of (2, 3, 4, 8)"),
        ("[energy]\npressure_bits = 1", "energy.pressure_bits: not one of"),
    ],
)
def test_config_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "agent.toml")
    assert key in str(info.value) and str(info.value).startswith("agent.toml: ")


def test_calibration_nests_the_flip_knobs_under_their_flat_keys() -> None:
    cfg = parse_config("[calibration]\nmin_holdout = 2\ntolerance = 0.1\nchunk = 8")
    cal = cfg.calibration
    assert cal.chunk == 8 and cal.flip.min_holdout == 2 and cal.flip.tolerance == 0.1
    assert cal.schedule_config().chunk == 8  # the stream side's same-named knobs
    assert cal.flip.anchor_tolerance == AgentConfig().calibration.flip.anchor_tolerance
    view = cfg.to_dict()["calibration"]  # the config status reply: keyed as in the file
    assert "flip" not in view and view["min_holdout"] == 2 and view["tolerance"] == 0.1
    assert list(view)[:10] == [
        "enabled",
        "chunk",
        "label_free",
        "unlabelled_every",
        "buffer_samples",
        "buffer_bytes",
        "class_balance",
        "neighbour_bits",
        "budget_fraction",
        "threshold",
    ]
    with pytest.raises(ConfigError, match=r"calibration\.flip: unknown key"):
        parse_config("[calibration]\nflip = {}")  # the nested section has no table of its own


def test_config_defaults_and_relative_paths(tmp_path: Path) -> None:
    assert parse_config("") == AgentConfig()
    (tmp_path / "a.toml").write_text(
        "[model]\nbundle = 'm.eab'\n[state]\ndir = 'st'\ncheckpoint_interval_s = 5"
    )
    cfg = load_config(tmp_path / "a.toml")
    assert cfg.model.bundle == str(tmp_path / "m.eab")
    assert cfg.state_dir == tmp_path / "st" and cfg.state.checkpoint_interval_s == 5.0
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.lists(st.booleans(), max_size=60))
def test_drop_queue_policy_and_bound(capacity: int, labels: list[bool]) -> None:
    q: DropQueue[tuple[int, bool]] = DropQueue(capacity)
    model: list[tuple[int, bool]] = []
    for i, lab in enumerate(labels):
        dropped = q.put((i, lab), lab)
        if len(model) >= capacity:
            victim = next((m for m in model if not m[1]), model[0])
            model.remove(victim)
            assert dropped == ("labelled" if victim[1] else "unlabelled")
        else:
            assert dropped is None
        model.append((i, lab))
        assert len(q) == len(model) <= capacity
    assert q.dropped_labelled + q.dropped_unlabelled == max(0, len(labels) - len(model))
    assert q.get_batch(100, 0) == model  # arrival order


def test_drop_queue_wakes_a_waiting_consumer() -> None:
    q: DropQueue[int] = DropQueue(4)
    got: list[int] = []
    t = threading.Thread(target=lambda: got.extend(q.get_batch(10, 5.0)))
    t.start()
    q.put(1, False)
    t.join(2)
    assert got == [1]
    assert q.get_batch(10, 0.01) == []


def test_sd_notify_ready_watchdog_status_stopping(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The agent under a real NOTIFY_SOCKET: READY=1 once loaded, WATCHDOG=1 pings,
    STATUS= lines, STOPPING=1 on SIGTERM."""
    d = short_dir()
    bundle = make_bundle(tmp_path_factory.mktemp("bundle") / "t.eab")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(d / "notify"))
    sock.settimeout(60)
    a = AgentProcess(
        write_config(d, bundle), env={"NOTIFY_SOCKET": str(d / "notify"), "WATCHDOG_USEC": "400000"}
    )
    try:
        msgs: list[str] = []
        while not any("READY=1" in m for m in msgs):
            msgs.append(sock.recv(4096).decode())
        assert a.request("ping")["pong"], "READY=1 only when the status socket answers"
        while sum("WATCHDOG=1" in m for m in msgs) < 3:
            msgs.append(sock.recv(4096).decode())
        rc, _ = a.terminate()
        sock.settimeout(1)
        try:
            while True:
                msgs.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert rc == 0
        text = "\n".join(msgs)
        assert "STATUS=loading model" in text and "STOPPING=1" in text
        assert "predicted" in text  # STATUS= summary line with READY=1
    finally:
        a.stop()
        sock.close()
        cleanup(d)


def test_a_slow_start_asks_systemd_for_more_time_up_to_a_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While starting (a first start JIT-compiles for minutes on a Pi), the notifier sends
    EXTEND_TIMEOUT_USEC= with the status and elapsed time, stops at its bound, and sends
    nothing once the start is over."""
    d = short_dir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(d / "notify"))
    sock.settimeout(0.5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(d / "notify"))
    notifier = Notifier()
    try:
        notifier.status("loading model")
        sock.recv(4096)
        with notifier.starting(every_s=0.05, extend_s=2.5, limit_s=0.6):
            time.sleep(1.2)  # twice the bound: extensions stop at 0.6 s
        msgs: list[str] = []
        try:
            while True:
                msgs.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
        assert 3 <= len(msgs) <= 13, msgs
        for m in msgs:
            extend, status = m.split("\n")
            assert extend == "EXTEND_TIMEOUT_USEC=2500000"
            assert status.startswith("STATUS=loading model (") and status.endswith(" s)")
        with notifier.starting(every_s=0.05):
            pass
        time.sleep(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    finally:
        notifier.close()
        sock.close()
        cleanup(d)
