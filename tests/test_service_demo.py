"""``edge-agent demo`` end to end (short stream)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.cli import main


def test_demo_runs_and_writes_table_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "acc.png"
    rc = main(
        [
            "demo",
            "--count",
            "400",
            "--rate",
            "1000",
            "--drift",
            "gain:3@200",
            "--labels-every",
            "4",
            "--plot",
            str(png),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "400/400 predicted" in out
    assert "before drift" in out and "after drift" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_demo_refuses_data_that_does_not_fit_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--data", "digits"]) == 1  # the default bundle is BasicMotions
    assert "samples have shape (1, 8, 8)" in capsys.readouterr().err
