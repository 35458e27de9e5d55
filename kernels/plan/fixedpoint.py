"""Fixed-point representation of float requantization multipliers."""

from __future__ import annotations

import math

import numpy as np

MAX_SHIFT = 62


def quantize_multiplier(m: float) -> tuple[int, int]:
    """Represent a positive real multiplier as ``m0 * 2**-shift``.

    ``m0`` lies in [2^30, 2^31) and ``shift`` in [1, 62]; a multiplier too small for that
    range gives ``(0, 1)`` (everything rounds to zero). Raises ValueError for m <= 0,
    NaN or a multiplier >= 2^30 (no sane layer has one).
    """
    if not math.isfinite(m) or m <= 0.0:
        raise ValueError(f"requantization multiplier must be positive and finite, got {m}")
    mant, exp = math.frexp(m)  # m = mant * 2**exp, mant in [0.5, 1)
    m0 = round(mant * (1 << 31))
    if m0 == 1 << 31:  # mantissa rounded up to 1.0
        m0 //= 2
        exp += 1
    shift = 31 - exp
    if shift < 1:
        raise ValueError(f"requantization multiplier {m} is too large")
    if shift > MAX_SHIFT:
        return 0, 1
    return int(m0), int(shift)


def quantize_multipliers(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized :func:`quantize_multiplier`: returns (m0 int32[], shift int32[])."""
    pairs = [quantize_multiplier(float(v)) for v in np.asarray(m, dtype=np.float64).ravel()]
    m0 = np.array([p[0] for p in pairs], dtype=np.int32)
    shift = np.array([p[1] for p in pairs], dtype=np.int32)
    return m0, shift


def requantize_reference(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Round-half-away-from-zero ``acc * m0 * 2^-shift`` in int64 (numpy reference)."""
    p = acc.astype(np.int64)
    p *= m0.astype(np.int64)
    negative = p < 0
    s = shift.astype(np.int64)
    np.abs(p, out=p)
    p += np.left_shift(np.int64(1), s - 1)  # half
    p >>= s
    np.negative(p, out=p, where=negative)
    return p
