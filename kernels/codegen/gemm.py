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

from kernels.codegen.epilogue import requant_store
from kernels.codegen.isa import ACTIVE_ISA
from kernels.codegen.jit import inline_kernel, kernel
from kernels.codegen.microkernel import tile_kernel, tile_kernel_wide
from kernels.plan.layout import CHUNK
from kernels.plan.tables import (
    M_OW,
    M_P,
    M_PH,
    M_PKH,
    M_PKW,
    M_POH,
    M_POW,
    M_PREMAX,
    M_PW,
    M_R,
    M_SS,
    M_WP,
    MAP_FIELDS,
)

mk8_8, mk8_4, mk8_1 = (tile_kernel(8, 8), tile_kernel(8, 4), tile_kernel(8, 1))
mk4_8, mk4_4, mk4_1 = (tile_kernel(4, 8), tile_kernel(4, 4), tile_kernel(4, 1))
mk3_8, mk3_4, mk3_1 = (tile_kernel(3, 8), tile_kernel(3, 4), tile_kernel(3, 1))
mk2_8, mk2_4, mk2_1 = (tile_kernel(2, 8), tile_kernel(2, 4), tile_kernel(2, 1))
mw8, mw4, mw3, mw2 = (tile_kernel_wide(8, 8), tile_kernel_wide(4, 8), tile_kernel_wide(3, 8),
                      tile_kernel_wide(2, 8))
CHUNK_BYTES = np.array([0, 0, CHUNK[2][1], CHUNK[3][1], CHUNK[4][1], 0, 0, 0, CHUNK[8][1]],
                       dtype=np.int64)
TILES_PER_CHUNK = np.array([0, 0, CHUNK[2][0], CHUNK[3][0], CHUNK[4][0], 0, 0, 0, CHUNK[8][0]],
                           dtype=np.int64)

PANEL_ROWS = 64  # GEMM rows whose activations stay in L1 across the output blocks
#: 8-row tiles cover two blocks of 16 output channels (16 accumulators: AVX-512 has 32
#: vector registers; NEON's 32 128-bit registers would spill)
WIDE = ACTIVE_ISA == "avx512vnni"


@inline_kernel
def _tile(bits: int, rows: int, acc: np.ndarray, a: np.ndarray, a_off: int, a_stride: int,
          a_last: int, w: np.ndarray, w_off: int, nchunks: int) -> None:
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
def _tile_wide(bits: int, acc: np.ndarray, a: np.ndarray, a_off: int, a_stride: int,
               a_last: int, w: np.ndarray, w_off: int, nchunks: int, w_step: int) -> None:
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
def _targets(emap: np.ndarray, last: bool, oc: int, nrows: int, st: np.ndarray,
             tgt: np.ndarray) -> None:
    """Output offsets of the next ``nrows`` GEMM rows, advancing the row cursor ``st``.

    GEMM row ``r`` is position ``r % R`` of sample ``r // R``; positions ``>= P`` are
    rows that straddle two samples (dropped, -1). Position ``(i, j) = divmod(pos, OW)``
    lands in cell ``(i // PKH, j // PKW)`` of the output tensor, whose interior starts at
    ``(PH, PW)`` of a ``WP``-wide layout of ``SS`` bytes per sample; cells past
    ``(POH, POW)`` are dropped. A target is ``2 * offset + first``, where ``first`` marks
    the first position of its pooling window. ``st`` (8 int64) holds ``s, pos, i, j,
    i % PKH, j % PKW, i // PKH, j // PKW`` and is updated without divisions (they would
    cost more than the GEMM).
    """
    pkh = emap[M_PKH]
    pkw = emap[M_PKW]
    ow = emap[M_OW]
    r_ = emap[M_R]
    p_ = emap[M_P]
    poh = emap[M_POH]
    pow_ = emap[M_POW]
    s, pos, i, jj, qi, qj, pi, pj = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    for t in range(nrows):
        if pos >= p_ or pi >= poh or pj >= pow_:
            tgt[t] = -1
        elif last:
            tgt[t] = 2 * s * oc + 1
        else:
            d = s * emap[M_SS] + ((pi + emap[M_PH]) * emap[M_WP] + pj + emap[M_PW]) * oc
            tgt[t] = 2 * d + (1 if qi == 0 and qj == 0 else 0)
        pos += 1
        jj += 1
        qj += 1
        if qj == pkw:
            qj = 0
            pj += 1
        if jj == ow:
            jj = 0
            qj = 0
            pj = 0
            i += 1
            qi += 1
            if qi == pkh:
                qi = 0
                pi += 1
        if pos == r_:
            s, pos, i, jj, qi, qj, pi, pj = s + 1, 0, 0, 0, 0, 0, 0, 0
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = s, pos, i, jj, qi, qj, pi, pj


