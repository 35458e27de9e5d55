"""``copy_bytes`` (the view-free copy im2col uses) against slice assignment, and its IR on
the boards' CPUs."""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils

from kernels.codegen.listing import emit_assembly
from kernels.codegen.memcopy import copy_blocks, copy_bytes


@numba.njit
def _copy(dst: np.ndarray, d: int, src: np.ndarray, s: int, n: int) -> None:
    copy_bytes(dst, d, src, s, n)


@numba.njit
def _copy_blocks(dst: np.ndarray, d: int, src: np.ndarray, s: int, n: int) -> None:
    copy_blocks(dst, d, src, s, n)


def test_copy_blocks_copies_whole_blocks_and_nothing_more() -> None:
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, 400).astype(np.uint8)
    for n in (0, 1, 3, 63, 64, 65, 96, 128, 130):
        s, d = int(rng.integers(0, 200)), int(rng.integers(0, 50))
        got = np.zeros(300, np.uint8)
        _copy_blocks(got, d, src, s, n)
        m = -(-n // 64) * 64  # whole blocks
        np.testing.assert_array_equal(got[d : d + m], src[s : s + m])
        assert not got[:d].any() and not got[d + m :].any(), n


def test_copy_bytes_equals_slice_assignment() -> None:
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, 300).astype(np.uint8)
    for _ in range(50):
        n = int(rng.integers(0, 100))
        s, d = int(rng.integers(0, 300 - n + 1)), int(rng.integers(0, 200 - n + 1))
        got = rng.integers(0, 256, 200).astype(np.uint8)
        want = got.copy()
        want[d : d + n] = src[s : s + n]
        _copy(got, d, src, s, n)
        assert np.array_equal(got, want), (s, d, n)


def test_memcpy_lowers_for_the_pi_4_and_pi_5_cpus() -> None:
    # the intrinsic emits llvm.memcpy; it must compile for the boards' cores as well
    for cpu in ("cortex-a72", "cortex-a76"):
        module = ir.Module(name="memcopy_test")
        module.triple = "aarch64-unknown-linux-gnu"
        ptr = ir.IntType(8).as_pointer()
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, ir.IntType(64)]), "cp")
        builder = ir.IRBuilder(fn.append_basic_block())
        cgutils.raw_memcpy(builder, fn.args[0], fn.args[1], fn.args[2], 1)
        builder.ret_void()
        assert "memcpy" in emit_assembly(module, cpu, opt=2)
