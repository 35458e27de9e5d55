"""What a user's data file is told: one class refused, a missing @data named, ragged
channels padded with a message."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge_agent.data import load_dataset
from edge_agent.data.ts_format import TsFormatError, load_ts

HEADER = "@problemName t\n@univariate false\n@classLabel true a b\n"


def _write(path: Path, body: str) -> Path:
    path.write_text(HEADER + body)
    return path


def test_a_training_file_with_one_class_is_refused(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i + 1},{i + 2}:a\n" for i in range(20))
    path = _write(tmp_path / "one_TRAIN.ts", "@data\n" + rows)
    with pytest.raises(ValueError, match="one class") as info:
        load_dataset(str(path))
    assert "'a'" in str(info.value)  # names the class it found


def test_a_ts_file_without_data_line_says_so(tmp_path: Path) -> None:
    path = _write(tmp_path / "nodata.ts", "1,2,3:a\n")
    with pytest.raises(TsFormatError, match="no @data line"):
        load_ts(path)
    empty = _write(tmp_path / "empty.ts", "@data\n")
    with pytest.raises(TsFormatError, match="no data after @data"):
        load_ts(empty)


def test_ragged_channels_in_one_case_are_padded_with_a_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "ragged.ts", "@data\n1,2,3:4,5:a\n1,2,3:4,5,6:b\n")
    caplog.set_level(logging.INFO)
    X, _, _ = load_ts(path)
    assert X.shape == (2, 2, 3)
    assert X[0, 1].tolist() == [4.0, 5.0, 5.0]  # padded with its last value
    assert "1 case has channels of different lengths" in caplog.text, caplog.text
