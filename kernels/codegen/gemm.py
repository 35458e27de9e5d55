"""Integer GEMM on packed panels with a fused requantization epilogue (numba).

:func:`gemm_rows` multiplies rows of uint8 activations by a layer's panel with the
micro-kernels of :mod:`kernels.codegen.microkernel` (8 rows by 32 output channels where AVX-512
has the registers for it, else 8 by 16) and hands every 8x16 tile of int32 sums to
:func:`_store`, which adds the bias, requantizes and writes the codes straight into the
next layer's input layout, max-pooling on the way when a pooling layer was fused in.
Arithmetic follows docs/quantization.md exactly; int32 sums wrap modulo 2^32.
"""

from __future__ import annotations

import numpy as np

from kernels.codegen.fused import tile_requant_kernel, uses_codes
from kernels.codegen.isa import ACTIVE_ISA
from kernels.codegen.jit import inline_kernel, kernel
from kernels.codegen.madd import code_offsets
from kernels.codegen.microkernel import tile_kernel, tile_kernel_wide
from kernels.codegen.store import _store, _targets
from kernels.plan.layout import CHUNK
from kernels.plan.tables import (
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
    MAP_FIELDS,
    PANEL_ROWS,
)

mk8_8, mk8_4, mk8_1 = (tile_kernel(8, 8), tile_kernel(8, 4), tile_kernel(8, 1))
mk4_8, mk4_4, mk4_1 = (tile_kernel(4, 8), tile_kernel(4, 4), tile_kernel(4, 1))
mk3_8, mk3_4, mk3_1 = (tile_kernel(3, 8), tile_kernel(3, 4), tile_kernel(3, 1))
mk2_8, mk2_4, mk2_1 = (tile_kernel(2, 8), tile_kernel(2, 4), tile_kernel(2, 1))
mw8, mw4, mw3, mw2 = (
    tile_kernel_wide(8, 8),
    tile_kernel_wide(4, 8),
    tile_kernel_wide(3, 8),
    tile_kernel_wide(2, 8),
)
mkq = tile_requant_kernel()
CHUNK_BYTES = np.array(
    [0, 0, CHUNK[2][1], CHUNK[3][1], CHUNK[4][1], 0, 0, 0, CHUNK[8][1]], dtype=np.int64
)
TILES_PER_CHUNK = np.array(
    [0, 0, CHUNK[2][0], CHUNK[3][0], CHUNK[4][0], 0, 0, 0, CHUNK[8][0]], dtype=np.int64
)

#: 8-row tiles cover two blocks of 16 output channels (16 accumulators: AVX-512 has 32
#: vector registers; NEON's 32 128-bit registers would spill)
WIDE = ACTIVE_ISA == "avx512vnni"
#: the fused 8-bit tiles sum ``x * (q + 128)`` and subtract ``128 * sum(x)`` per row
CODES = uses_codes(ACTIVE_ISA, 8)


