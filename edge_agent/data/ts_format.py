"""Parser for the sktime/aeon ``.ts`` text format (UEA/UCR archives)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TsFormatError(ValueError):
    """A ``.ts`` file does not follow the format."""


def load_ts(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read an equal-length ``.ts`` file.

    Returns ``(X, y, class_names)``: X float32 (cases, channels, length), y int64 indices
    into ``class_names`` (the order of the ``@classLabel`` header).
    """
    path = Path(path)
    class_names: list[str] | None = None
    cases: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
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
                elif low.startswith("@data"):
                    in_data = True
                elif low.startswith("@missing") and line.split()[-1].lower() == "true":
                    raise TsFormatError(f"{path}:{lineno}: missing values are not supported")
                continue
            *channels, label = line.split(":")
            if not channels:
                raise TsFormatError(f"{path}:{lineno}: a case needs channel values and a label")
            try:
                cases.append([[float(v) for v in ch.split(",")] for ch in channels])
            except ValueError as exc:
                raise TsFormatError(f"{path}:{lineno}: bad value: {exc}") from None
            labels.append(label.strip())
    if class_names is None:
        raise TsFormatError(f"{path}: no @classLabel header")
    if not cases:
        raise TsFormatError(f"{path}: no data after @data")
    lengths = {len(ch) for c in cases for ch in c}
    n_channels = {len(c) for c in cases}
    if len(lengths) != 1 or len(n_channels) != 1:
        raise TsFormatError(
            f"{path}: unequal series lengths {sorted(lengths)} or channel counts "
            f"{sorted(n_channels)}"
        )
    unknown = sorted(set(labels) - set(class_names))
    if unknown:
        raise TsFormatError(f"{path}: labels {unknown} not declared in @classLabel")
    X = np.asarray(cases, dtype=np.float32)
    y = np.asarray([class_names.index(lab) for lab in labels], dtype=np.int64)
    return X, y, class_names
