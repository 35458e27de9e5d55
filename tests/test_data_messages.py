"""What a user's data file is told: one class refused, a missing @data named, ragged
channels padded with a message."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
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


def _npz(path: Path, **over: object) -> Path:
    rng = np.random.default_rng(0)
    arrays: dict[str, object] = {
        "X_train": rng.normal(size=(10, 2, 8)).astype(np.float32),
        "y_train": np.arange(10) % 2,
        "X_test": rng.normal(size=(4, 2, 8)).astype(np.float32),
        "y_test": np.arange(4) % 2,
    }
    np.savez(path, **{**arrays, **over})  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("garbage.ts", b"\x93\xde\xad\xbe\xef" * 100, "garbage.ts: not a text file"),
        ("garbage.tsv", b"\xff\xfe\x00\x01" * 100, "garbage.tsv: not a text file"),
        ("garbage.npz", b"\x80\x04K\x01." * 100, "garbage.npz: not an .npz archive"),
        ("garbage.csv.gz", b"\x00\x01\x02" * 100, "garbage.csv.gz: not a digits-style CSV"),
        ("words.csv", b"1,2,3\nx,y,z\n", "words.csv: not a digits-style CSV"),
        ("spaces_TRAIN.tsv", b"1\t1 2\t3\n", "spaces_TRAIN.tsv:1: not tab-separated numbers"),
        ("fraction.csv", ("1," * 64 + "0.5\n").encode() * 4, "whole numbers"),
        ("negative.csv", ("1," * 64 + "-1\n").encode() * 4, r"label -1 is not a class index"),
    ],
)
def test_a_broken_data_file_is_named_with_what_is_wrong(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_dataset(str(path))


@pytest.mark.parametrize(
    "over, message",
    [
        ({"y_train": np.array(["a", "b"] * 5)}, "y_train: labels must be class indices"),
        ({"y_train": np.arange(10) % 2 + 0.5}, "y_train: .* got 0.5"),
        ({"X_train": np.ones((10, 2, 8), np.complex64)}, "X_train: samples must be real"),
        ({"X_test": np.array([1, "a"], dtype=object)}, "holds arrays that are not numbers"),
        (
            {
                k: np.zeros((0, 2, 8)) if k[0] == "X" else np.zeros(0, int)
                for k in ("X_train", "y_train", "X_test", "y_test")
            },
            "train: 0 samples",
        ),
    ],
)
def test_an_npz_that_would_be_cast_silently_is_refused(
    tmp_path: Path, over: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(str(_npz(tmp_path / "mine.npz", **over)))


def test_a_tsv_with_ragged_rows_is_padded_like_the_archive(tmp_path: Path) -> None:
    (tmp_path / "r_TRAIN.tsv").write_text("1\t1\t2\n2\t4\t5\t6\n" * 5)
    ds = load_dataset(str(tmp_path / "r_TRAIN.tsv"))
    assert ds.input_shape == (1, 3)
    assert [1.0, 2.0, 2.0] in ds.X_train[:, 0].tolist() + ds.X_test[:, 0].tolist()
