"""Kernel building blocks: panel layout, rounding of requantization and input quantization."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.engine import reference
from kernels.build import cachepaths
from kernels.codegen.epilogue import requant_store
from kernels.codegen.gemm import gemm_rows, identity_map
from kernels.codegen.isa import ACTIVE_ISA
from kernels.codegen.ops import quantize_input
from kernels.plan import layout
from kernels.plan.fixedpoint import quantize_multiplier, requantize_reference
from kernels.plan.packing import qrange
from kernels.plan.tables import (
    I32_SCRATCH,
    M_OW,
    M_P,
    M_PKH,
    M_PKW,
    M_POH,
    M_POW,
    M_PREMAX,
    M_R,
    M_SS,
    M_WP,
    PANEL_ROWS,
)
from kernels.plan.targets import act_offset


@settings(max_examples=40, deadline=None)
@given(
    bits=st.sampled_from([2, 3, 4, 8]),
    out_ch=st.integers(1, 40),
    k=st.integers(1, 70),
    seed=st.integers(0, 2**32 - 1),
)
def test_panel_round_trip_and_size(bits: int, out_ch: int, k: int, seed: int) -> None:
    lo, hi = qrange(bits)
    q = np.random.default_rng(seed).integers(lo, hi + 1, (out_ch, k)).astype(np.int8)
    panel = layout.to_panel(q, bits)
    assert panel.dtype == np.uint8 and panel.size == layout.panel_nbytes(out_ch, k, bits)
    np.testing.assert_array_equal(layout.from_panel(panel, out_ch, k, bits), q)


def test_panel_bytes_scale_with_bits() -> None:
    sizes = {b: layout.panel_nbytes(64, 320, b) for b in (2, 3, 4, 8)}
    assert sizes == {8: 64 * 320, 4: 64 * 320 // 2, 3: 64 * 320 * 3 // 8, 2: 64 * 320 // 4}


def test_panel_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        layout.to_panel(np.array([[8]], np.int8), 4)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("rows", [1, 3, 8, 13])
@pytest.mark.parametrize("k", [61, 44, 20])
def test_gemm_equals_numpy(bits: int, rows: int, k: int) -> None:
    """Micro-kernel GEMM (all row-block sizes, odd K and O) against an int64 product; K of
    16, 11 and 5 8-bit chunks: the 1-row tiles' split reduction with and without a tail."""
    rng = np.random.default_rng(bits * 100 + rows + k)
    out_ch = 37
    lo, hi = qrange(bits)
    q = rng.integers(lo, hi + 1, (out_ch, k)).astype(np.int8)
    kp = layout.padded_k(k, bits)
    a = rng.integers(0, 256, rows * kp + 64).astype(np.uint8)
    logits = np.empty(rows * out_ch, np.float32)
    zeros = np.zeros(out_ch, np.int32)
    fold = (act_offset(ACTIVE_ISA) * q.astype(np.int32).sum(axis=1)).astype(np.int32)
    gemm_rows(
        a,
        kp,
        rows,
        layout.to_panel(q, bits),
        0,
        bits,
        k,
        out_ch,
        fold,
        zeros,
        zeros + 1,
        np.ones(out_ch, np.float32),
        0,
        0,
        0,
        255,
        True,
        identity_map(out_ch),
        np.empty(1, np.uint8),
        logits,
        np.empty(I32_SCRATCH, np.int32),
        np.empty(8 + PANEL_ROWS, np.int64),
    )
    want = a[: rows * kp].reshape(rows, kp)[:, :k].astype(np.int64) @ q.astype(np.int64).T
    np.testing.assert_array_equal(logits.reshape(rows, out_ch), want.astype(np.float32))


