"""Where a GEMM block's results go: the output targets of a row and the requantizing store."""

from __future__ import annotations

import numpy as np

from kernels.codegen.epilogue import requant_store
from kernels.codegen.jit import inline_kernel, kernel
from kernels.plan.tables import (
    M_OW,
    M_P,
    M_PH,
    M_PKH,
    M_PKW,
    M_POH,
    M_POW,
    M_PW,
    M_R,
    M_SS,
    M_WP,
)


@inline_kernel
def _cell(last: bool, s: int, pi: int, pj: int, oc: int, ss: int, ph: int, wp: int, pw: int) -> int:
    """Twice the output offset of cell ``(pi, pj)`` of sample ``s`` (see :func:`_targets`)."""
    if last:
        return 2 * s * oc
    return 2 * (s * ss + ((pi + ph) * wp + pj + pw) * oc)


@kernel
def _targets(
    emap: np.ndarray, last: bool, oc: int, nrows: int, st: np.ndarray, tgt: np.ndarray
) -> None:
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
    # every field in a local: stores to ``tgt`` may alias ``emap`` for all LLVM knows, so
    # fields read in the loop were reloaded for every row (over half of this function)
    pkh = emap[M_PKH]
    pkw = emap[M_PKW]
    ow = emap[M_OW]
    r_ = emap[M_R]
    p_ = emap[M_P]
    poh = emap[M_POH]
    pow_ = emap[M_POW]
    ss = emap[M_SS]
    ph = emap[M_PH]
    wp = emap[M_WP]
    pw = emap[M_PW]
    s, pos, i, jj, qi, qj, pi, pj = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    # the target of the current cell, advanced by additions along a row of cells and
    # recomputed only where a row of positions or a sample ends
    g = _cell(last, s, pi, pj, oc, ss, ph, wp, pw)
    step = 0 if last else 2 * oc
    for t in range(nrows):
        if pos >= p_ or pi >= poh or pj >= pow_:
            tgt[t] = -1
        else:
            tgt[t] = g + (1 if last or (qi == 0 and qj == 0) else 0)
        pos += 1
        jj += 1
        qj += 1
        if qj == pkw:
            qj = 0
            pj += 1
            g += step
        if jj == ow:
            jj = 0
            qj = 0
            pj = 0
            i += 1
            qi += 1
            if qi == pkh:
                qi = 0
                pi += 1
            g = _cell(last, s, pi, pj, oc, ss, ph, wp, pw)
        if pos == r_:
            s, pos, i, jj, qi, qj, pi, pj = s + 1, 0, 0, 0, 0, 0, 0, 0
            g = _cell(last, s, pi, pj, oc, ss, ph, wp, pw)
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = s, pos, i, jj, qi, qj, pi, pj


@inline_kernel
def _store(
    acc: np.ndarray,
    a0: int,
    tgt: np.ndarray,
    t0: int,
    nrows: int,
    o0: int,
    n: int,
    bias: np.ndarray,
    m0: np.ndarray,
    shift: np.ndarray,
    out_mult: np.ndarray,
    p0: int,
    zo: int,
    lo: int,
    hi: int,
    last: bool,
    premax: bool,
    out: np.ndarray,
    logits: np.ndarray,
) -> None:
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
        requant_store(
            acc, a0 + t * 16, u - t, bias, m0, shift, c0, zo, lo, hi, out, d, n, (g & 1) != 0
        )
        t = u
