"""Data loading: the .ts parser on the real archive files, digits, vendored sets, drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.data import load_dataset
from edge_agent.data.datasets import (
    Dataset,
    data_source,
    load_digits_csv,
    load_ts_pair,
    normalize_series,
    series_normalized,
    stratified_split,
    trained_data_spec,
    warn_if_narrow,
)
from edge_agent.data.drift import Drift
from edge_agent.data.ts_format import TsFormatError, load_ts


def test_ts_parser_basicmotions(raw_data: Path) -> None:
    X, y, names = load_ts(raw_data / "uea" / "BasicMotions_TRAIN.ts")
    assert X.shape == (40, 6, 100) and X.dtype == np.float32
    assert names == ["Standing", "Running", "Walking", "Badminton"]
    assert sorted(set(y.tolist())) == [0, 1, 2, 3]
    assert np.bincount(y).tolist() == [10, 10, 10, 10]
    # first value of the first case, first channel, as written in the file
    assert X[0, 0, 0] == pytest.approx(0.079106)
    assert X[0, 0, 2] == pytest.approx(-0.903497)


def test_ts_parser_gunpoint(raw_data: Path) -> None:
    ds = load_ts_pair(raw_data / "uea" / "GunPoint_TRAIN.ts")
    assert ds.X_train.shape == (50, 1, 150) and ds.X_test.shape == (150, 1, 150)
    assert ds.label_names == ["1", "2"]


def test_ts_parser_pads_unequal_lengths_and_fills_missing_values(tmp_path: Path) -> None:
    header = "@problemName x\n@equalLength false\n@missing true\n@classLabel true a b\n@data\n"
    (tmp_path / "x_TRAIN.ts").write_text(header + "1,2,3:4,5,6:a\n1,?:7,8,9:b\n")
    (tmp_path / "x_TEST.ts").write_text(header + "1,NaN,3,4,5:2,2,2,2,2:b\n")
    ds = load_ts_pair(tmp_path / "x_TRAIN.ts")
    assert ds.X_train.shape == (2, 2, 5) and ds.X_test.shape == (1, 2, 5)
    np.testing.assert_array_equal(ds.X_train[0], [[1, 2, 3, 3, 3], [4, 5, 6, 6, 6]])
    # a missing value at the end takes the nearest one; a ragged channel is padded too
    np.testing.assert_array_equal(ds.X_train[1], [[1, 1, 1, 1, 1], [7, 8, 9, 9, 9]])
    np.testing.assert_array_equal(ds.X_test[0, 0], [1, 2, 3, 4, 5])  # interpolated
    assert ds.y_train.tolist() == [0, 1] and ds.y_test.tolist() == [1]


def test_ucr_tsv_pair_maps_labels_and_pads_with_the_last_value(tmp_path: Path) -> None:
    (tmp_path / "Ab_TRAIN.tsv").write_text("-1\t0.5\t1.5\t2.5\n1\t3\t4\tNaN\n")
    (tmp_path / "Ab_TEST.tsv").write_text("1\t1\tNaN\t3\n")
    ds = load_dataset(str(tmp_path / "Ab_TRAIN.tsv"))
    assert ds.name == "ab" and ds.label_names == ["-1", "1"]
    assert ds.X_train.shape == (2, 1, 3) and ds.y_train.tolist() == [0, 1]
    np.testing.assert_array_equal(ds.X_train[1, 0], [3, 4, 4])
    np.testing.assert_array_equal(ds.X_test[0, 0], [1, 2, 3])
    (tmp_path / "Ab_TEST.tsv").write_text("1\t1\t2\n")
    with pytest.raises(TsFormatError, match="series length differs"):
        load_dataset(str(tmp_path / "Ab_TRAIN.tsv"))


def test_a_single_file_without_twin_is_split_stratified(tmp_path: Path) -> None:
    rows = [f"{c}\t{c + i}\t{c - i}\t{i}" for c in (1, 2) for i in range(10)]
    (tmp_path / "Solo_TRAIN.tsv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(str(tmp_path / "Solo_TRAIN.tsv"))
    assert ds.name == "solo" and len(ds.y_train) == 14 and len(ds.y_test) == 6
    assert np.bincount(ds.y_test).tolist() == [3, 3]
    lines = [f"{','.join(str(v) for v in range(i + 3))}:{'ab'[i % 2]}" for i in range(10)]
    (tmp_path / "mine.ts").write_text("@classLabel true a b\n@data\n" + "\n".join(lines))
    ts = load_dataset(str(tmp_path / "mine.ts"))
    assert ts.name == "mine" and ts.X_train.shape == (6, 1, 12) and len(ts.y_test) == 4
    again = load_dataset(str(tmp_path / "mine.ts"))
    np.testing.assert_array_equal(ts.X_test, again.X_test)  # the split is deterministic


def test_samples_too_narrow_for_the_input_quantizer_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert warn_if_narrow(load_dataset("basicmotions")) == 0.0 and not caplog.records
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 1, 50)).astype(np.float32)
    X[::2] *= 1e-3  # half the series three orders of magnitude smaller
    y = np.arange(40) % 2
    ds = Dataset("mixed", X, y, X, y, ["a", "b"])
    assert warn_if_narrow(ds) == 0.5
    assert "50% of the training samples" in caplog.text and "--normalize-series" in caplog.text


def test_a_bundle_remembers_where_its_data_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "mine.npz"
    own.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert data_source("GunPoint") == "gunpoint" and data_source("mine.npz") == str(own)
    assert trained_data_spec({"dataset": "digits"}) == "digits"
    assert trained_data_spec({"dataset": "mine", "data_source": str(own)}) == str(own)
    assert trained_data_spec({}) == "basicmotions"
    own.unlink()
    with pytest.raises(FileNotFoundError, match=r"trained on 'mine' from .*mine\.npz.*--data"):
        trained_data_spec({"dataset": "mine", "data_source": str(own)})
    with pytest.raises(FileNotFoundError, match=r"trained on 'mine' \(not bundled\): give"):
        trained_data_spec({"dataset": "mine"})


def test_series_normalization_is_per_sample_and_channel() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3, 2, 40)).astype(np.float32) * [[[1e3], [1e-3]]] + 5.0
    X[2, 1] = 7.0  # a flat channel
    Z = normalize_series(X)
    assert Z.dtype == np.float32 and Z.shape == X.shape
    np.testing.assert_allclose(Z[:2].mean(axis=2), 0, atol=1e-4)
    np.testing.assert_allclose(Z[:2].std(axis=2), 1, atol=1e-4)
    np.testing.assert_array_equal(Z[2, 1], 0)
    np.testing.assert_allclose(normalize_series(X * 1e4 - 3), Z, atol=1e-4)  # scale-free
    ds = series_normalized(
        Dataset("x", X, np.zeros(3, np.int64), X[:1], np.zeros(1, np.int64), ["a"])
    )
    np.testing.assert_array_equal(ds.X_train, Z)
    np.testing.assert_array_equal(ds.X_test, Z[:1])


def test_unknown_file_types_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    for name, extra in (("x.txt", ""), ("x_TRAIN.arff", "as .ts too")):
        (tmp_path / name).write_text("1,2,3\n")
        with pytest.raises(ValueError, match=rf"use \.ts, \.tsv, .*\.npz\)[^\n]*{extra}"):
            load_dataset(str(tmp_path / name))


def test_users_npz_is_checked_before_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = {
        "X_train": rng.normal(size=(6, 2, 16)),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "X_test": rng.normal(size=(3, 2, 16)),
        "y_test": np.array([0, 1, 2]),
    }
    path = tmp_path / "mine.npz"
    np.savez(path, **good)
    ds = load_dataset(str(path))
    assert ds.input_shape == (2, 16) and ds.num_classes == 3
    for change, message in (
        ({"y_train": np.array([-1, 0, 2, -1, 0, 2])}, "train: label -1 is not a class index"),
        ({"y_test": np.array([0, 1])}, "test: 3 samples and 2 labels"),
        ({"X_test": rng.normal(size=(3, 2, 15))}, "the same in both splits"),
        ({"X_train": np.full((6, 2, 16), np.nan)}, "train: NaN or infinite"),
    ):
        np.savez(path, **{**good, **change})
        with pytest.raises(ValueError, match=message):
            load_dataset(str(path))
    np.savez(path, X_train=good["X_train"])
    with pytest.raises(ValueError, match="no X_test, y_test, y_train in the archive"):
        load_dataset(str(path))


@pytest.mark.parametrize(
    "text, message",
    [
        ("@classLabel true a b\n@data\n1,2,3:a\n1,2:3,4:b\n", "different channel counts"),
        ("@classLabel true a b\n@data\n1,2,3:?,?,?:a\n", ":3: channel 1: no values"),
        ("@timeStamps true\n@classLabel true a b\n@data\n(1,2),(2,3):a\n", "time-stamped"),
        ("@classLabel true a b\n@data\n1,2,x:a\n", ":3: bad value"),
        ("@classLabel true a b\n@data\n1,2,3:c\n", "not declared"),
        ("@data\n1,2,3:c\n", "no @classLabel"),
        ("@targetLabel true\n@data\n1,2,3:0.5\n", "regression data set"),
    ],
)
def test_ts_parser_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "x_TRAIN.ts"
    bad.write_text(text)
    with pytest.raises(TsFormatError, match=message):
        load_ts(bad)


def test_digits_csv_split_is_stratified_and_deterministic(tmp_path: Path) -> None:
    # the vendored digits written back as the public CSV (64 pixels, label last)
    vendored = load_dataset("digits")
    X = np.concatenate([vendored.X_train, vendored.X_test]).reshape(-1, 64)
    y = np.concatenate([vendored.y_train, vendored.y_test])
    csv = tmp_path / "digits.csv.gz"
    np.savetxt(csv, np.column_stack([X, y]), delimiter=",", fmt="%d")
    a = load_digits_csv(csv)
    b = load_digits_csv(csv)
    assert a.X_train.shape[1:] == (1, 8, 8)
    assert len(a.y_train) + len(a.y_test) == 1797
    np.testing.assert_array_equal(a.y_test, b.y_test)
    frac = np.bincount(a.y_test) / (np.bincount(a.y_test) + np.bincount(a.y_train))
    assert np.all(np.abs(frac - 0.3) < 0.02)


def test_vendored_sets_equal_the_raw_files(raw_data: Path) -> None:
    raw = load_ts_pair(raw_data / "uea" / "BasicMotions_TRAIN.ts")
    vendored = load_dataset("basicmotions")
    np.testing.assert_array_equal(raw.X_train, vendored.X_train)
    np.testing.assert_array_equal(raw.y_test, vendored.y_test)
    assert raw.label_names == vendored.label_names
    digits = load_dataset("digits")
    np.testing.assert_array_equal(digits.X_test, load_digits_csv(raw_data / "digits.csv.gz").X_test)


def test_normalization_uses_training_split_only() -> None:
    ds = load_dataset("basicmotions")
    mean, std = ds.normalization()
    np.testing.assert_allclose(mean, ds.X_train.mean(axis=(0, 2)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean, ds.X_test.mean(axis=(0, 2)), atol=1e-3)
    assert std.shape == (6,) and np.all(std > 0)


def test_stratified_split_partitions() -> None:
    y = np.repeat(np.arange(3), 10)
    tr, te = stratified_split(y, 0.3, 1)
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(30))
    assert np.bincount(y[te]).tolist() == [3, 3, 3]


def test_unknown_dataset_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="not one of"):
        load_dataset("nosuchset")


@pytest.mark.parametrize("kind", ["rotation", "gain", "offset", "noise", "dropout", "timewarp"])
def test_sensor_drifts_change_only_the_tail(kind: str) -> None:
    X = load_dataset("basicmotions").X_test[:10]
    out = Drift.parse(f"{kind}@4").apply_stream(X)
    np.testing.assert_array_equal(out[:4], X[:4])
    assert out.shape == X.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert not np.allclose(out[4:], X[4:])


def test_rotation_preserves_triplet_norms() -> None:
    x = load_dataset("basicmotions").X_test[0]
    y = Drift.parse("rotation:45@0").transform()(x)
    np.testing.assert_allclose(
        np.linalg.norm(y[:3], axis=0), np.linalg.norm(x[:3], axis=0), rtol=1e-4
    )


@pytest.mark.parametrize("kind", ["shift", "rotate", "contrast"])
def test_image_drifts(kind: str) -> None:
    X = load_dataset("digits").X_test[:5]
    out = Drift.parse(f"{kind}@0").apply_stream(X)
    assert out.shape == X.shape and not np.allclose(out, X)


@pytest.mark.parametrize("spec", ["rotation", "bogus@3", "gain:x@1", "gain@-1", "gain@"])
def test_bad_drift_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match="bad drift"):
        Drift.parse(spec)