def _fused_gemm(
    bits: int, rows: int, out_ch: int, pool: int, premax: bool, k: int = 61
) -> tuple[np.ndarray, np.ndarray]:
    """A hidden layer's GEMM of random operands whose rows max-pool by ``pool`` (1: none)
    into a 1-D output; (what the kernel stored with 16 bytes of slack, the reference)."""
    rng = np.random.default_rng(bits * 1000 + rows * 10 + out_ch + pool + k)
    lo_q, hi_q = qrange(bits)
    q = rng.integers(lo_q, hi_q + 1, (out_ch, k)).astype(np.int8)
    kp = layout.padded_k(k, bits)
    a = rng.integers(0, 256, rows * kp + 64).astype(np.uint8)
    bias = rng.integers(-5000, 5000, out_ch).astype(np.int32)
    m0s = rng.integers(2**30, 2**31, out_ch).astype(np.int32)
    shifts = rng.integers(36, 44, out_ch).astype(np.int32)
    pad = -(-out_ch // 16) * 16 + 16  # parameters padded to whole blocks, as planned
    # the kernel sums (x - offset) * q (signed activations on sdot): the bias adds it back
    fold = bias + (act_offset(ACTIVE_ISA) * q.astype(np.int32).sum(axis=1)).astype(np.int32)
    params = [np.zeros(pad, np.int32) for _ in range(3)]
    for p, v in zip(params, (fold, m0s, shifts), strict=True):
        p[:out_ch] = v
    cells = rows // pool
    emap = identity_map(out_ch)
    if pool > 1:  # one sample of `rows` positions in a row, pooled into `cells` cells
        emap[[M_R, M_P, M_OW, M_POW, M_WP]] = [rows, rows, rows, cells, cells]
        emap[[M_POH, M_PKH, M_PKW, M_SS]] = [1, 1, pool, cells * out_ch]
        emap[M_PREMAX] = int(premax)
    zo, lo, hi = 7, 7, 255
    n_out = rows * out_ch if pool == 1 else cells * out_ch
    out = np.full(n_out + 16, 3, np.uint8)
    gemm_rows(
        a,
        kp,
        rows,
        layout.to_panel(q, bits),
        0,
        bits,
        k,
        out_ch,
        params[0],
        params[1],
        params[2],
        np.ones(pad, np.float32),
        0,
        zo,
        lo,
        hi,
        False,
        emap,
        out,
        np.empty(1, np.float32),
        np.empty(I32_SCRATCH, np.int32),
        np.empty(8 + PANEL_ROWS, np.int64),
    )
    acc = a[: rows * kp].reshape(rows, kp)[:, :k].astype(np.int64) @ q.astype(np.int64).T
    v = (acc + bias).astype(np.int32)
    want = np.clip(zo + requantize_reference(v, m0s, shifts), lo, hi)
    if pool > 1:
        want = want[: cells * pool].reshape(cells, pool, out_ch).max(axis=1)
    return out, want.reshape(-1)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("rows", [1, 3, 6, 13, 70])
@pytest.mark.parametrize("out_ch", [5, 37, 64])
@pytest.mark.parametrize("k", [61, 44])
def test_fused_requantizing_gemm_equals_reference(
    bits: int, rows: int, out_ch: int, k: int
) -> None:
    """Hidden-layer GEMM (micro-kernel, requantization and store fused in registers) on
    every row-tile and block combination against int64 sums and the reference rounding
    (K = 44: 11 8-bit chunks, a tail after the 1-row tiles' split reduction)."""
    out, want = _fused_gemm(bits, rows, out_ch, 1, False, k)
    np.testing.assert_array_equal(out[: want.size], want)
    np.testing.assert_array_equal(out[want.size :], 3)  # nothing written past the end


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [2, 7, 13, 70, 131])
@pytest.mark.parametrize("pool", [2, 3])
@pytest.mark.parametrize("premax", [False, True])
def test_fused_gemm_max_pools_rows_exactly(bits: int, rows: int, pool: int, premax: bool) -> None:
    """Fused max pooling, with ``premax`` (pairs of rows in one cell requantized once, as
    their int32 max) and without, equals requantize-then-pool; a last partial window and
    rows past the pooled cells are dropped."""
    out, want = _fused_gemm(bits, rows, 37, pool, premax)
    np.testing.assert_array_equal(out[: want.size], want)
    np.testing.assert_array_equal(out[want.size :], 3)


@numba.njit
def _requant(
    acc: np.ndarray,
    m0: np.ndarray,
    shift: np.ndarray,
    zo: int,
    lo: int,
    hi: int,
    out: np.ndarray,
    n: int,
    first: bool,
) -> None:
    for c0 in range(0, acc.size, 16):
        requant_store(
            acc,
            c0,
            1,
            np.zeros_like(acc),
            m0,
            shift,
            c0,
            zo,
            lo,
            hi,
            out,
            c0,
            min(n - c0, 16),
            first,
        )


def _codes(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray, zo: int = 128) -> np.ndarray:
    """The epilogue's codes of ``acc`` with zero point ``zo`` and the full 8-bit range."""
    out = np.zeros(acc.size + 16, np.uint8)
    _requant(acc, m0, shift, zo, 0, 255, out, acc.size, True)
    return out[: acc.size]


def test_requantize_rounds_half_to_even() -> None:
    acc = np.array([1, -1, 3, -3, 2, -2, 0, 5, -5, 7, -7, 9, -9, 11, -11, 4], np.int32)
    m0 = np.full(16, 1 << 30, np.int32)  # multiplier 0.5: every odd accumulator is a tie
    shift = np.full(16, 31, np.int32)
    want = np.array([0, 0, 2, -2, 1, -1, 0, 2, -2, 4, -4, 4, -4, 6, -6, 2])
    np.testing.assert_array_equal(_codes(acc, m0, shift), 128 + want)
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**31), 2**31, 2048, dtype=np.int64).astype(np.int32)
    m0s = rng.integers(2**30, 2**31, 2048).astype(np.int32)
    shifts = rng.integers(1, 63, 2048).astype(np.int32)
    exact = requantize_reference(acc, m0s, shifts)  # int64: many far outside the codes
    for zo, lo, hi in ((0, 0, 255), (128, 0, 255), (37, 37, 255), (5, 0, 15)):
        out = np.zeros(acc.size + 16, np.uint8)
        _requant(acc, m0s, shifts, zo, lo, hi, out, acc.size, True)
        np.testing.assert_array_equal(out[: acc.size], np.clip(zo + exact, lo, hi))


