"""Data-movement and pooling kernels on channels-last uint8 activations (numba).

A tensor of a batch is stored sample after sample, ``ss`` bytes each; a sample is an
``(hp, wp, c)`` buffer whose interior ``(h, w, c)`` starts at row ``ph``, column ``pw``
(the padding of the convolution that reads it; a 1-D signal has ``h = 1``). The inner
loops run over channels. Arithmetic follows docs/quantization.md exactly.
"""

from __future__ import annotations

import numpy as np

from kernels.codegen.colsum import colsum16
from kernels.codegen.jit import kernel
from kernels.codegen.memcopy import copy_blocks


@kernel
def quantize_input(
    x: np.ndarray,
    c: int,
    h: int,
    w: int,
    mean: np.ndarray,
    std: np.ndarray,
    scale: np.float32,
    zp: int,
    hi: int,
    out: np.ndarray,
    wp: int,
    ph: int,
    pw: int,
    tmp: np.ndarray,
) -> None:
    """One float ``(C, H, W)`` channel-first sample -> uint8 codes in a channels-last layout.

    ``clamp(rint((x - mean[c]) / std[c] / scale) + zp, 0, hi)`` in float32, rint half
    to even. ``x`` must be finite. Each input row is quantized into ``tmp`` (uint8 of at
    least ``w``) with contiguous vector loads and divisions, then spread over channels.
    """
    zf = np.float32(zp)
    top = np.float32(hi)
    zero = np.float32(0.0)
    for ch in range(c):
        m = mean[ch]
        s = std[ch]
        for i in range(h):
            src = x[(ch * h + i) * w : (ch * h + i + 1) * w]
            for j in range(w):
                v = np.rint(((src[j] - m) / s) / scale) + zf
                tmp[j] = np.uint8(min(max(v, zero), top))
            # unsigned indices: numba adds no negative-index wraparound to the strided
            # stores (it doubled this loop's instructions)
            base = np.uint64(((i + ph) * wp + pw) * c + ch)
            step = np.uint64(c)
            for j in range(w):
                out[base + np.uint64(j) * step] = tmp[j]


@kernel
def im2col(
    src: np.ndarray,
    wp: int,
    c: int,
    oh: int,
    ow: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    row_len: int,
    dst: np.ndarray,
) -> None:
    """Gather each receptive field of a padded (., wp, c) buffer into a row of ``dst``.

    Row ``oh_i * ow + ow_i`` holds the window in ``[kh, kw, c]`` order; bytes past
    ``kh * kw * c`` hold whatever was there or copied past a window row (they meet zero
    weights). Window rows are copied in whole 64-byte blocks, in increasing order (each
    overwrites the spill of the one before), so ``src`` and ``dst`` need 64 bytes of slack.
    """
    seg = kw * c
    # copy_blocks, not slice assignments: each slice is an array view with an atomic
    # reference-count pair, which for rows of a few channels cost more than the copy
    # (over a third of the digits model's time at batch 64); nor copy_bytes, whose
    # libc memmove call then cost a fifth of it
    for i in range(oh):
        for j in range(ow):
            row = (i * ow + j) * row_len
            for r in range(kh):
                copy_blocks(dst, row + r * seg, src, ((i * sh + r) * wp + j * sw) * c, seg)


@kernel
def max_pool(
    src: np.ndarray,
    c: int,
    w: int,
    oh: int,
    ow: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    dst: np.ndarray,
    wp: int,
    ph: int,
    pw: int,
) -> None:
    """Max over each (kh, kw) window of an unpadded (., w, c) buffer, into a layout."""
    for i in range(oh):
        for j in range(ow):
            d = ((i + ph) * wp + j + pw) * c
            out = dst[d : d + c]
            s0 = (i * sh * w + j * sw) * c
            out[:] = src[s0 : s0 + c]
            for r in range(kh):
                for t in range(kw):
                    s = ((i * sh + r) * w + j * sw + t) * c
                    for ch in range(c):
                        out[ch] = max(out[ch], src[s + ch])


@kernel
def avg_pool(
    src: np.ndarray,
    c: int,
    w: int,
    oh: int,
    ow: int,
    kh: int,
    kw: int,
    sh: int,
    sw: int,
    dst: np.ndarray,
    wp: int,
    ph: int,
    pw: int,
    tmp: np.ndarray,
) -> None:
    """``(sum + n // 2) // n`` over each (kh, kw) window; ``tmp`` is int32 scratch of c."""
    n = kh * kw
    for i in range(oh):
        for j in range(ow):
            tmp[:c] = 0
            for r in range(kh):
                for t in range(kw):
                    s = ((i * sh + r) * w + j * sw + t) * c
                    for ch in range(c):
                        tmp[ch] += np.int32(src[s + ch])
            d = ((i + ph) * wp + j + pw) * c
            for ch in range(c):
                dst[d + ch] = np.uint8((tmp[ch] + n // 2) // n)


@kernel
def global_sum(src: np.ndarray, positions: int, c: int, zp: int, dst: np.ndarray) -> None:
    """Centred sums ``S_c = sum_p (x[p, c] - zp)`` as int32, 16 channels at a time in a
    register (``src`` needs 16 bytes of slack, ``dst`` 16 int32 past ``c``)."""
    for ch in range(0, c, 16):
        colsum16(src, ch, c, positions, -positions * zp, dst, ch, min(16, c - ch))
