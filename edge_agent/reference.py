"""Plain-numpy integer reference of docs/quantization.md.

Written straight from the text, in the document's own layouts (channels first, torch
weight order), to check the numba engine bit for bit. Simple on purpose. Accumulators are
int32 and wrap modulo 2^32, as in the kernels. Products of int32 inputs and int8
weights (below 2^38 in size) are summed in float64 (BLAS) when a sum has fewer than 2^15
terms: every partial sum is then an integer below 2^53, so the result is exactly the int64
sum.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edge_agent.bundle import LayerQuant, QuantModel
from kernels.fixedpoint import requantize_reference
from kernels.packing import unpack_rows


def quantize_input(x: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: float, zp: int,
                   act_bits: int) -> np.ndarray:
    """Float (N, C, ...) -> uint8 codes: normalize, rint half-even, clamp (all float32)."""
    x = np.asarray(x, dtype=np.float32)
    shape = (1, -1, *(1,) * (x.ndim - 2))
    xn = (x - mean.astype(np.float32).reshape(shape)) / std.astype(np.float32).reshape(shape)
    q = np.rint(xn / np.float32(scale)) + np.float32(zp)
    return np.clip(q, 0, (1 << act_bits) - 1).astype(np.uint8)


def _wrap32(acc: np.ndarray) -> np.ndarray:
    return acc.astype(np.int64).astype(np.int32)


def _exact_dot(a: np.ndarray, b: np.ndarray, axes: tuple[list[int], list[int]]) -> np.ndarray:
    """int64 tensordot of int32-range ``a`` and int8-range ``b``; through float64 BLAS
    where that is exact (fewer than 2^15 terms per sum)."""
    terms = int(np.prod([b.shape[i] for i in axes[1]]))
    if terms >= 1 << 15:
        return np.tensordot(a.astype(np.int64), b.astype(np.int64), axes=axes)
    out = np.tensordot(a.astype(np.float64), b.astype(np.float64), axes=axes)
    return out.astype(np.int64)


def conv(xq: np.ndarray, q: np.ndarray, bias_q: np.ndarray, in_zp: int,
         stride: Sequence[int], padding: Sequence[int]) -> np.ndarray:
    """int32 accumulators of a 1-D or 2-D convolution: (N, C, *S) codes -> (N, O, *S')."""
    nd = len(stride)
    centred = xq.astype(np.int64) - in_zp  # padding holds code z: centred value 0
    pads = ((0, 0), (0, 0), *((p, p) for p in padding))
    centred = np.pad(centred, pads)
    kernel = q.shape[2:]
    win = sliding_window_view(centred, kernel, axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in stride))]
    # win: (N, C, *S', *kernel); contract C and kernel axes with q (O, C, *kernel)
    axes_win = [1, *range(2 + nd, 2 + 2 * nd)]
    acc = _exact_dot(win, q, (axes_win, [1, *range(2, 2 + nd)]))
    acc = np.moveaxis(acc, -1, 1)  # (N, O, *S')
    bias = bias_q.astype(np.int64).reshape((1, -1, *(1,) * nd))
    return _wrap32(acc + bias)


def linear(x: np.ndarray, q: np.ndarray, bias_q: np.ndarray, in_zp: int) -> np.ndarray:
    """int32 accumulators of a linear layer on uint8 codes (or int32 centred sums, zp 0)."""
    centred = x.astype(np.int64) - in_zp
    return _wrap32(_exact_dot(centred, q, ([1], [1])) + bias_q.astype(np.int64))


def requantize(acc: np.ndarray, m0: np.ndarray, shift: np.ndarray, out_zp: int, relu: bool,
               act_bits: int) -> np.ndarray:
    """Fixed-point requantization to uint8 codes, per output channel on axis 1."""
    shape = (1, -1, *(1,) * (acc.ndim - 2))
    r = requantize_reference(acc, m0.reshape(shape), shift.reshape(shape))
    lo = out_zp if relu else 0
    return np.clip(out_zp + r, lo, (1 << act_bits) - 1).astype(np.uint8)


