"""The AVX2 micro-kernel path (``vpmaddwd``, :mod:`kernels.codegen.madd`), from any host.

Its choice, that its reduction loop lowers to 16-bit multiply-adds held in registers on a
CPU without AVX-512, and its bit-exactness at every bit-width in a child process that
forces it (on this machine's own ISA the kernel tests check it too).
"""

from __future__ import annotations

import re

import numba
import numpy as np
import pytest
from test_engine import ARCHS, _run_snippet, reference_snippet

from kernels.codegen import isa, madd
from kernels.codegen.listing import accumulate_assembly


def test_detect_picks_avx2_without_vnni(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isa.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(isa, "host_features", lambda: {"avx2", "fma"})  # Zen 3
    assert isa.detect() == "avx2"
    monkeypatch.setattr(isa, "host_features", lambda: {"avx2", "avx512f", "avx512bw", "avx512vnni"})
    assert isa.detect() == "avx512vnni"
    monkeypatch.setattr(isa, "host_features", lambda: {"sse4.2"})
    assert isa.detect() == "generic"


def _x86_asm(bits: int, rows: int, codes: bool = False) -> str:
    """Assembly of a ``bits``-bit accumulate of ``rows`` rows, compiled for a Zen 3 (AVX2)."""
    return accumulate_assembly("x86_64-unknown-linux-gnu", "znver3", "avx2", bits, rows, codes)


def _loop(asm: str, op: str) -> str:
    loops = re.findall(r"\.LBB\d+_\d+:.*?\n(.*?)\n\s*j(?:ne|l|b)\s", asm, re.S)
    return max(loops, key=lambda b: b.count(op))


@pytest.mark.parametrize(("bits", "op", "per_loop"), [(8, "vpmaddwd", 8), (4, "vpmaddubsw", 8)])
def test_reduction_lowers_to_multiply_adds_in_registers(bits: int, op: str, per_loop: int) -> None:
    """8 bits: 2 rows by 4 vectors of 4 channels; 4 bits: 2 rows by 2 tiles by 2 halves."""
    body = _loop(_x86_asm(bits, 2), op)
    assert body.count(op) in (per_loop, 2 * per_loop), body  # unrolled at most twice
    assert "rsp" not in body, body  # accumulators and weights stay in registers


def test_codes_widen_straight_from_memory() -> None:
    """Sums of the 8-bit codes: four vpmovzxbw loads a chunk, no subtraction, no extracts."""
    body = _loop(_x86_asm(8, 2, codes=True), "vpmaddwd")
    chunks = body.count("vpmaddwd") // 8
    assert re.findall(r"vpmovzxbw\s+-?\d*\(", body) and body.count("vpmovzxbw") == 4 * chunks
    assert "vpsubb" not in body and "vextracti128" not in body and "rsp" not in body, body


@pytest.mark.skipif("avx2" not in isa.host_features(), reason="needs an AVX2 host")
def test_avx2_kernels_equal_reference() -> None:
    """Every bit-width through the whole engine with the AVX2 kernels, in a child process."""
    code = reference_snippet("avx2", sorted(ARCHS), 11)
    # the JIT cache is keyed by ISA: on an AVX2 host the child reuses this process's kernels
    assert _run_snippet(code, {"EDGE_AGENT_KERNEL_ISA": "avx2"}).strip() == "ok"


@pytest.mark.parametrize("kp", [4, 28, 32, 36, 64, 100, 768])
def test_code_offsets_are_128_times_row_sums(kp: int) -> None:
    """Whole 32-byte blocks and the remaining words, rows at a stride, int32 wrap."""

    @numba.njit
    def run(a: np.ndarray, stride: int, m0: int, m1: int, kp: int, xsum: np.ndarray) -> None:
        madd.code_offsets(a, stride, m0, m1, kp, xsum)

    rng = np.random.default_rng(kp)
    stride = kp + 12
    a = rng.integers(0, 256, 9 * stride, dtype=np.uint8)
    xsum = np.full(8, -1, np.int32)
    run(a, stride, 2, 9, kp, xsum)
    rows = a.reshape(9, stride)[2:9, :kp].astype(np.int64)
    np.testing.assert_array_equal(xsum[:7], (128 * rows.sum(axis=1)).astype(np.int32))
    assert xsum[7] == -1