def test_requantize_reference_is_float32_arithmetic() -> None:
    """One float32 product of float32(acc) and float32(m0) * 2^-shift, rounded ties to even:
    m0 = 2^31 - 1 rounds to 2^31 as a float32, which an int64 product would not."""
    acc = np.array([3, 2**24 + 1, -(2**31), 12345], np.int64)
    m0 = np.full(4, 2**31 - 1, np.int32)
    shift = np.full(4, 32, np.int32)
    want = np.rint(np.float32(acc.astype(np.float32)) * np.float32(0.5)).astype(np.int64)
    np.testing.assert_array_equal(requantize_reference(acc, m0, shift), want)
    assert requantize_reference(np.array([3]), np.array([2**31 - 1]), np.array([32]))[0] == 2


def test_requantize_extremes_clamp_and_zero_multiplier() -> None:
    m0, shift = quantize_multiplier(0.999)
    acc = np.array([-(2**31), 2**31 - 1, 12345, 0] + [7] * 12, np.int32)
    m0s = np.array([m0, m0, 0, m0] + [m0] * 12, np.int32)
    shifts = np.array([shift, shift, 1, shift] + [shift] * 12, np.int32)
    want = requantize_reference(acc, m0s, shifts)
    np.testing.assert_array_equal(_codes(acc, m0s, shifts), np.clip(128 + want, 0, 255))
    out = np.zeros(32, np.uint8)
    _requant(acc, m0s, shifts, 100, 100, 250, out, 16, True)
    np.testing.assert_array_equal(out[:16], np.clip(100 + want, 100, 250))


@numba.njit
def _requant_max(
    acc: np.ndarray, rows: int, m0: np.ndarray, shift: np.ndarray, out: np.ndarray
) -> None:
    requant_store(acc, 0, rows, np.zeros(16, np.int32), m0, shift, 0, 0, 0, 255, out, 0, 16, True)


def test_requantize_store_max_of_rows_first() -> None:
    """``rows > 1``: the lane-wise int32 max of the rows is requantized (fused pooling)."""
    rng = np.random.default_rng(4)
    acc = rng.integers(-500, 500, 16 * 3).astype(np.int32)
    m0 = np.full(16, 1 << 30, np.int32)
    shift = np.full(16, 32, np.int32)  # multiplier 1/4
    for rows in (1, 2, 3):
        out = np.zeros(32, np.uint8)
        _requant_max(acc, rows, m0, shift, out)
        top = acc.reshape(3, 16)[:rows].max(axis=0)
        want = np.clip(requantize_reference(top, m0, shift), 0, 255)
        np.testing.assert_array_equal(out[:16], want)


def test_requantize_store_pools_and_masks() -> None:
    """``first=False`` keeps the larger code; lanes past ``n`` are left as they were."""
    acc = np.arange(-8, 8, dtype=np.int32) * 4
    m0 = np.full(16, 1 << 30, np.int32)
    shift = np.full(16, 31, np.int32)  # y = 10 + acc / 2
    out = np.full(32, 10, np.uint8)
    _requant(acc, m0, shift, 10, 0, 255, out, 11, False)
    want = np.maximum(10, 10 + acc // 2)
    np.testing.assert_array_equal(out[:11], want[:11])
    np.testing.assert_array_equal(out[11:], 10)


def test_input_quantization_ties_round_half_even() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 300.0, -300.0, 0.49999997], np.float32)
    mean = np.zeros(1, np.float32)
    std = np.ones(1, np.float32)
    out = np.empty(x.size, np.uint8)
    quantize_input(
        x,
        1,
        1,
        x.size,
        mean,
        std,
        np.float32(1.0),
        10,
        255,
        out,
        x.size,
        0,
        0,
        np.empty(x.size, np.uint8),
    )
    np.testing.assert_array_equal(out, [10, 12, 12, 10, 8, 255, 0, 10])
    want = reference.quantize_input(x[None, None], mean, std, 1.0, 10, 8)
    np.testing.assert_array_equal(out, want.ravel())


def test_input_quantization_matches_reference_random() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(0, 3, (3, 50)).astype(np.float32)
    mean = rng.normal(0, 1, 3).astype(np.float32)
    std = rng.uniform(0.3, 2, 3).astype(np.float32)
    out = np.empty(x.size, np.uint8)
    quantize_input(
        x.ravel(),
        3,
        1,
        50,
        mean,
        std,
        np.float32(0.037),
        77,
        127,
        out,
        50,
        0,
        0,
        np.empty(50, np.uint8),
    )
    want = reference.quantize_input(x[None], mean, std, 0.037, 77, 7)[0]
    np.testing.assert_array_equal(out.reshape(50, 3).T, want)  # kernels are channels-last


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EDGE_AGENT_JIT_CACHE", "NUMBA_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path}/svc:{tmp_path}/other")
    assert cachepaths.cache_root() == tmp_path / "svc" / "numba"
    monkeypatch.setenv("EDGE_AGENT_JIT_CACHE", str(tmp_path / "explicit"))
    assert cachepaths.cache_root() == tmp_path / "explicit"