@inline_kernel
def _tile(
    bits: int,
    rows: int,
    acc: np.ndarray,
    a: np.ndarray,
    a_off: int,
    a_stride: int,
    a_last: int,
    w: np.ndarray,
    w_off: int,
    nchunks: int,
) -> None:
    """Dispatch to the micro-kernel for ``bits`` and ``rows`` (8, 4 or 1)."""
    if bits == 8:
        if rows == 8:
            mk8_8(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
        elif rows == 4:
            mk8_4(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
        else:
            mk8_1(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
    elif bits == 4:
        if rows == 8:
            mk4_8(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
        elif rows == 4:
            mk4_4(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
        else:
            mk4_1(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
    elif bits == 3:
        if rows == 8:
            mk3_8(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
        elif rows == 4:
            mk3_4(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
        else:
            mk3_1(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
    elif rows == 8:
        mk2_8(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
    elif rows == 4:
        mk2_4(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)
    else:
        mk2_1(acc, a, a_off, a_stride, a_last, w, w_off, nchunks)


@inline_kernel
def _tile_wide(
    bits: int,
    acc: np.ndarray,
    a: np.ndarray,
    a_off: int,
    a_stride: int,
    a_last: int,
    w: np.ndarray,
    w_off: int,
    nchunks: int,
    w_step: int,
) -> None:
    """8 rows times two blocks (the second ``w_step`` bytes on); sums at acc[0:], acc[128:]."""
    if bits == 8:
        mw8(acc, a, a_off, a_stride, a_last, w, w_off, nchunks, w_step)
    elif bits == 4:
        mw4(acc, a, a_off, a_stride, a_last, w, w_off, nchunks, w_step)
    elif bits == 3:
        mw3(acc, a, a_off, a_stride, a_last, w, w_off, nchunks, w_step)
    else:
        mw2(acc, a, a_off, a_stride, a_last, w, w_off, nchunks, w_step)


@kernel
def gemm_rows(
    a: np.ndarray,
    a_stride: int,
    rows_total: int,
    w: np.ndarray,
    w_off: int,
    bits: int,
    k: int,
    out_ch: int,
    bias: np.ndarray,
    m0: np.ndarray,
    shift: np.ndarray,
    out_mult: np.ndarray,
    p0: int,
    zo: int,
    lo: int,
    hi: int,
    last: bool,
    emap: np.ndarray,
    out: np.ndarray,
    logits: np.ndarray,
    acc: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """``rows_total`` rows of ``a`` (row r at ``r * a_stride``) times a panel, fused epilogue.

    Panels of :data:`PANEL_ROWS` rows stay in L1 while every output block's weights pass
    over them, 8 rows (by two blocks where :data:`WIDE`) per micro-kernel call; results
    are placed through the epilogue map
    ``emap`` (:func:`_targets`, :func:`identity_map`).
    ``bias`` must hold ``bias_q - (z_in - offset) * rowsum(q)``, ``offset`` the activation
    offset of the instruction set (:func:`kernels.plan.targets.act_offset`);
    ``acc`` is int32 scratch of :data:`~kernels.plan.tables.I32_SCRATCH` (256; the sums of
    the last layer's tiles, or the hidden layers' row offsets where :data:`CODES`) and
    ``scratch`` int64 scratch of ``8 + PANEL_ROWS``: the caller's, nothing is allocated.
    """
    tiles = TILES_PER_CHUNK[bits]
    cb = CHUNK_BYTES[bits]
    nchunks = (((k + 3) // 4) + tiles - 1) // tiles
    nblocks = (out_ch + 15) // 16
    st = scratch[:8]
    st[:] = 0
    tgt = scratch[8 : 8 + PANEL_ROWS]
    wacc = acc  # two blocks of a wide tile; one block's tiles use its first 128
    if not last:  # hidden layer: tiles requantize and store in registers
        step = nchunks * cb
        for m0_ in range(0, rows_total, PANEL_ROWS):
            m1 = min(rows_total, m0_ + PANEL_ROWS)
            _targets(emap, last, out_ch, m1 - m0_, st, tgt)
            if CODES and bits == 8:
                code_offsets(a, a_stride, m0_, m1, nchunks * 4, acc)
            b = 0
            while b < nblocks:
                o0 = b * 16
                n = min(out_ch, o0 + 16) - o0
                blocks = 2 if WIDE and b + 1 < nblocks else 1
                n2 = min(out_ch, o0 + 32) - o0 - 16 if blocks == 2 else 0
                full = 5 if blocks == 2 else 8  # fewest valid rows worth an 8-row tile
                m = m0_
                while m < m1:
                    # tiles cover runs of kept rows only: rows whose results are dropped
                    # (straddling two samples, past the pooled cells) cost no tile rows
                    if tgt[m - m0_] < 0:
                        m += 1
                        continue
                    run = 1
                    while run < 8 and m + run < m1 and tgt[m + run - m0_] >= 0:
                        run += 1
                    rows = 8 if run >= full else (4 if run >= 3 else 1)
                    valid = min(rows, run)
                    mkq(
                        bits,
                        rows,
                        blocks,
                        a,
                        m * a_stride,
                        a_stride,
                        valid - 1,
                        w,
                        w_off + b * step,
                        nchunks,
                        step,
                        bias,
                        m0,
                        shift,
                        p0 + o0,
                        zo,
                        lo,
                        hi,
                        tgt,
                        m - m0_,
                        valid,
                        o0,
                        n,
                        n2,
                        emap[M_PREMAX],
                        acc,
                        out,
                    )
                    m += valid
                b += blocks
        return
    premax = emap[M_PREMAX] != 0
    for m0_ in range(0, rows_total, PANEL_ROWS):
        m1 = min(rows_total, m0_ + PANEL_ROWS)
        _targets(emap, last, out_ch, m1 - m0_, st, tgt)
        b = 0
        while b < nblocks:
            o0 = b * 16
            n = min(out_ch, o0 + 16) - o0
            w_b = w_off + b * nchunks * cb
            if WIDE and b + 1 < nblocks:
                n2 = min(out_ch, o0 + 32) - o0 - 16
                step = nchunks * cb
                m = m0_
                while m < m1:
                    rem = m1 - m
                    valid = min(8, rem)
                    if rem >= 5:
                        _tile_wide(
                            bits, wacc, a, m * a_stride, a_stride, valid - 1, w, w_b, nchunks, step
                        )
                        _store(
                            wacc,
                            0,
                            tgt,
                            m - m0_,
                            valid,
                            o0,
                            n,
                            bias,
                            m0,
                            shift,
                            out_mult,
                            p0,
                            zo,
                            lo,
                            hi,
                            last,
                            premax,
                            out,
                            logits,
                        )
                        _store(
                            wacc,
                            128,
                            tgt,
                            m - m0_,
                            valid,
                            o0 + 16,
                            n2,
                            bias,
                            m0,
                            shift,
                            out_mult,
                            p0,
                            zo,
                            lo,
                            hi,
                            last,
                            premax,
                            out,
                            logits,
                        )
                    else:
                        rows = 4 if rem >= 3 else 1
                        valid = min(rows, rem)
                        for c in range(2):
                            _tile(
                                bits,
                                rows,
                                acc,
                                a,
                                m * a_stride,
                                a_stride,
                                valid - 1,
                                w,
                                w_b + c * step,
                                nchunks,
                            )
                            _store(
                                acc,
                                0,
                                tgt,
                                m - m0_,
                                valid,
                                o0 + 16 * c,
                                n if c == 0 else n2,
                                bias,
                                m0,
                                shift,
                                out_mult,
                                p0,
                                zo,
                                lo,
                                hi,
                                last,
                                premax,
                                out,
                                logits,
                            )
                    m += valid
                b += 2
                continue
            m = m0_
            while m < m1:
                rem = m1 - m
                rows = 8 if rem >= 8 else (4 if rem >= 3 else 1)
                valid = min(rows, rem)
                _tile(bits, rows, acc, a, m * a_stride, a_stride, valid - 1, w, w_b, nchunks)
                _store(
                    acc,
                    0,
                    tgt,
                    m - m0_,
                    valid,
                    o0,
                    n,
                    bias,
                    m0,
                    shift,
                    out_mult,
                    p0,
                    zo,
                    lo,
                    hi,
                    last,
                    premax,
                    out,
                    logits,
                )
                m += valid
            b += 1


def identity_map(out_ch: int) -> np.ndarray:
    """Epilogue map of a plain GEMM: row r goes to ``out[r * out_ch:]`` (or the logits)."""
    emap = np.zeros(MAP_FIELDS, np.int64)
    emap[[M_R, M_P, M_OW, M_PKH, M_PKW, M_POH, M_POW, M_WP]] = 1
    emap[M_SS] = out_ch
    return emap