@inline_kernel
def _store(acc: np.ndarray, a0: int, tgt: np.ndarray, t0: int, nrows: int, o0: int, n: int,
           bias: np.ndarray, m0: np.ndarray, shift: np.ndarray, out_mult: np.ndarray, p0: int,
           zo: int, lo: int, hi: int, last: bool, premax: bool, out: np.ndarray,
           logits: np.ndarray) -> None:
    """Bias and requantize (or scale to logits) ``nrows`` accumulator rows of one block.

    Row ``t`` (sums at ``acc[a0 + 16 * t:]``) goes to the target ``tgt[t0 + t]`` of
    :func:`_targets` (channel ``o0`` on): the
    first value of a pooling window is stored, the others are max-ed in. With ``premax``
    (the layer's sums provably never wrap, so requantization is monotone in them) rows of
    the tile that share a pooling cell are max-ed as int32 first and requantized once.
    """
    c0 = p0 + o0
    t = 0
    while t < nrows:
        g = tgt[t0 + t]
        u = t + 1
        if g < 0:
            t = u
            continue
        d = (g >> 1) + o0
        if last:
            for j in range(n):
                v = np.int32(np.int64(acc[a0 + t * 16 + j]) + np.int64(bias[c0 + j]))
                logits[d + j] = np.float32(v) * out_mult[c0 + j]
            t = u
            continue
        if premax:
            while u < nrows and tgt[t0 + u] >= 0 and (tgt[t0 + u] >> 1) == (g >> 1):
                u += 1
        requant_store(acc, a0 + t * 16, u - t, bias, m0, shift, c0, zo, lo, hi, out, d, n,
                      (g & 1) != 0)
        t = u


