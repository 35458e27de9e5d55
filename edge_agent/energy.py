"""The energy policy: whether QAT bursts may run and at what bit-width the model runs.

The readings come from :mod:`edge_agent.energy_sources`.

The policy (:func:`decide`) is documented on :class:`EnergyConfig`: a burst is allowed
only when no reading crosses a burst threshold; the model runs at ``pressure_bits``
(default: the lowest available) while any pressure threshold is crossed. Thresholds have
hysteresis so a reading hovering at a limit does not start and pre-empt bursts in turn.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from edge_agent.energy_sources import (
    THROTTLE_BITS,
    EnergyReadings,
    SerialPowerMonitor,
    read_battery,
    read_ina3221,
    read_load,
    read_psutil_temperature,
    read_thermal_zones,
    read_vcgencmd,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnergyConfig:
    """Where to read and the policy's thresholds (a ``None`` threshold is not checked).

    Bursts are allowed unless: the battery is below ``burst_min_battery_percent`` and not
    plugged in (or not plugged in at all with ``burst_requires_plugged``); the CPU is at
    or above ``burst_max_temp_c``; the Pi reports current throttling or under-voltage
    (``burst_forbid_throttled``); the load per CPU is above ``burst_max_load_per_cpu``;
    the measured power (serial monitor, else the sum of the INA3221 rails) is above
    ``burst_max_power_w``. Pressure (run at ``pressure_bits``): battery below
    ``pressure_battery_percent`` and not plugged, temperature at or above
    ``pressure_temp_c``, or current under-voltage / throttling. A refused burst needs the
    reading back inside its limit by the hysteresis margin before it is allowed again.
    """

    sysfs_root: str = "/"
    use_psutil: bool = True
    vcgencmd: str = "vcgencmd"  # command name or path; "" disables
    serial_url: str = ""  # pyserial URL; "" disables
    serial_baud: int = 115200
    serial_stale_s: float = 10.0
    burst_min_battery_percent: float | None = 50.0
    burst_requires_plugged: bool = False
    burst_max_temp_c: float | None = 70.0
    burst_forbid_throttled: bool = True
    burst_max_load_per_cpu: float | None = 0.9
    burst_max_power_w: float | None = None
    pressure_battery_percent: float | None = 20.0
    pressure_temp_c: float | None = 80.0
    hysteresis_percent: float = 5.0
    hysteresis_c: float = 3.0
    normal_bits: int | None = None  # None: the bundle's default bit-width
    pressure_bits: int | None = None  # None: the lowest bit-width the bundle has


@dataclass(frozen=True)
class EnergyDecision:
    """The policy's answer: may a burst run, at what bit-width the model should run, why."""

    burst_allowed: bool
    bits: int
    pressure: bool
    reasons: tuple[str, ...]
    readings: EnergyReadings

    def as_status(self) -> dict[str, Any]:
        """A JSON-ready dict for ``edge-agent status``."""
        r = asdict(self.readings)
        r["power_w"] = self.readings.power_w
        return {
            "burst_allowed": self.burst_allowed,
            "bits": self.bits,
            "pressure": self.pressure,
            "reasons": list(self.reasons),
            "readings": r,
        }


# ---------------------------------------------------------------- sources


def _current_throttling(mask: int | None) -> list[str]:
    return [name for bit, name in THROTTLE_BITS.items() if mask is not None and mask >> bit & 1]


