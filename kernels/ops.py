"""Layer kernels on channels-last uint8 activations (numba, GIL released).

Activations are flat ``(H, W, C)`` uint8 buffers (a 1-D signal is ``H = 1``), so the
receptive field of a 1-D convolution is one contiguous run of bytes and the inner loops
run over channels. Arithmetic follows docs/quantization.md exactly; int32 accumulators
wrap modulo 2^32 like the numpy reference.
"""

from __future__ import annotations

import numpy as np

from kernels.jit import kernel
from kernels.layout import CHUNK
from kernels.microkernel import tile_kernel

_MK8 = (tile_kernel(8, 8), tile_kernel(8, 4), tile_kernel(8, 1))
_MK4 = (tile_kernel(4, 8), tile_kernel(4, 4), tile_kernel(4, 1))
_MK3 = (tile_kernel(3, 8), tile_kernel(3, 4), tile_kernel(3, 1))
_MK2 = (tile_kernel(2, 8), tile_kernel(2, 4), tile_kernel(2, 1))
mk8_8, mk8_4, mk8_1 = _MK8
mk4_8, mk4_4, mk4_1 = _MK4
mk3_8, mk3_4, mk3_1 = _MK3
mk2_8, mk2_4, mk2_1 = _MK2
CHUNK_BYTES = np.array([0, 0, CHUNK[2][1], CHUNK[3][1], CHUNK[4][1], 0, 0, 0, CHUNK[8][1]],
                       dtype=np.int64)
TILES_PER_CHUNK = np.array([0, 0, CHUNK[2][0], CHUNK[3][0], CHUNK[4][0], 0, 0, 0, CHUNK[8][0]],
                           dtype=np.int64)


@kernel
def quantize_input(x: np.ndarray, channels: int, positions: int, mean: np.ndarray,
                   std: np.ndarray, scale: np.float32, zp: int, hi: int,
                   out: np.ndarray) -> None:
    """Float ``(C, positions)`` channel-first sample -> uint8 channels-last codes.

    ``clamp(rint((x - mean[c]) / std[c] / scale) + zp, 0, hi)`` in float32, rint half
    to even. ``x`` must be finite.
    """
    zf = np.float32(zp)
    top = np.float32(hi)
    for c in range(channels):
        m = mean[c]
        s = std[c]
        for p in range(positions):
            v = np.rint(((x[c * positions + p] - m) / s) / scale) + zf
            if v < np.float32(0.0):
                v = np.float32(0.0)
            elif v > top:
                v = top
            out[p * channels + c] = np.uint8(v)


@kernel
def requantize(v: np.int32, m0: np.int32, shift: np.int32) -> np.int64:
    """Round-half-away-from-zero ``v * m0 * 2^-shift`` (int64 product)."""
    p = np.int64(v) * np.int64(m0)
    half = np.int64(1) << (shift - 1)
    if p >= 0:
        return (p + half) >> shift
    return -((half - p) >> shift)


@kernel
def pad_copy(src: np.ndarray, h: int, w: int, c: int, dst: np.ndarray, ph: int, pw: int,
             fill: int) -> None:
    """Copy an (h, w, c) buffer into the middle of an (h+2ph, w+2pw, c) one filled with ``fill``."""
    wp = w + 2 * pw
    dst[:(h + 2 * ph) * wp * c] = np.uint8(fill)
    n = w * c
    for i in range(h):
        base = ((i + ph) * wp + pw) * c
        dst[base:base + n] = src[i * n:(i + 1) * n]


@kernel
def im2col(src: np.ndarray, wp: int, c: int, oh: int, ow: int, kh: int, kw: int, sh: int,
           sw: int, row_len: int, dst: np.ndarray) -> None:
    """Gather each receptive field of a padded (., wp, c) buffer into a row of ``dst``.

    Row ``oh_i * ow + ow_i`` holds the window in ``[kh, kw, c]`` order; bytes past
    ``kh * kw * c`` are left as they are (they meet zero weights).
    """
    seg = kw * c
    for i in range(oh):
        for j in range(ow):
            row = (i * ow + j) * row_len
            for r in range(kh):
                s = ((i * sh + r) * wp + j * sw) * c
                d = row + r * seg
                for t in range(seg):
                    dst[d + t] = src[s + t]


@kernel
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


@kernel
def _epilogue(acc: np.ndarray, rows: int, m: int, o0: int, o1: int, bias: np.ndarray,
              m0: np.ndarray, shift: np.ndarray, out_mult: np.ndarray, p0: int, zo: int,
              lo: int, hi: int, last: bool, out: np.ndarray, logits: np.ndarray,
              out_stride: int) -> None:
    """Add the bias and requantize (hidden layer) or scale to float logits (last layer).

    Branch-free over the output channels of a row, so LLVM vectorizes it (this runs once
    per output value, which for thin layers costs as much as the dot products).
    """
    c0 = p0 + o0
    c1 = p0 + o1
    if last:
        _scale_rows(acc, rows, o1 - o0, bias[c0:c1], out_mult[c0:c1],
                    logits[m * out_stride + o0:], out_stride)
    else:
        _requant_rows(acc, rows, o1 - o0, bias[c0:c1], m0[c0:c1], shift[c0:c1], zo, lo, hi,
                      out[m * out_stride + o0:], out_stride)


