"""Bit packing round trips and layout; fixed-point multipliers."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from kernels.plan.fixedpoint import quantize_multiplier, requantize_reference
from kernels.plan.packing import (
    pack_flat,
    pack_rows,
    qrange,
    row_bytes,
    unpack_flat,
    unpack_rows,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("k", [1, 3, 5, 8, 13, 64, 150])
def test_pack_rows_round_trip(bits: int, k: int) -> None:
    rng = np.random.default_rng(bits * 1000 + k)
    lo, hi = qrange(bits)
    q = rng.integers(lo, hi + 1, size=(7, k))
    packed = pack_rows(q, bits)
    assert packed.dtype == np.uint8 and packed.shape == (7, row_bytes(k, bits))
    np.testing.assert_array_equal(unpack_rows(packed, k, bits), q)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_flat_round_trip_and_size(bits: int) -> None:
    rng = np.random.default_rng(bits)
    lo, hi = qrange(bits)
    q = rng.integers(lo, hi + 1, size=1001)
    packed = pack_flat(q, bits)
    assert packed.nbytes == (1001 * bits + 7) // 8
    np.testing.assert_array_equal(unpack_flat(packed, 1001, bits), q)


def test_layout_is_lsb_first() -> None:
    # 4-bit: codes q+8; [-8, 7] -> codes [0, 15] -> byte 0xF0 (low nibble first)
    assert pack_rows(np.array([[-8, 7]]), 4).tolist() == [[0xF0]]
    # 2-bit: codes [0,1,2,3] -> 0b11_10_01_00
    assert pack_rows(np.array([[-2, -1, 0, 1]]), 2).tolist() == [[0b11100100]]
    # 3-bit: eight codes 0..7 -> 24-bit stream 0o76543210
    assert pack_rows(np.arange(8).reshape(1, 8) - 4, 3).tolist() == [[0x88, 0xC6, 0xFA]]


def test_out_of_range_and_bad_bits_rejected() -> None:
    with pytest.raises(ValueError, match="outside the 2-bit range"):
        pack_rows(np.array([[2]]), 2)
    with pytest.raises(ValueError, match="unsupported weight bit-width"):
        pack_rows(np.array([[0]]), 5)
    with pytest.raises(ValueError, match="expected"):
        unpack_rows(np.zeros((2, 3), np.uint8), 64, 4)


@pytest.mark.parametrize("m", [1e-6, 0.00123, 0.3, 0.5, 0.999999, 1.0, 7.5])
def test_quantize_multiplier_is_accurate(m: float) -> None:
    m0, shift = quantize_multiplier(m)
    assert 2**30 <= m0 < 2**31 and 1 <= shift <= 62
    assert abs(m0 * 2.0**-shift - m) <= m * 2**-30


def test_tiny_and_invalid_multipliers() -> None:
    assert quantize_multiplier(1e-30) == (0, 1)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)


def _gemmlowp(acc: int, m0: int, shift: int) -> int:
    """gemmlowp's MultiplyByQuantizedMultiplier on Python integers, from its definition."""
    left, right = max(31 - shift, 0), min(max(shift - 31, 0), 31)
    x = min(max(acc << left, -(2**31)), 2**31 - 1)  # saturating left shift
    h = (x * m0 + 2**30) // 2**31  # rounding doubling high multiplication: half up
    q = Fraction(h, 2**right)
    return int(math.copysign(math.floor(abs(q) + Fraction(1, 2)), q))  # half away from zero


def test_requantize_reference_is_gemmlowp_fixed_point() -> None:
    rng = np.random.default_rng(3)
    acc = rng.integers(-(2**31), 2**31, 4000)
    acc[:8] = [1, -1, 3, -3, 2**31 - 1, -(2**31), 0, 6]
    m0 = rng.integers(2**30, 2**31, 4000)
    m0[:8] = 1 << 30
    shift = rng.integers(1, 63, 4000)
    shift[:8] = [31, 31, 32, 32, 20, 20, 40, 32]
    out = requantize_reference(acc.astype(np.int32), m0.astype(np.int32), shift.astype(np.int32))
    want = [_gemmlowp(int(a), int(m), int(s)) for a, m, s in zip(acc, m0, shift, strict=True)]
    assert out.tolist() == want
    assert out[:8].tolist() == [1, 0, 1, -1, 2**30, -(2**30), 0, 2]  # 2^30: saturated
    # within one step of the exact product wherever the left shift did not saturate
    exact = [Fraction(int(a) * int(m), 2 ** int(s)) for a, m, s in zip(acc, m0, shift, strict=True)]
    fits = [abs(int(a)) << max(31 - int(s), 0) < 2**31 for a, s in zip(acc, shift, strict=True)]
    assert all(abs(o - e) <= 1 for o, e, f in zip(out.tolist(), exact, fits, strict=True) if f)
