"""``edge-agent demo`` end to end (short stream)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_agent.cli import main


def _rows(out: str) -> dict[str, tuple[float, int]]:
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(before drift|after drift|after recalibration)\s+([0-9.]+)\s+(\d+)$", line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), int(m.group(3)))
    return rows


def test_demo_runs_and_writes_table_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "acc.png"
    args = ["--count", "1200", "--rate", "400", "--drift", "rotation@400", "--labels-every", "4"]
    rc = main(["demo", *args, "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "1200/1200 predicted" in out
    rows = _rows(out)
    # the bundled model is right on every BasicMotions test window: 1.000 before the drift
    assert rows["before drift"][0] >= 0.95 and rows["before drift"][1] == 400, out
    assert rows["after drift"][0] <= rows["before drift"][0] - 0.05, out  # the drift shows
    m = re.search(r"calibration rounds: (\d+) \((\d+) kept(?:, at samples? ([\d, ]+))?\)", out)
    assert m is not None, out
    rounds, kept = int(m.group(1)), int(m.group(2))
    assert rounds >= 1 and 0 <= kept <= rounds, out
    at = [int(v) for v in m.group(3).split(", ")] if m.group(3) else []
    assert len(at) == kept and at == sorted(at) and all(0 < s < 1200 for s in at), out
    if "after recalibration" in rows:  # from the first round kept after the drift
        first = min(s for s in at if s > 400)
        assert rows["after recalibration"][1] == 1200 - first, out
        assert rows["after drift"][1] == first - 400, out
        assert rows["after recalibration"][0] >= rows["after drift"][0], out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_demo_refuses_data_that_does_not_fit_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--data", "digits"]) == 1  # the default bundle is BasicMotions
    assert "samples have shape (1, 8, 8)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "publish"])
def test_help_lists_the_drift_kinds(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for kind in ("rotation", "gain", "offset", "noise", "dropout", "timewarp", "shift", "rotate"):
        assert f"{kind} (" in text, (kind, text)
