"""Bit packing round trips and layout; fixed-point multipliers."""

from __future__ import annotations

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


def test_requantize_rounds_half_to_even() -> None:
    m0, shift = 1 << 30, 31  # exactly 0.5
    acc = np.array([1, -1, 3, -3, 4, -4, 0, 5])
    out = requantize_reference(acc, np.full(8, m0), np.full(8, shift))
    assert out.tolist() == [0, 0, 2, -2, 2, -2, 0, 2]
