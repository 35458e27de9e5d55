"""Fixed-point representation of float requantization multipliers."""

from __future__ import annotations

import math

import numpy as np

MAX_SHIFT = 62
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


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


def split_shift(shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) int64 shifts of ``m0 * 2^-shift``: ``left = max(31 - shift, 0)`` before
    the Q31 high multiplication, ``right = clip(shift - 31, 0, 31)`` after it."""
    s = np.asarray(shift, dtype=np.int64)
    return np.maximum(31 - s, 0), np.clip(s - 31, 0, 31)


def requantize_reference(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``acc * m0 * 2^-shift`` in gemmlowp's int32 fixed point (numpy reference, int64 out).

    ``x = sat32(acc << left)``, ``h = SaturatingRoundingDoublingHighMul(x, m0)`` (round half
    up: ``(x * m0 + 2^30) >> 31``; ``m0 > 0`` never saturates) and
    ``RoundingDivideByPOT(h, right)`` (round half away from zero), with the shifts of
    :func:`split_shift`. Every intermediate fits int32, as in the kernels' epilogue.
    """
    left, right = split_shift(shift)
    x = np.clip(acc.astype(np.int64) << left, INT32_MIN, INT32_MAX)
    h = (x * m0.astype(np.int64) + (1 << 30)) >> 31
    mask = (np.int64(1) << right) - 1
    threshold = (mask >> 1) + (h < 0)
    return (h >> right) + ((h & mask) > threshold)
