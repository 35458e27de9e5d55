"""The int32 linear layer after global average pooling and the panel lookup it uses."""

from __future__ import annotations

import numpy as np

from kernels.codegen.jit import kernel
from kernels.codegen.store import _store, _targets


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
def linear_i32(
    s: np.ndarray,
    stride: int,
    nb: int,
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
    """Linear layer on the int32 centred sums of ``nb`` samples (after ``gap``).

    Sample ``r`` reads ``s[r * stride:r * stride + k]``; each block's weights are decoded
    once, into ``scratch`` (int64, at least ``16 + 16 * k``; ``acc`` int32 of 16).
    """
    st = scratch[:8]
    tgt = scratch[8:9]
    q = scratch[16 : 16 + 16 * k]
    for b in range((out_ch + 15) // 16):
        o0 = b * 16
        o1 = min(out_ch, o0 + 16)
        if bits == 8:  # one byte per code, at 4 * (o % 16) + j % 4 of chunk j // 4
            for o in range(o0, o1):
                # unsigned indices: numba adds no negative-index wraparound (which took
                # most of this layer's time at batch 1)
                row = np.uint64(w_off + b * ((k + 3) // 4) * 64 + 4 * (o - o0))
                qrow = np.uint64((o - o0) * k)
                for j in range(k):
                    u = np.uint64(j)
                    at = row + (u >> np.uint64(2)) * np.uint64(64) + (u & np.uint64(3))
                    q[qrow + u] = np.int64(w[at]) - 128
        else:
            for o in range(o0, o1):
                for j in range(k):
                    q[(o - o0) * k + j] = np.int64(panel_code(w, w_off, bits, k, o, j))
        for r in range(nb):
            x = s[r * stride : r * stride + k]
            for o in range(o0, o1):
                qo = q[(o - o0) * k : (o - o0 + 1) * k]
                total = np.int64(0)
                for j in range(k):
                    total += qo[j] * np.int64(x[j])
                acc[o - o0] = np.int32(total)
            st[:] = 0
            st[0] = r
            _targets(emap, last, out_ch, 1, st, tgt)
            _store(
                acc,
                0,
                tgt,
                0,
                1,
                o0,
                o1 - o0,
                bias,
                m0,
                shift,
                out_mult,
                p0,
                zo,
                lo,
                hi,
                last,
                False,
                out,
                logits,
            )