def pool(xq: np.ndarray, kernel: Sequence[int], stride: Sequence[int], kind: str) -> np.ndarray:
    """Max pooling of codes, or average pooling ``(sum + n // 2) // n``."""
    nd = len(kernel)
    win = sliding_window_view(xq, tuple(kernel), axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in stride))]
    axes = tuple(range(2 + nd, 2 + 2 * nd))
    if kind == "max":
        return win.max(axis=axes)
    n = int(np.prod(kernel))
    return ((win.astype(np.int64).sum(axis=axes) + n // 2) // n).astype(np.uint8)


def gap(xq: np.ndarray, zp: int) -> np.ndarray:
    """Centred sums ``S_c = sum (x - z)`` over every spatial position, int32 (N, C)."""
    return _wrap32((xq.astype(np.int64) - zp).reshape(xq.shape[0], xq.shape[1], -1).sum(axis=2))


def _tuple(op: dict[str, Any], key: str, nd: int, default: int | None = None) -> tuple[int, ...]:
    v = op.get(key, default)
    if v is None:
        v = op["kernel"]
    return tuple(int(t) for t in v) if isinstance(v, (list, tuple)) else (int(v),) * nd


def _weights(layer: LayerQuant, shape: tuple[int, ...]) -> np.ndarray:
    return unpack_rows(layer.packed, layer.k, layer.bits).astype(np.int64).reshape(shape)


LayerHook = Callable[[int, np.ndarray, np.ndarray], None]


def forward(layers: Sequence[dict[str, Any]], quant: QuantModel, mean: np.ndarray,
            std: np.ndarray, x: np.ndarray, on_weighted: LayerHook | None = None) -> np.ndarray:
    """Float logits (N, classes) of float inputs ``x`` (N, *input_shape).

    ``on_weighted(i, centred_input, acc)``, if given, sees every weighted layer's input
    with its zero point subtracted (int64) and its int32 accumulators (the calibrator's
    forward-only features).
    """
    a = quant.act_bits
    h: np.ndarray = quantize_input(x, mean, std, quant.input_scale, quant.input_zp, a)
    zp = quant.input_zp
    weighted = iter(enumerate(quant.layers))
    for op in layers:
        kind = op["op"]
        if kind in ("conv1d", "conv2d", "linear"):
            index, lq = next(weighted)
            in_zp = 0 if h.dtype == np.int32 else lq.in_zp
            if kind == "linear":
                q = _weights(lq, (int(op["out_features"]), int(op["in_features"])))
                acc = linear(h, q, lq.bias_q, in_zp)
            else:
                nd = 1 if kind == "conv1d" else 2
                kernel = _tuple(op, "kernel", nd)
                q = _weights(lq, (int(op["out_ch"]), int(op["in_ch"]), *kernel))
                acc = conv(h, q, lq.bias_q, lq.in_zp, _tuple(op, "stride", nd, 1),
                           _tuple(op, "padding", nd, 0))
            if on_weighted is not None:
                on_weighted(index, h.astype(np.int64) - in_zp, acc)
            if lq.out_mult is not None:  # last layer: float logits
                shape = (1, -1, *(1,) * (acc.ndim - 2))
                return (acc.astype(np.float32) * lq.out_mult.reshape(shape)).reshape(len(acc), -1)
            assert lq.m0 is not None and lq.shift is not None and lq.out_zp is not None
            h = requantize(acc, lq.m0, lq.shift, lq.out_zp, bool(op.get("relu")), a)
            zp = lq.out_zp
        elif kind in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
            nd = 1 if kind.endswith("1d") else 2
            h = pool(h, _tuple(op, "kernel", nd), _tuple(op, "stride", nd), kind[:3])
        elif kind == "gap":
            h = gap(h, zp)
        elif kind == "flatten":
            h = h.reshape(h.shape[0], -1)
        else:
            raise ValueError(f"unknown layer op {kind!r}")
    raise ValueError("the layer list has no last weighted layer")