@kernel
def gemm_rows(a: np.ndarray, a_stride: int, rows_total: int, w: np.ndarray, w_off: int,
              bits: int, k: int, out_ch: int, bias: np.ndarray, m0: np.ndarray,
              shift: np.ndarray, out_mult: np.ndarray, p0: int, zo: int, lo: int, hi: int,
              last: bool, emap: np.ndarray, out: np.ndarray, logits: np.ndarray,
              acc: np.ndarray) -> None:
    """``rows_total`` rows of ``a`` (row r at ``r * a_stride``) times a panel, fused epilogue.

    Panels of :data:`PANEL_ROWS` rows stay in L1 while every output block's weights pass
    over them, 8 rows (by two blocks where :data:`WIDE`) per micro-kernel call; results
    are placed through the epilogue map
    ``emap`` (:func:`_targets`, :func:`identity_map`).
    ``bias`` must hold ``bias_q - (z_in - offset) * rowsum(q)``, ``offset`` the activation
    offset of the instruction set (:func:`kernels.plan.targets.act_offset`);
    ``acc`` is int32 scratch of 128.
    """
    tiles = TILES_PER_CHUNK[bits]
    cb = CHUNK_BYTES[bits]
    nchunks = (((k + 3) // 4) + tiles - 1) // tiles
    nblocks = (out_ch + 15) // 16
    st = np.zeros(8, np.int64)
    tgt = np.empty(PANEL_ROWS, np.int64)
    wacc = np.empty(256, np.int32)  # two blocks of a wide tile
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
                        _tile_wide(bits, wacc, a, m * a_stride, a_stride, valid - 1, w, w_b,
                                   nchunks, step)
                        _store(wacc, 0, tgt, m - m0_, valid, o0, n, bias, m0, shift, out_mult,
                               p0, zo, lo, hi, last, premax, out, logits)
                        _store(wacc, 128, tgt, m - m0_, valid, o0 + 16, n2, bias, m0, shift,
                               out_mult, p0, zo, lo, hi, last, premax, out, logits)
                    else:
                        rows = 4 if rem >= 3 else 1
                        valid = min(rows, rem)
                        for c in range(2):
                            _tile(bits, rows, acc, a, m * a_stride, a_stride, valid - 1, w,
                                  w_b + c * step, nchunks)
                            _store(acc, 0, tgt, m - m0_, valid, o0 + 16 * c,
                                   n if c == 0 else n2, bias, m0, shift, out_mult, p0, zo, lo,
                                   hi, last, premax, out, logits)
                    m += valid
                b += 2
                continue
            m = m0_
            while m < m1:
                rem = m1 - m
                rows = 8 if rem >= 8 else (4 if rem >= 3 else 1)
                valid = min(rows, rem)
                _tile(bits, rows, acc, a, m * a_stride, a_stride, valid - 1, w, w_b, nchunks)
                _store(acc, 0, tgt, m - m0_, valid, o0, n, bias, m0, shift, out_mult, p0, zo,
                       lo, hi, last, premax, out, logits)
                m += valid
            b += 1


def identity_map(out_ch: int) -> np.ndarray:
    """Epilogue map of a plain GEMM: row r goes to ``out[r * out_ch:]`` (or the logits)."""
    emap = np.zeros(MAP_FIELDS, np.int64)
    emap[[M_R, M_P, M_OW, M_PKH, M_PKW, M_POH, M_POW, M_WP]] = 1
    emap[M_SS] = out_ch
    return emap


@kernel
def panel_code(w: np.ndarray, w_off: int, bits: int, k: int, o: int, j: int) -> np.int32:
    """Signed weight ``q[o, j]`` read from a panel (for small layers off the fast path)."""
    log_tiles = 0 if bits == 8 else (1 if bits == 4 else (2 if bits == 2 else 3))
    tiles = 1 << log_tiles
    cb = 192 if bits == 3 else 64
    nchunks = (((k + 3) >> 2) + tiles - 1) >> log_tiles
    k4 = j >> 2
    chunk = k4 >> log_tiles
    g = k4 & (tiles - 1)
    n = 4 * (o & 15) + (j & 3)
    base = w_off + ((o >> 4) * nchunks + chunk) * cb
    u = np.int32(0)
    if bits == 8:
        u = np.int32(w[base + n])
    elif bits == 3:
        low = (np.int32(w[base + 64 * (g >> 2) + n]) >> (2 * (g & 3))) & 3
        high = (np.int32(w[base + 128 + n]) >> g) & 1
        u = low | (high << 2)
    else:
        u = (np.int32(w[base + n]) >> (g * bits)) & ((1 << bits) - 1)
    return np.int32(u - (1 << (bits - 1)))




@kernel
def linear_i32(s: np.ndarray, stride: int, nb: int, w: np.ndarray, w_off: int, bits: int, k: int,
               out_ch: int, bias: np.ndarray, m0: np.ndarray, shift: np.ndarray,
               out_mult: np.ndarray, p0: int, zo: int, lo: int, hi: int, last: bool,
               emap: np.ndarray, out: np.ndarray, logits: np.ndarray, acc: np.ndarray) -> None:
    """Linear layer on the int32 centred sums of ``nb`` samples (after ``gap``).

    Sample ``r`` reads ``s[r * stride:r * stride + k]``; each block's weights are decoded once.
    """
    st = np.zeros(8, np.int64)
    tgt = np.empty(1, np.int64)
    q = np.empty(16 * k, np.int64)
    for b in range((out_ch + 15) // 16):
        o0 = b * 16
        o1 = min(out_ch, o0 + 16)
        for o in range(o0, o1):
            for j in range(k):
                q[(o - o0) * k + j] = np.int64(panel_code(w, w_off, bits, k, o, j))
        for r in range(nb):
            x = s[r * stride:r * stride + k]
            for o in range(o0, o1):
                qo = q[(o - o0) * k:(o - o0 + 1) * k]
                total = np.int64(0)
                for j in range(k):
                    total += qo[j] * np.int64(x[j])
                acc[o - o0] = np.int32(total)
            st[:] = 0
            st[0] = r
            _targets(emap, last, out_ch, 1, st, tgt)
            _store(acc, 0, tgt, 0, 1, o0, o1 - o0, bias, m0, shift, out_mult, p0, zo, lo, hi,
                   last, False, out, logits)
