"""Named data sets and loading from users' own files.

``basicmotions``, ``gunpoint`` and ``digits`` are vendored inside the package as compact
``.npz`` files (see ``vendored/PROVENANCE.md``), so the product works on a board with no
other data. A path to a ``.ts`` training file (UEA/UCR as aeon/sktime ship them) or a
``.tsv`` one (the UCR 2018 archive: label, then the values of a univariate series), each
with its ``_TEST`` twin beside it (or alone: a stratified part is held out), a
``digits``-style ``.csv``/``.csv.gz`` or an ``.npz`` with X_train/y_train/X_test/y_test
loads users' own data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.data.ts_format import TsFormatError, fill_missing, load_ts_files

log = logging.getLogger(__name__)

VENDORED_DIR = Path(__file__).parent / "vendored"
NAMED = ("basicmotions", "gunpoint", "digits")
TEST_FRACTION = 0.3  # held out of a data set that comes as one file
SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """A train/test split of channels-first samples with class names."""

    name: str
    X_train: np.ndarray  # (n, C, ...) float32
    y_train: np.ndarray  # (n,) int64
    X_test: np.ndarray
    y_test: np.ndarray
    label_names: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(int(v) for v in self.X_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.label_names)

    def normalization(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std over the training split only (std floored at 1e-6)."""
        axes = (0, *range(2, self.X_train.ndim))
        mean = self.X_train.mean(axis=axes, dtype=np.float64)
        std = self.X_train.std(axis=axes, dtype=np.float64)
        return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def normalize_series(X: np.ndarray) -> np.ndarray:
    """Every sample's channels z-normalized over their own time (or pixel) axes, float32;
    a flat channel becomes zeros."""
    axes = tuple(range(2, X.ndim))
    mean = X.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = X.std(axis=axes, keepdims=True, dtype=np.float64)
    return ((X - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def series_normalized(ds: Dataset) -> Dataset:
    """``ds`` with :func:`normalize_series` applied to both splits."""
    return dataclasses.replace(
        ds, X_train=normalize_series(ds.X_train), X_test=normalize_series(ds.X_test)
    )


def narrow_fraction(ds: Dataset, levels: int = 256) -> float:
    """Fraction of training samples whose normalized values span fewer than 2 of the
    ``levels`` steps that the whole training set spans: an 8-bit input quantizer set for
    the set's range cannot tell their shapes apart (amplitudes that differ by orders of
    magnitude between samples)."""
    mean, std = ds.normalization()
    shape = (1, -1) + (1,) * (ds.X_train.ndim - 2)
    z = ((ds.X_train - mean.reshape(shape)) / std.reshape(shape)).reshape(len(ds.X_train), -1)
    step = (z.max() - z.min()) / (levels - 1)
    return float(np.mean(np.ptp(z, axis=1) < 2 * step))


def warn_if_narrow(ds: Dataset, limit: float = 0.1) -> float:
    """Log a warning with the remedy when more than ``limit`` of the training samples are
    too narrow for the input quantizer (:func:`narrow_fraction`); return the fraction."""
    narrow = narrow_fraction(ds)
    if narrow > limit:
        log.warning(
            "%s: %.0f%% of the training samples span less than 2 of the 256 input "
            "quantization steps (amplitudes differ by orders of magnitude between samples): "
            "the quantized model cannot tell their shapes apart; train with "
            "--normalize-series (the agent then z-normalizes every sample it receives)",
            ds.name,
            100 * narrow,
        )
    return narrow


def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with every class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits_csv(path: str | Path) -> Dataset:
    """Read a digits-style CSV (64 pixel columns, label last) into 1x8x8 images, split
    stratified."""
    try:
        raw = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except (ValueError, OSError) as exc:  # numpy's words name no file (gzip's: OSError)
        raise ValueError(f"{path}: not a digits-style CSV (numbers only): {exc}") from None
    if raw.shape[1] != 65:
        raise ValueError(f"{path}: expected 65 columns (8x8 pixels + label), got {raw.shape}")
    y = class_indices(raw[:, 64], f"{path}: label column")
    names = index_names(y)
    return held_out_split("digits", raw[:, :64].reshape(-1, 1, 8, 8), y, names)


def held_out_split(name: str, X: np.ndarray, y: np.ndarray, names: list[str]) -> Dataset:
    """One file's samples as a data set: a stratified ``TEST_FRACTION`` held out (fixed
    seed)."""
    tr, te = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
    return Dataset(name, X[tr], y[tr], X[te], y[te], names)


def _split_files(path: Path) -> tuple[list[Path], str]:
    """The files of a data set and its name: ``NAME_TRAIN.ext`` and its ``NAME_TEST.ext``
    twin, or one file (no twin) from which a test split is held out."""
    name = (path.name.split("_TRAIN")[0] if "_TRAIN" in path.name else path.stem).lower()
    test_path = path.with_name(path.name.replace("_TRAIN", "_TEST"))
    if "_TRAIN" in path.name and test_path.exists():
        return [path, test_path], name
    log.warning(
        "%s: no *_TEST%s twin beside it; holding out a stratified %d%% of it for testing",
        path,
        path.suffix,
        round(100 * TEST_FRACTION),
    )
    return [path], name


def load_ts_pair(train_path: str | Path) -> Dataset:
    """Read ``NAME_TRAIN.ts`` and its ``NAME_TEST.ts`` twin (at one series length), or one
    ``.ts`` file split stratified."""
    paths, name = _split_files(Path(train_path))
    loaded = load_ts_files(*paths)
    X_tr, y_tr, names = loaded[0]
    if len(loaded) == 1:
        return held_out_split(name, X_tr, y_tr, names)
    X_te, y_te_raw, names_te = loaded[1]
    if names_te != names:
        y_te = np.asarray([names.index(names_te[i]) for i in y_te_raw], dtype=np.int64)
    else:
        y_te = y_te_raw
    if X_te.shape[1:] != X_tr.shape[1:]:
        raise ValueError(f"{paths[1]}: sample shape {X_te.shape[1:]} differs from {X_tr.shape[1:]}")
    return Dataset(name, X_tr, y_tr, X_te, y_te, names)


def load_tsv_pair(train_path: str | Path) -> Dataset:
    """Read the UCR archive's ``NAME_TRAIN.tsv`` and ``NAME_TEST.tsv`` (or one ``.tsv``
    split stratified): one univariate series per line, its class label first,
    tab-separated; NaN pads shorter series (they are padded with their last value instead)
    and marks missing values (interpolated). Classes are the labels in sorted order."""
    paths, name = _split_files(Path(train_path))
    raw = []
    for path in paths:
        table = _read_tsv(path)
        if table.shape[1] < 2 or np.isnan(table[:, 0]).any():
            raise TsFormatError(f"{path}: every line needs a class label and values")
        raw.append(table)
    if raw[0].shape[1] != raw[-1].shape[1]:
        raise TsFormatError(f"{paths[-1]}: series length differs from {paths[0]}'s")
    classes = np.unique(np.concatenate([t[:, 0] for t in raw]))
    names = [f"{c:g}" for c in classes]
    X = [
        np.stack(
            [fill_missing(row[1:].astype(np.float32), f"{path}:{i + 1}") for i, row in enumerate(t)]
        )[:, None, :]
        for path, t in zip(paths, raw, strict=True)
    ]
    y = [np.searchsorted(classes, t[:, 0]).astype(np.int64) for t in raw]
    if len(paths) == 1:
        return held_out_split(name, X[0], y[0], names)
    return Dataset(name, X[0], y[0], X[1], y[1], names)


def _read_tsv(path: Path) -> np.ndarray:
    """A UCR ``.tsv`` as a float table, rows shorter than the longest padded with NaN
    (filled later as the archive's own padding is)."""
    rows: list[list[float]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            if line.strip():
                rows.append([float(v) for v in line.split("\t")])
        except ValueError as exc:
            raise TsFormatError(f"{path}:{lineno}: not tab-separated numbers: {exc}") from None
    if not rows:
        raise TsFormatError(f"{path}: no series in it")
    table = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for i, row in enumerate(rows):
        table[i, : len(row)] = row
    return table


def class_indices(y: np.ndarray, where: str) -> np.ndarray:
    """Labels ``y`` as int64 class indices; ValueError when they are not whole numbers
    (strings, fractions, NaN), which a cast would silently change."""
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind != "f" or not np.array_equal(y, np.round(y)):
        shown = y.dtype if y.dtype.kind != "f" else next(v for v in y if v != np.round(v))
        raise ValueError(f"{where}: labels must be class indices (whole numbers), got {shown}")
    return y.astype(np.int64)


def index_names(y: np.ndarray) -> list[str]:
    """Class names ``"0".."max"`` for labels that are class indices."""
    return [str(c) for c in range(int(y.max()) + 1 if len(y) else 0)]


def _real(X: np.ndarray, where: str) -> np.ndarray:
    """Samples as float32; ValueError for a type that is not real numbers (complex values
    would lose their imaginary part)."""
    if X.dtype.kind not in "iuf":
        raise ValueError(f"{where}: samples must be real numbers, got {X.dtype}")
    return X.astype(np.float32)


def load_npz(path: str | Path, name: str | None = None) -> Dataset:
    """Read an ``.npz`` with X_train, y_train, X_test, y_test and a label_names JSON."""
    if not zipfile.is_zipfile(path):  # np.load would try to unpickle it
        raise ValueError(f"{path}: not an .npz archive (numpy.savez writes one)")
    with np.load(path, allow_pickle=False) as z:
        missing = {"X_train", "y_train", "X_test", "y_test"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: no {', '.join(sorted(missing))} in the archive")
        try:
            arrays = {key: z[key] for key in ("X_train", "y_train", "X_test", "y_test")}
            names = (
                json.loads(bytes(z["label_names_json"]).decode())
                if "label_names_json" in z
                else None
            )
        except ValueError as exc:  # object arrays: pickled Python objects, never loaded
            raise ValueError(f"{path}: holds arrays that are not numbers ({exc})") from None
    y_train = class_indices(arrays["y_train"], f"{path}: y_train")
    return Dataset(
        name or Path(path).stem,
        _real(arrays["X_train"], f"{path}: X_train"),
        y_train,
        _real(arrays["X_test"], f"{path}: X_test"),
        class_indices(arrays["y_test"], f"{path}: y_test"),
        [str(n) for n in names] if names is not None else index_names(y_train),
    )


def save_npz(ds: Dataset, path: str | Path) -> None:
    """Write a data set in the vendored ``.npz`` form (compressed, no pickle)."""
    np.savez_compressed(
        path,
        X_train=ds.X_train.astype(np.float32),
        y_train=ds.y_train.astype(np.int8),
        X_test=ds.X_test.astype(np.float32),
        y_test=ds.y_test.astype(np.int8),
        label_names_json=np.frombuffer(json.dumps(ds.label_names).encode(), dtype=np.uint8),
    )


def load_dataset(spec: str) -> Dataset:
    """Load a named vendored data set or a user file (``.ts``, ``.tsv``, ``.csv[.gz]``,
    ``.npz``)."""
    key = spec.lower()
    if key in NAMED:
        return load_npz(VENDORED_DIR / f"{key}.npz", name=key)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"data set {spec!r}: not one of {NAMED} and no such file")
    loaders: dict[str, Callable[[Path], Dataset]] = {
        ".ts": load_ts_pair,
        ".tsv": load_tsv_pair,
        ".npz": load_npz,
        ".csv": load_digits_csv,
    }
    kind = ".csv" if path.name.endswith((".csv", ".csv.gz")) else path.suffix
    if kind not in loaders:
        hint = " (the UEA/UCR archive ships every .arff data set as .ts too)" * (kind == ".arff")
        raise ValueError(
            f"{spec}: unknown data file type (use .ts, .tsv, .csv, .csv.gz or .npz){hint}"
        )
    try:
        return checked(loaders[kind](path), spec)
    except UnicodeDecodeError:  # binary bytes in a text format; the codec's words name no file
        raise ValueError(f"{spec}: not a text file (UTF-8), as its type must be") from None


def data_source(spec: str) -> str:
    """How a bundle records the data it was trained on: a bundled set's name, else the
    file's absolute path."""
    return spec.lower() if spec.lower() in NAMED else str(Path(spec).resolve())


def trained_data_spec(meta: Mapping[str, Any]) -> str:
    """What ``--data`` means for a bundle when it is not given: the data it was trained on
    (see :func:`data_source`); FileNotFoundError when that file is not here."""
    source = str(meta.get("data_source") or meta.get("dataset") or NAMED[0])
    if source.lower() in NAMED or Path(source).exists():
        return source
    where = f"from {source}, which is not here" if "data_source" in meta else "(not bundled)"
    raise FileNotFoundError(
        f"the bundle was trained on {meta.get('dataset')!r} {where}: give the data set with --data"
    )


def checked(ds: Dataset, source: str) -> Dataset:
    """``ds`` if it can train a model: (C, T) or (C, H, W) samples, the same shape in both
    splits, one label per sample, labels 0..classes-1, finite values; else ValueError
    naming what is wrong."""
    problems = []
    if ds.X_train.ndim not in (3, 4) or ds.X_train.shape[1:] != ds.X_test.shape[1:]:
        problems.append(
            f"samples must be (C, T) or (C, H, W), the same in both splits: train "
            f"{ds.X_train.shape[1:]}, test {ds.X_test.shape[1:]}"
        )
    for split, X, y in (("train", ds.X_train, ds.y_train), ("test", ds.X_test, ds.y_test)):
        if len(X) != len(y) or len(X) == 0:
            problems.append(f"{split}: {len(X)} samples and {len(y)} labels")
        elif y.min() < 0:
            problems.append(f"{split}: label {int(y.min())} is not a class index (0 and up)")
        elif y.max() >= ds.num_classes:
            problems.append(
                f"{split}: labels {int(y.min())}..{int(y.max())} are not class indices "
                f"0..{ds.num_classes - 1}"
            )
        if not np.isfinite(X).all():
            problems.append(f"{split}: NaN or infinite values")
    present = np.unique(ds.y_train)
    if len(present) == 1 and 0 <= present[0] < ds.num_classes:
        problems.append(
            f"train: every sample is of one class ({ds.label_names[int(present[0])]!r}); "
            "a classifier needs at least two"
        )
    if problems:
        raise ValueError(f"data set {source}: " + "; ".join(problems))
    return ds
