"""Energy sources on fake sysfs trees, a fake vcgencmd and fake serial lines; the policy."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from edge_agent.energy import EnergyConfig, EnergyMonitor, decide
from edge_agent.energy_sources import (
    EnergyReadings,
    SerialPowerMonitor,
    parse_power_line,
    parse_throttled,
    read_ina3221,
    read_thermal_zones,
    read_vcgencmd,
)

BITS = (2, 4, 8)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _fake_sysfs(root: Path) -> None:
    _write(root / "sys/class/thermal/thermal_zone0/temp", "48500\n")
    _write(root / "sys/class/thermal/thermal_zone1/temp", "61250\n")
    _write(root / "sys/class/thermal/thermal_zone2/temp", "garbage\n")
    _write(root / "sys/class/thermal/thermal_zone3/temp", "999999\n")  # implausible
    (root / "sys/class/thermal/thermal_zone4").mkdir(parents=True)  # no temp file
    hw = root / "sys/class/hwmon/hwmon1"
    _write(hw / "name", "ina3221\n")
    _write(hw / "in1_label", "VDD_IN\n")
    _write(hw / "in1_input", "5000\n")  # mV
    _write(hw / "curr1_input", "1200\n")  # mA -> 6 W
    _write(hw / "in2_input", "1000\n")  # no label, 1000 mV * 500 mA = 0.5 W
    _write(hw / "curr2_input", "500\n")
    _write(hw / "in3_input", "1000\n")  # no current file: skipped
    _write(root / "sys/class/hwmon/hwmon0/name", "coretemp\n")


def _fake_vcgencmd(tmp_path: Path, output: str, code: int = 0) -> str:
    script = tmp_path / "vcgencmd"
    script.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n")
    script.chmod(0o755)
    return str(script)


def test_thermal_zones_skip_garbage_and_take_the_hottest(tmp_path: Path) -> None:
    _fake_sysfs(tmp_path)
    r = EnergyReadings()
    read_thermal_zones(str(tmp_path), r)
    assert r.cpu_temp_c == pytest.approx(61.25)
    assert len(r.problems) == 2


def test_missing_sources_are_simply_absent(tmp_path: Path) -> None:
    cfg = EnergyConfig(
        sysfs_root=str(tmp_path),
        use_psutil=False,
        vcgencmd=str(tmp_path / "no"),
        burst_max_load_per_cpu=None,  # this machine's real load is not under test
    )
    r = EnergyMonitor(cfg).read()
    assert r.cpu_temp_c is None and r.throttled is None and r.rails_w == {}
    assert r.power_w is None and r.battery_percent is None and r.problems == []
    d = decide(r, cfg, BITS, 4)
    assert d.burst_allowed and d.bits == 4 and not d.pressure


def test_ina3221_rails(tmp_path: Path) -> None:
    _fake_sysfs(tmp_path)
    r = EnergyReadings()
    read_ina3221(str(tmp_path), r)
    assert r.rails_w == {"VDD_IN": pytest.approx(6.0), "hwmon1/rail2": pytest.approx(0.5)}
    assert r.power_w == pytest.approx(6.5)
    assert any("rail 3" in p for p in r.problems)


def test_vcgencmd_bits_garbage_and_failure(tmp_path: Path) -> None:
    assert parse_throttled("throttled=0x50005") == 0x50005
    assert parse_throttled("throttled=0") == 0
    assert parse_throttled("error: no such command") is None
    r = EnergyReadings()
    read_vcgencmd(_fake_vcgencmd(tmp_path, "throttled=0x50005"), r)
    assert r.throttled == 0x50005
    r = EnergyReadings()
    read_vcgencmd(_fake_vcgencmd(tmp_path, "VCHI initialization failed", 255), r)
    assert r.throttled is None and r.problems


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("V=5.02 I=0.51", (5.02, 0.51, 5.02 * 0.51)),
        ("voltage: 5.1, current: 0.2, power: 1.1", (5.1, 0.2, 1.1)),
        ("5.02V 0.51A 2.56W", (5.02, 0.51, 2.56)),
        ("Bus: 5020 mV, Current: 510 mA", (5.02, 0.51, 5.02 * 0.51)),
        ("5.0,0.5", (5.0, 0.5, 2.5)),
        ("4.9,0.4,1.9", (4.9, 0.4, 1.9)),
        ("P=3.2W", (None, None, 3.2)),
    ],
)
def test_power_line_formats(line: str, expected: tuple) -> None:
    got = parse_power_line(line)
    assert got is not None
    for g, e in zip(got, expected, strict=True):
        assert (g is None and e is None) or g == pytest.approx(e)


@pytest.mark.parametrize(
    "line", ["", "hello world", "\x00\xff\x13", "V=nan I=1", "V=900 I=1", "1,2,3,4", "V=abc"]
)
def test_power_line_garbage(line: str) -> None:
    assert parse_power_line(line) is None


def test_serial_monitor_over_socket(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    mon = SerialPowerMonitor(f"socket://127.0.0.1:{port}", stale_s=30.0)
    r = EnergyReadings()
    mon.poll(r)  # connects; nothing received yet
    assert r.serial_watts is None
    conn, _ = server.accept()
    conn.sendall(b"garbage \xff\xfe\nV=5.00 I=0.40\nnot a reading\nV=5.10 I=")
    time.sleep(0.3)
    r = EnergyReadings()
    mon.poll(r)
    assert r.serial_volts == pytest.approx(5.0) and r.serial_watts == pytest.approx(2.0)
    assert mon.garbage_lines == 2
    conn.sendall(b"0.60\n")  # the rest of the split line
    time.sleep(0.3)
    r = EnergyReadings()
    mon.poll(r)
    assert r.serial_amps == pytest.approx(0.6) and r.power_w == pytest.approx(3.06)
    mon.close()
    conn.close()
    server.close()


def test_serial_monitor_loop_url_and_bad_url() -> None:
    mon = SerialPowerMonitor("loop://", stale_s=30.0)
    r = EnergyReadings()
    mon.poll(r)  # opens the loop port; nothing written, nothing read
    assert r.serial_watts is None and r.problems == []
    mon.close()
    bad = SerialPowerMonitor("/dev/does-not-exist-edge-agent")
    r = EnergyReadings()
    bad.poll(r)
    assert r.serial_watts is None and r.problems


def test_serial_monitor_stale_reading() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    mon = SerialPowerMonitor(f"socket://127.0.0.1:{server.getsockname()[1]}", stale_s=0.2)
    mon.poll(EnergyReadings())
    conn, _ = server.accept()
    conn.sendall(b"V=5 I=1\n")
    time.sleep(0.1)
    r = EnergyReadings()
    mon.poll(r)
    assert r.serial_watts == pytest.approx(5.0)
    time.sleep(0.3)
    r = EnergyReadings()
    mon.poll(r)
    assert r.serial_watts is None and any("no valid line" in p for p in r.problems)
    mon.close()
    conn.close()
    server.close()


def test_policy_thresholds() -> None:
    cfg = EnergyConfig()
    ok = decide(EnergyReadings(battery_percent=80, plugged=False, cpu_temp_c=50), cfg, BITS, 4)
    assert ok.burst_allowed and ok.bits == 4 and ok.reasons[0].startswith("bursts allowed")
    low = decide(EnergyReadings(battery_percent=30, plugged=False), cfg, BITS, 4)
    assert not low.burst_allowed and not low.pressure and "battery 30%" in low.reasons[0]
    plugged = decide(EnergyReadings(battery_percent=30, plugged=True), cfg, BITS, 4)
    assert plugged.burst_allowed
    critical = decide(EnergyReadings(battery_percent=10, plugged=False), cfg, BITS, 4)
    assert not critical.burst_allowed and critical.pressure and critical.bits == 2
    hot = decide(EnergyReadings(cpu_temp_c=85.0), cfg, BITS, 4)
    assert not hot.burst_allowed and hot.pressure and hot.bits == 2
    busy = decide(EnergyReadings(load_per_cpu=1.5), cfg, BITS, 4)
    assert not busy.burst_allowed and "load" in busy.reasons[0]
    pi = decide(EnergyReadings(throttled=0x50005), cfg, BITS, 4)
    assert not pi.burst_allowed and pi.pressure and "under-voltage" in pi.reasons[0]
    past = decide(EnergyReadings(throttled=0x50000), cfg, BITS, 4)  # only "since boot" bits
    assert past.burst_allowed and not past.pressure
    watts = EnergyConfig(burst_max_power_w=5.0)
    assert not decide(EnergyReadings(serial_watts=7.0), watts, BITS, 4).burst_allowed
    assert not decide(EnergyReadings(rails_w={"a": 4.0, "b": 2.0}), watts, BITS, 4).burst_allowed
    assert decide(EnergyReadings(serial_watts=3.0), watts, BITS, 4).burst_allowed
    ac = EnergyConfig(burst_requires_plugged=True)
    assert not decide(EnergyReadings(), ac, BITS, 4).burst_allowed
    assert decide(EnergyReadings(plugged=True), ac, BITS, 4).burst_allowed
    chosen = EnergyConfig(normal_bits=8, pressure_bits=4)
    assert decide(EnergyReadings(), chosen, BITS, 4).bits == 8
    assert decide(EnergyReadings(cpu_temp_c=90.0), chosen, BITS, 4).bits == 4


def test_policy_hysteresis() -> None:
    cfg = EnergyConfig(burst_max_temp_c=70.0, hysteresis_c=3.0)
    r = EnergyReadings(cpu_temp_c=68.0)
    assert decide(r, cfg, BITS, 4, previously_allowed=True).burst_allowed
    assert not decide(r, cfg, BITS, 4, previously_allowed=False).burst_allowed
    assert decide(EnergyReadings(cpu_temp_c=66.0), cfg, BITS, 4, False).burst_allowed


def test_monitor_end_to_end_on_a_fake_board(tmp_path: Path) -> None:
    _fake_sysfs(tmp_path)
    _write(tmp_path / "sys/class/thermal/thermal_zone1/temp", "72000\n")
    cfg = EnergyConfig(
        sysfs_root=str(tmp_path),
        use_psutil=False,
        vcgencmd=_fake_vcgencmd(tmp_path, "throttled=0x0"),
        burst_max_load_per_cpu=None,
    )
    mon = EnergyMonitor(cfg)
    hot = mon.decide(BITS, 4)
    assert not hot.burst_allowed and hot.readings.throttled == 0
    status = hot.as_status()
    assert status["readings"]["power_w"] == pytest.approx(6.5) and status["reasons"]
    _write(tmp_path / "sys/class/thermal/thermal_zone1/temp", "68000\n")
    assert not mon.decide(BITS, 4).burst_allowed  # within the hysteresis margin
    _write(tmp_path / "sys/class/thermal/thermal_zone1/temp", "60000\n")
    assert mon.decide(BITS, 4).burst_allowed
    mon.close()