@kernel
def _requant_rows(acc: np.ndarray, rows: int, n: int, bias: np.ndarray, m0: np.ndarray,
                  shift: np.ndarray, zo: int, lo: int, hi: int, out: np.ndarray,
                  out_stride: int) -> None:
    for r in range(rows):
        a = acc[r * 16:r * 16 + n]
        dst = out[r * out_stride:r * out_stride + n]
        for j in range(n):
            v = np.int32(np.int64(a[j]) + np.int64(bias[j]))
            p = np.int64(v) * np.int64(m0[j])
            s = np.int64(shift[j])
            mag = (np.abs(p) + (np.int64(1) << (s - 1))) >> s
            y = zo + (-mag if p < 0 else mag)
            y = max(y, lo)
            y = min(y, hi)
            dst[j] = np.uint8(y)


@kernel
def _scale_rows(acc: np.ndarray, rows: int, n: int, bias: np.ndarray, out_mult: np.ndarray,
                logits: np.ndarray, out_stride: int) -> None:
    for r in range(rows):
        a = acc[r * 16:r * 16 + n]
        dst = logits[r * out_stride:r * out_stride + n]
        for j in range(n):
            v = np.int32(np.int64(a[j]) + np.int64(bias[j]))
            dst[j] = np.float32(v) * out_mult[j]


@kernel
def gemm_requant(a: np.ndarray, a_stride: int, rows_total: int, w: np.ndarray, w_off: int,
                 bits: int, k: int, out_ch: int, bias: np.ndarray, m0: np.ndarray,
                 shift: np.ndarray, out_mult: np.ndarray, p0: int, zo: int, lo: int, hi: int,
                 last: bool, out: np.ndarray, logits: np.ndarray, acc: np.ndarray) -> None:
    """``rows_total`` rows of ``a`` (row m at ``m * a_stride``) times a panel, fused epilogue.

    Row m of the result goes to ``out[m * out_ch:]`` (uint8 codes) or, for the last
    layer, ``logits[m * out_ch:]``. ``bias`` must already hold ``bias_q - z_in * rowsum``.
    """
    tiles = TILES_PER_CHUNK[bits]
    cb = CHUNK_BYTES[bits]
    nchunks = (((k + 3) // 4) + tiles - 1) // tiles
    nblocks = (out_ch + 15) // 16
    for b in range(nblocks):
        off = w_off + b * nchunks * cb
        o0 = b * 16
        o1 = min(out_ch, o0 + 16)
        m = 0
        while m < rows_total:
            rem = rows_total - m
            rows = 8 if rem >= 8 else (4 if rem >= 3 else 1)
            valid = min(rows, rem)
            _tile(bits, rows, acc, a, m * a_stride, a_stride, valid - 1, w, off, nchunks)
            _epilogue(acc, valid, m, o0, o1, bias, m0, shift, out_mult, p0, zo, lo, hi, last,
                      out, logits, out_ch)
            m += valid


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
def linear_i32(s: np.ndarray, w: np.ndarray, w_off: int, bits: int, k: int, out_ch: int,
               bias: np.ndarray, m0: np.ndarray, shift: np.ndarray, out_mult: np.ndarray,
               p0: int, zo: int, lo: int, hi: int, last: bool, out: np.ndarray,
               logits: np.ndarray, acc: np.ndarray) -> None:
    """Linear layer on int32 centred sums (after ``gap``), with the same fused epilogue."""
    for b in range((out_ch + 15) // 16):
        o0 = b * 16
        o1 = min(out_ch, o0 + 16)
        for o in range(o0, o1):
            total = np.int64(0)
            for j in range(k):
                total += np.int64(panel_code(w, w_off, bits, k, o, j)) * np.int64(s[j])
            acc[o - o0] = np.int32(total)
        _epilogue(acc, 1, 0, o0, o1, bias, m0, shift, out_mult, p0, zo, lo, hi, last, out,
                  logits, out_ch)


@kernel
def max_pool(src: np.ndarray, c: int, w: int, oh: int, ow: int, kh: int, kw: int, sh: int,
             sw: int, dst: np.ndarray) -> None:
    """Max over each (kh, kw) window of an (., w, c) buffer."""
    for i in range(oh):
        for j in range(ow):
            d = (i * ow + j) * c
            for ch in range(c):
                dst[d + ch] = 0
            for r in range(kh):
                for t in range(kw):
                    s = ((i * sh + r) * w + j * sw + t) * c
                    for ch in range(c):
                        dst[d + ch] = max(dst[d + ch], src[s + ch])


@kernel
def avg_pool(src: np.ndarray, c: int, w: int, oh: int, ow: int, kh: int, kw: int, sh: int,
             sw: int, dst: np.ndarray, tmp: np.ndarray) -> None:
    """``(sum + n // 2) // n`` over each (kh, kw) window; ``tmp`` is int32 scratch of c."""
    n = kh * kw
    for i in range(oh):
        for j in range(ow):
            for ch in range(c):
                tmp[ch] = 0
            for r in range(kh):
                for t in range(kw):
                    s = ((i * sh + r) * w + j * sw + t) * c
                    for ch in range(c):
                        tmp[ch] += np.int32(src[s + ch])
            d = (i * ow + j) * c
            for ch in range(c):
                dst[d + ch] = np.uint8((tmp[ch] + n // 2) // n)


@kernel
def global_sum(src: np.ndarray, positions: int, c: int, zp: int, dst: np.ndarray) -> None:
    """Centred sums ``S_c = sum_p (x[p, c] - zp)`` as int32."""
    for ch in range(c):
        dst[ch] = -positions * zp
    for p in range(positions):
        base = p * c
        for ch in range(c):
            dst[ch] += np.int32(src[base + ch])
