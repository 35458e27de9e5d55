"""Energy sources: what the energy policy (:mod:`edge_agent.energy`) reads.

Sources, each optional (a missing one is normal and simply absent from the readings):

- battery percent and AC state (``psutil.sensors_battery``);
- CPU temperature: the hottest ``/sys/class/thermal/thermal_zone*/temp`` (millidegrees),
  else ``psutil.sensors_temperatures``;
- Raspberry Pi throttling: ``vcgencmd get_throttled`` bits (0 under-voltage, 1 frequency
  capped, 2 throttled, 3 soft temperature limit; the same +16 "since boot");
- Jetson INA3221 power rails: hwmon ``name == ina3221`` with ``inN_label``, ``inN_input``
  (mV) and ``currN_input`` (mA);
- load average (1 minute, divided by the CPU count);
- an external power monitor on a serial port (pyserial URL, e.g. ``/dev/ttyUSB0``,
  ``socket://host:port``, ``loop://``) printing lines such as ``V=5.02 I=0.51``,
  ``5.02V 0.51A 2.56W``, ``bus 5020 mV, current 510 mA`` or ``5.02,0.51``.
"""

from __future__ import annotations

import glob
import math
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
}
_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_WITH_UNIT = re.compile(rf"({_NUM})\s*(mV|V|mA|A|mW|W)(?![A-Za-z])")
_KEY_ANY = re.compile(r"([A-Za-z_]+)\s*[:=]\s*([^\s,;]*)")
_VALUE = re.compile(rf"{_NUM}(?:mV|V|mA|A|mW|W)?")
_KEY_VALUE = re.compile(rf"([A-Za-z_]+)\s*[:=]\s*({_NUM})\s*(mV|V|mA|A|mW|W)?(?![A-Za-z])")
_KEYS = {
    "v": "V",
    "volt": "V",
    "volts": "V",
    "voltage": "V",
    "bus": "V",
    "vbus": "V",
    "bus_voltage": "V",
    "i": "A",
    "curr": "A",
    "current": "A",
    "amps": "A",
    "p": "W",
    "power": "W",
    "watts": "W",
}
_MAX_VOLTS, _MAX_AMPS = 60.0, 50.0


@dataclass
class EnergyReadings:
    """One reading of every available source; ``None`` where a source is missing."""

    battery_percent: float | None = None
    plugged: bool | None = None
    cpu_temp_c: float | None = None
    throttled: int | None = None
    rails_w: dict[str, float] = field(default_factory=dict)
    load_per_cpu: float | None = None
    serial_volts: float | None = None
    serial_amps: float | None = None
    serial_watts: float | None = None
    problems: list[str] = field(default_factory=list)  # unreadable or garbage sources

    @property
    def power_w(self) -> float | None:
        """Measured power: the serial monitor's, else the INA3221 rails' sum."""
        if self.serial_watts is not None:
            return self.serial_watts
        return sum(self.rails_w.values()) if self.rails_w else None


