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


def requant_scale(m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The float32 multiplier the kernels apply: ``float32(m0) * 2^-shift`` (m0 rounded to
    float32's 24 bits once; the power of two is exact for every shift the plans hold)."""
    m = np.asarray(m0).astype(np.float32)
    return np.ldexp(m, -np.asarray(shift).astype(np.int32)).astype(np.float32)


def requantize_reference(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``acc * m0 * 2^-shift`` as the kernels compute it (numpy reference, int64):
    ``float32(acc) * requant_scale(m0, shift)`` in float32, rounded to the nearest integer,
    ties to even. Every step is one IEEE operation, so any machine gets the same codes."""
    y = np.asarray(acc).astype(np.float32) * requant_scale(m0, shift)
    return np.rint(y).astype(np.int64)
