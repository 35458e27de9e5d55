"""bench/kernel_rate.py: the peak loop really runs its dot products, the GEMM case its rows."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.codegen.isa import ACTIVE_ISA

pytestmark = pytest.mark.skipif(ACTIVE_ISA != "avx512vnni", reason="AVX-512 VNNI only")


def test_peak_loop_sums_every_dot_product() -> None:
    from bench.kernel_rate import _peak

    # lane 0 of chain i starts at i and gains 4 * (1 * 2) per iteration; 16 chains summed
    assert _peak(0) == sum(range(16))
    assert _peak(1000) == sum(range(16)) + 16 * 8 * 1000


def test_gemm_case_counts_and_runs() -> None:
    from bench.kernel_rate import gemm_case

    call, dots = gemm_case(30, 40, 24)
    assert dots == 24 * 3 * 8  # rows x blocks of 16 channels x padded K / 4
    call()  # runs on its own arrays without raising


def _int64_codes(a: np.ndarray, bias: np.ndarray, m0: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The former epilogue in numpy: int64 product rounded half away from zero, to [0, 255]."""
    p = (a.astype(np.int64) + bias).astype(np.int32).astype(np.int64) * m0
    s = shift.astype(np.int64)
    r = np.sign(p) * ((np.abs(p) + (np.int64(1) << (s - 1))) >> s)
    return np.clip(r, 0, 255)


def test_epilogue_overlap_loops_requantize_as_stated() -> None:
    """Both forms of bench/epilogue_overlap.py compute their requantization (lane 0 of every
    iteration's codes, xor-folded) besides all the dot products."""
    from bench.epilogue_overlap import loop
    from kernels.plan.fixedpoint import requantize_reference

    rng = np.random.default_rng(1)
    buf = rng.integers(-(2**20), 2**20, 64 * 16 + 16).astype(np.int32)
    bias = rng.integers(-1000, 1000, 16).astype(np.int32)
    m0 = rng.integers(2**30, 2**31 - 1, 16).astype(np.int32)
    shift = rng.integers(30, 34, 16).astype(np.int32)
    rows = buf[: 64 * 16].reshape(64, 16)
    dots = sum(range(16)) + 16 * 8 * 64
    lane = slice(0, 1)
    want = {
        "int64": _int64_codes(rows[:, lane], bias[lane], m0[lane], shift[lane]),
        "float32": np.clip(
            requantize_reference(rows[:, lane] + bias[lane], m0[lane], shift[lane]), 0, 255
        ),
    }
    for form, codes in want.items():
        fold = np.bitwise_xor.reduce(codes.ravel().astype(np.uint8))
        assert loop(1, form)(64, buf, bias, m0, shift) == dots + int(fold)
