"""bench/kernel_rate.py: the peak loop really runs its dot products, the GEMM case its rows."""

from __future__ import annotations

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