def _read_number(path: str | Path) -> float | None:
    try:
        value = float(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_battery(readings: EnergyReadings) -> None:
    """Battery percent and AC state from psutil, when there is a battery."""
    try:
        bat = psutil.sensors_battery()
    except (OSError, RuntimeError, AttributeError) as exc:
        readings.problems.append(f"battery: {exc}")
        return
    if bat is None:
        return
    if bat.percent is not None and math.isfinite(bat.percent) and 0 <= bat.percent <= 100:
        readings.battery_percent = float(bat.percent)
    readings.plugged = None if bat.power_plugged is None else bool(bat.power_plugged)


def read_thermal_zones(root: str, readings: EnergyReadings) -> None:
    """The hottest plausible thermal zone (millidegrees C in sysfs)."""
    temps = []
    for path in sorted(glob.glob(os.path.join(root, "sys/class/thermal/thermal_zone*/temp"))):
        milli = _read_number(path)
        if milli is None or not -40_000 <= milli <= 150_000:
            readings.problems.append(f"thermal: unreadable or implausible {path}")
            continue
        temps.append(milli / 1000.0)
    if temps:
        readings.cpu_temp_c = max(temps)


def read_psutil_temperature(readings: EnergyReadings) -> None:
    """CPU temperature from psutil when no thermal zone gave one."""
    try:
        sensors = psutil.sensors_temperatures()
    except (OSError, RuntimeError, AttributeError) as exc:
        readings.problems.append(f"psutil temperatures: {exc}")
        return
    temps = [
        t.current
        for entries in sensors.values()
        for t in entries
        if t.current is not None and math.isfinite(t.current) and -40 <= t.current <= 150
    ]
    if temps:
        readings.cpu_temp_c = float(max(temps))


def parse_throttled(text: str) -> int | None:
    """The bit mask of ``vcgencmd get_throttled`` output (``throttled=0x50005``)."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    return int(match.group(1), 0) if match else None


def read_vcgencmd(command: str, readings: EnergyReadings) -> None:
    """Raspberry Pi throttling state (absent on other boards)."""
    try:
        done = subprocess.run(
            [command, "get_throttled"], capture_output=True, text=True, timeout=2.0, check=False
        )
    except FileNotFoundError:
        return
    except (OSError, subprocess.SubprocessError) as exc:
        readings.problems.append(f"vcgencmd: {exc}")
        return
    value = parse_throttled(done.stdout) if done.returncode == 0 else None
    if value is None:
        readings.problems.append(f"vcgencmd: unexpected output {done.stdout.strip()[:60]!r}")
    readings.throttled = value


def read_ina3221(root: str, readings: EnergyReadings) -> None:
    """Power per rail (W) of every INA3221 hwmon device (Jetson boards)."""
    for hw in sorted(glob.glob(os.path.join(root, "sys/class/hwmon/hwmon*"))):
        try:
            name = Path(hw, "name").read_text().strip()
        except OSError:
            continue
        if name != "ina3221":
            continue
        for volt_path in sorted(glob.glob(os.path.join(hw, "in[0-9]*_input"))):
            idx = re.findall(r"in(\d+)_input$", volt_path)[0]
            mv = _read_number(volt_path)
            ma = _read_number(os.path.join(hw, f"curr{idx}_input"))
            if mv is None or ma is None:
                readings.problems.append(f"ina3221: unreadable rail {idx} in {hw}")
                continue
            try:
                label = Path(hw, f"in{idx}_label").read_text().strip()
            except OSError:
                label = f"{Path(hw).name}/rail{idx}"
            readings.rails_w[label] = mv * ma / 1e6


def read_load(readings: EnergyReadings) -> None:
    """One-minute load average per CPU."""
    try:
        readings.load_per_cpu = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError as exc:
        readings.problems.append(f"load average: {exc}")


def parse_power_line(line: str) -> tuple[float | None, float | None, float | None] | None:
    """(volts, amps, watts) of one power-monitor line, or None for garbage.

    Understands numbers with units (``5.02V 510mA``), ``key=value`` / ``key: value`` pairs
    (voltage/bus, current, power; units optional: V, A, W) and bare CSV ``V,A[,W]``.
    """
    for key, value in _KEY_ANY.findall(line):
        if key.lower().strip("_") in _KEYS and not _VALUE.fullmatch(value):
            return None  # a known field with a corrupt value: the whole line is suspect
    found: dict[str, float] = {}
    for key, num, unit in _KEY_VALUE.findall(line):
        kind = unit[-1] if unit else _KEYS.get(key.lower().strip("_"))
        if kind is not None and key.lower().strip("_") in _KEYS:
            found.setdefault(kind, float(num) / (1000.0 if unit.startswith("m") else 1.0))
    if not found:
        for num, unit in _WITH_UNIT.findall(line):
            found.setdefault(unit[-1], float(num) / (1000.0 if unit.startswith("m") else 1.0))
    if not found:
        parts = [p.strip() for p in line.strip().split(",")]
        if 2 <= len(parts) <= 3 and all(re.fullmatch(_NUM, p) for p in parts):
            found = dict(zip("VAW", (float(p) for p in parts), strict=False))
    v, a, w = found.get("V"), found.get("A"), found.get("W")
    if v is None and a is None and w is None:
        return None
    if any(x is not None and not math.isfinite(x) for x in (v, a, w)):
        return None
    if (v is not None and not 0 <= v <= _MAX_VOLTS) or (a is not None and abs(a) > _MAX_AMPS):
        return None
    if w is None and v is not None and a is not None:
        w = v * a
    return v, a, w


class SerialPowerMonitor:
    """Reads an external power monitor's lines without blocking; keeps the latest valid one."""

    def __init__(self, url: str, baud: int = 115200, stale_s: float = 10.0) -> None:
        self.url, self.baud, self.stale_s = url, baud, stale_s
        self._port: Any = None
        self._buffer = b""
        self._last: tuple[float | None, float | None, float | None] | None = None
        self._last_time = -math.inf
        self.garbage_lines = 0

    def _open(self) -> Any:
        if self._port is None:
            import serial

            self._port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=0)
        return self._port

    def poll(self, readings: EnergyReadings) -> None:
        """Consume whatever the port has buffered and fill in the latest fresh reading."""
        try:
            port = self._open()
            for _ in range(16):  # timeout=0: read returns what is buffered, at most 4 KiB
                chunk = port.read(4096)
                if not chunk:
                    break
                self._buffer += chunk
        except Exception as exc:  # pyserial raises SerialException, OSError, ValueError
            readings.problems.append(f"serial {self.url}: {exc}")
            self.close()
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        self._buffer = self._buffer[-4096:]
        for raw in lines:
            parsed = parse_power_line(raw.decode("ascii", errors="replace"))
            if parsed is None:
                if raw.strip():
                    self.garbage_lines += 1
                continue
            self._last, self._last_time = parsed, time.monotonic()
        if self._last is not None and time.monotonic() - self._last_time <= self.stale_s:
            readings.serial_volts, readings.serial_amps, readings.serial_watts = self._last
        elif self._last is not None:
            readings.problems.append(f"serial {self.url}: no valid line for {self.stale_s:g} s")

    def close(self) -> None:
        """Close the port (it is reopened on the next poll)."""
        if self._port is not None:
            try:
                self._port.close()
            finally:
                self._port = None


# ---------------------------------------------------------------- policy
