"""The QCore buffer's per-sample arrays: their dtypes and shapes, checked on the way in
(an update, the bundle's QCore, a saved state)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

UNKNOWN, WRONG, RIGHT = -1, 0, 1  # values of the per-bit-width last correctness

# name -> (dtype, trailing shape after the sample axis: None = input shape, "bits" = (B,))
ROW_FIELDS: dict[str, tuple[type, Any]] = {
    "X": (np.float32, None),
    "y": (np.int64, ()),
    "labelled": (np.bool_, ()),
    "misses": (np.float32, ()),
    "last_correct": (np.int8, "bits"),
    "source": (np.uint8, ()),
    "time": (np.float64, ()),
    "seq": (np.int64, ()),
    "train_index": (np.int64, ()),
}


def checked_rows(
    rows: Mapping[str, np.ndarray],
    input_shape: tuple[int, ...],
    widths: int,
    where: str,
    strict: bool = False,
) -> dict[str, np.ndarray]:
    """Copies of the per-sample arrays ``rows`` in the buffer's dtypes (with ``strict``:
    they must have them), shapes checked; ValueError naming ``where`` and the field."""
    n = len(rows["y"])
    out: dict[str, np.ndarray] = {}
    for name, (dtype, tail) in ROW_FIELDS.items():
        a = np.asarray(rows[name])
        shape = (n, *input_shape) if tail is None else (n, widths) if tail == "bits" else (n,)
        if a.shape != shape:
            raise ValueError(f"{where}: {name!r} has shape {a.shape}, expected {shape}")
        if strict and a.dtype != np.dtype(dtype):
            raise ValueError(f"{where}: {name!r} has dtype {a.dtype}, expected {np.dtype(dtype)}")
        out[name] = np.ascontiguousarray(a, dtype=dtype).copy()
    if not np.all(np.isfinite(out["X"])):
        raise ValueError(f"{where}: samples contain NaN or infinity")
    if np.any(out["misses"] < 0) or not np.all(np.isfinite(out["misses"])):
        raise ValueError(f"{where}: miss counts must be finite and non-negative")
    if not np.isin(out["last_correct"], (UNKNOWN, WRONG, RIGHT)).all():
        raise ValueError(f"{where}: last correctness must be -1, 0 or 1")
    return out