def decide(
    r: EnergyReadings,
    cfg: EnergyConfig,
    available_bits: tuple[int, ...],
    default_bits: int,
    previously_allowed: bool = True,
) -> EnergyDecision:
    """Turn readings into: burst allowed or not, the bit-width to run at, and why."""
    hyst_pct = 0.0 if previously_allowed else cfg.hysteresis_percent
    hyst_c = 0.0 if previously_allowed else cfg.hysteresis_c
    blocks: list[str] = []
    pressure: list[str] = []
    on_battery = r.plugged is False
    if cfg.burst_requires_plugged and r.plugged is not True:
        blocks.append("not plugged in" if r.plugged is False else "AC state unknown")
    lim = cfg.burst_min_battery_percent
    low_battery = r.battery_percent is not None and r.battery_percent < (lim or 0) + hyst_pct
    if lim is not None and on_battery and low_battery:
        blocks.append(f"battery {r.battery_percent:.0f}% < {lim:g}% on battery")
    lim = cfg.burst_max_temp_c
    if lim is not None and r.cpu_temp_c is not None and r.cpu_temp_c >= lim - hyst_c:
        blocks.append(f"CPU {r.cpu_temp_c:.1f} C >= {lim:g} C")
    throttling = _current_throttling(r.throttled)
    if cfg.burst_forbid_throttled and throttling:
        blocks.append("Pi reports " + ", ".join(throttling))
    lim = cfg.burst_max_load_per_cpu
    if lim is not None and r.load_per_cpu is not None and r.load_per_cpu > lim:
        blocks.append(f"load {r.load_per_cpu:.2f} per CPU > {lim:g}")
    lim, power = cfg.burst_max_power_w, r.power_w
    if lim is not None and power is not None and power > lim:
        blocks.append(f"power {power:.2f} W > {lim:g} W")
    lim = cfg.pressure_battery_percent
    if lim is not None and on_battery and r.battery_percent is not None and r.battery_percent < lim:
        pressure.append(f"battery {r.battery_percent:.0f}% < {lim:g}%")
    lim = cfg.pressure_temp_c
    if lim is not None and r.cpu_temp_c is not None and r.cpu_temp_c >= lim:
        pressure.append(f"CPU {r.cpu_temp_c:.1f} C >= {lim:g} C")
    if "under-voltage" in throttling or "throttled" in throttling:
        pressure.append("Pi under-voltage or throttled")
    normal = cfg.normal_bits if cfg.normal_bits in available_bits else default_bits
    low = cfg.pressure_bits if cfg.pressure_bits in available_bits else min(available_bits)
    bits = min(low, normal) if pressure else normal
    reasons = [f"no burst: {b}" for b in blocks] + [f"pressure: {p}" for p in pressure]
    if not blocks:
        reasons.insert(0, "bursts allowed: every reading within its limit")
    return EnergyDecision(not blocks, bits, bool(pressure), tuple(reasons), r)


class EnergyMonitor:
    """Reads every configured source and applies the policy (with hysteresis across calls)."""

    def __init__(self, cfg: EnergyConfig) -> None:
        self.cfg = cfg
        self._serial = (
            SerialPowerMonitor(cfg.serial_url, cfg.serial_baud, cfg.serial_stale_s)
            if cfg.serial_url
            else None
        )
        self._allowed = True

    def read(self) -> EnergyReadings:
        """One reading of every available source."""
        r = EnergyReadings()
        if self.cfg.use_psutil:
            read_battery(r)
        read_thermal_zones(self.cfg.sysfs_root, r)
        if r.cpu_temp_c is None and self.cfg.use_psutil:
            read_psutil_temperature(r)
        if self.cfg.vcgencmd:
            read_vcgencmd(self.cfg.vcgencmd, r)
        read_ina3221(self.cfg.sysfs_root, r)
        read_load(r)
        if self._serial is not None:
            self._serial.poll(r)
        return r

    def decide(self, available_bits: tuple[int, ...], default_bits: int) -> EnergyDecision:
        """Read the sources and decide; remembers the answer for the hysteresis."""
        d = decide(self.read(), self.cfg, available_bits, default_bits, self._allowed)
        if d.burst_allowed != self._allowed:
            log.info(
                "energy policy: bursts %s (%s)",
                "allowed" if d.burst_allowed else "refused",
                "; ".join(d.reasons),
            )
        self._allowed = d.burst_allowed
        return d

    def close(self) -> None:
        """Release the serial port, if any."""
        if self._serial is not None:
            self._serial.close()
