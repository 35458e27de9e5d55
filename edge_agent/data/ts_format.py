"""Parser for the sktime/aeon ``.ts`` text format (UEA/UCR archives).

Series of unequal length (``@equalLength false``, e.g. JapaneseVowels) are brought to the
longest length, as the model's input shape is fixed: shorter ones are padded at the end
with their last value. Missing values (``?`` or ``NaN``) are filled by linear
interpolation along time within their series.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MISSING = frozenset({"?", "nan", "NaN"})


class TsFormatError(ValueError):
    """A ``.ts`` file does not follow the format."""


@dataclass(frozen=True)
class TsCases:
    """The cases of one ``.ts`` file: series of their own lengths, missing values filled."""

    series: list[np.ndarray]  # per case (channels, length) float32
    y: np.ndarray  # int64 indices into class_names
    class_names: list[str]  # the order of the @classLabel header

    @property
    def lengths(self) -> list[int]:
        """Series length of every case."""
        return [s.shape[1] for s in self.series]


def read_ts(path: str | Path) -> TsCases:
    """Read a labelled ``.ts`` file without changing its series."""
    path = Path(path)
    class_names: list[str] | None = None
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    ragged = 0
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                low = line.lower()
                if low.startswith("@classlabel"):
                    parts = line.split()
                    if len(parts) < 3 or parts[1].lower() != "true":
                        raise TsFormatError(
                            f"{path}:{lineno}: only labelled data sets are supported"
                        )
                    class_names = parts[2:]
                elif low.startswith("@targetlabel") and line.split()[-1].lower() == "true":
                    raise TsFormatError(
                        f"{path}:{lineno}: a regression data set (@targetLabel true); "
                        "edge-agent trains classifiers and needs @classLabel true with the classes"
                    )
                elif low.startswith("@timestamps") and line.split()[-1].lower() == "true":
                    raise TsFormatError(f"{path}:{lineno}: time-stamped series are not supported")
                elif low.startswith("@data"):
                    in_data = True
                continue
            *channels, label = line.split(":")
            if not channels:
                raise TsFormatError(f"{path}:{lineno}: a case needs channel values and a label")
            case = _case(channels, f"{path}:{lineno}")
            ragged += case[1]
            series.append(case[0])
            labels.append(label.strip())
    if class_names is None:
        raise TsFormatError(f"{path}: no @classLabel header")
    if not in_data:
        raise TsFormatError(f"{path}: no @data line (the cases follow a line '@data')")
    if not series:
        raise TsFormatError(f"{path}: no data after @data")
    if ragged:  # unusual within a case (across cases it is @equalLength false): say so
        log.warning(
            "%s: %d case%s channels of different lengths, padded to the longest with "
            "their last value",
            path,
            ragged,
            " has" if ragged == 1 else "s have",
        )
    n_channels = {len(s) for s in series}
    if len(n_channels) != 1:
        raise TsFormatError(f"{path}: cases have different channel counts {sorted(n_channels)}")
    unknown = sorted(set(labels) - set(class_names))
    if unknown:
        raise TsFormatError(f"{path}: labels {unknown} not declared in @classLabel")
    y = np.asarray([class_names.index(lab) for lab in labels], dtype=np.int64)
    return TsCases(series, y, class_names)


def _case(channels: list[str], where: str) -> tuple[np.ndarray, bool]:
    """One case's channels (C, T) and whether they were ragged (then padded like ragged
    cases)."""
    try:
        values = [
            [np.nan if v.strip() in MISSING else float(v) for v in ch.split(",")] for ch in channels
        ]
    except ValueError as exc:
        raise TsFormatError(f"{where}: bad value: {exc}") from None
    length = max(len(v) for v in values)
    padded = [
        pad_end(fill_missing(np.asarray(v, np.float32), f"{where}: channel {c}"), length)
        for c, v in enumerate(values)
    ]
    return np.stack(padded), min(len(v) for v in values) != length


def pad_end(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` (..., T) padded along its last axis to ``length`` with its last value."""
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])], mode="edge")


def fill_missing(x: np.ndarray, where: str) -> np.ndarray:
    """One series ``x`` with NaNs replaced by linear interpolation (the nearest value at
    the ends)."""
    bad = np.isnan(x)
    if not bad.any():
        return x
    if bad.all():
        raise TsFormatError(f"{where}: no values, only missing ones")
    t = np.arange(len(x))
    return np.interp(t, t[~bad], x[~bad]).astype(np.float32)


def load_ts_files(*paths: str | Path) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Read ``.ts`` files at one series length, the longest in any of them: per file
    ``(X, y, class_names)``, X float32 (cases, channels, length), y int64 indices into
    ``class_names`` (the order of its ``@classLabel`` header)."""
    files = [read_ts(p) for p in paths]
    lengths = [n for f in files for n in f.lengths]
    if min(lengths) != max(lengths):
        log.info(
            "%s: series of %d..%d steps padded to %d with their last value",
            ", ".join(str(p) for p in paths),
            min(lengths),
            max(lengths),
            max(lengths),
        )
    return [
        (np.stack([pad_end(s, max(lengths)) for s in f.series]), f.y, f.class_names) for f in files
    ]


def load_ts(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One ``.ts`` file as :func:`load_ts_files` reads it."""
    return load_ts_files(path)[0]
