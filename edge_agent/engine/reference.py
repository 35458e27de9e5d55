"""Plain-numpy integer reference of docs/quantization.md.

Written straight from the text, in the document's own layouts (channels first, torch
weight order), to check the numba engine bit for bit. Simple on purpose. Accumulators are
int32 and wrap modulo 2^32, as in the kernels. Convolutions are an im2col (the patches,
in torch's column order) times the weight matrix. Integer dot products go through BLAS
where that is exact: float32 when the sum of the absolute products is below 2^24, float64
when a sum has fewer than 2^15 terms (products of int32 inputs and int8 weights are below
2^38, so every partial sum is an integer below 2^53); int64 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edge_agent.bundle import LayerQuant, QuantModel
from kernels.plan.fixedpoint import requantize_reference
from kernels.plan.packing import unpack_rows


def quantize_input(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: float, zp: int, act_bits: int
) -> np.ndarray:
    """Float (N, C, ...) -> uint8 codes: normalize, rint half-even, clamp (all float32)."""
    x = np.asarray(x, dtype=np.float32)
    shape = (1, -1, *(1,) * (x.ndim - 2))
    xn = (x - mean.astype(np.float32).reshape(shape)) / std.astype(np.float32).reshape(shape)
    q = np.rint(xn / np.float32(scale)) + np.float32(zp)
    return np.clip(q, 0, (1 << act_bits) - 1).astype(np.uint8)


def _wrap32(acc: np.ndarray) -> np.ndarray:
    return acc.astype(np.int64).astype(np.int32)


def _exact_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int64 ``a @ b.T`` of int32-range ``a`` (..., K) and int8-range ``b`` (O, K); through
    float BLAS where that is exact."""
    terms = b.shape[1]
    bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).max(initial=0)) * terms
    rows = a.reshape(-1, terms)
    if bound < 1 << 24:
        out = (rows.astype(np.float32) @ b.T.astype(np.float32)).astype(np.int64)
    elif terms < 1 << 15:
        out = (rows.astype(np.float64) @ b.T.astype(np.float64)).astype(np.int64)
    else:
        out = rows.astype(np.int64) @ b.T.astype(np.int64)
    return out.reshape(*a.shape[:-1], len(b))


def window(offset: Sequence[int], stride: Sequence[int], count: Sequence[int]) -> tuple[slice, ...]:
    """Per spatial axis, the input positions kernel position ``offset`` meets at ``count``
    outputs ``stride`` apart."""
    return tuple(
        slice(o, o + s * (m - 1) + 1, s) for o, s, m in zip(offset, stride, count, strict=True)
    )


def padded(
    centred: np.ndarray, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> tuple[np.ndarray, list[int]]:
    """A centred conv input (N, C, *S) padded with centred value 0, and the number of
    output positions per spatial axis."""
    spatial = list(zip(centred.shape[2:], padding, strict=True))
    x = np.zeros((*centred.shape[:2], *(d + 2 * p for d, p in spatial)), centred.dtype)
    x[(slice(None), slice(None), *(slice(p, p + d) for d, p in spatial))] = centred
    return x, [(x.shape[2 + d] - kernel[d]) // stride[d] + 1 for d in range(len(stride))]


def patches(
    centred: np.ndarray, kernel: Sequence[int], stride: Sequence[int], padding: Sequence[int]
) -> np.ndarray:
    """im2col of a centred conv input (N, C, *S) -> (N, *S', C * prod(kernel)), columns in
    torch's weight order (channel, then kernel positions); padding is centred value 0."""
    nd = len(stride)
    x, out = padded(centred, kernel, stride, padding)
    channels_last = np.moveaxis(x, 1, -1)  # (N, *S, C)
    cols = np.empty((len(x), *out, x.shape[1], *kernel), x.dtype)
    every = (slice(None),) * (2 + nd)  # sample, output positions, channel
    for offset in np.ndindex(*kernel):  # one strided copy per kernel position
        cols[(*every, *offset)] = channels_last[(slice(None), *window(offset, stride, out))]
    return cols.reshape(*cols.shape[: 1 + nd], -1)


def conv(
    xq: np.ndarray,
    q: np.ndarray,
    bias_q: np.ndarray,
    in_zp: int,
    stride: Sequence[int],
    padding: Sequence[int],
) -> np.ndarray:
    """int32 accumulators of a 1-D or 2-D convolution: (N, C, *S) codes -> (N, O, *S')."""
    cols = patches(xq.astype(np.int64) - in_zp, q.shape[2:], stride, padding)
    return _conv(cols, q.reshape(len(q), -1), bias_q)


Ints = tuple[int, ...]


def conv_geometry(op: dict[str, Any]) -> tuple[Ints, Ints, Ints]:
    """(kernel, stride, padding) of a conv1d / conv2d layer op, one entry per dimension."""
    nd = 1 if op["op"] == "conv1d" else 2
    return _tuple(op, "kernel", nd), _tuple(op, "stride", nd, 1), _tuple(op, "padding", nd, 0)


def pool_geometry(op: dict[str, Any]) -> tuple[Ints, Ints]:
    """(kernel, stride) of a pooling layer op (the stride defaults to the kernel)."""
    nd = 1 if op["op"].endswith("1d") else 2
    return _tuple(op, "kernel", nd), _tuple(op, "stride", nd)


def layer_patches(op: dict[str, Any], centred: np.ndarray) -> np.ndarray:
    """What a weighted layer multiplies by its (O, K) weights: the im2col patches
    (N, *S', K) of a convolution's centred input (N, C, *S); a linear layer's (N, K) as is."""
    return centred if op["op"] == "linear" else patches(centred, *conv_geometry(op))


def _conv(cols: np.ndarray, q: np.ndarray, bias_q: np.ndarray) -> np.ndarray:
    """Accumulators (N, O, *S') of patches (N, *S', K) and weights (O, K)."""
    acc = _exact_dot(cols, q) + bias_q.astype(np.int64)
    return _wrap32(np.moveaxis(acc, -1, 1))


def linear(x: np.ndarray, q: np.ndarray, bias_q: np.ndarray, in_zp: int) -> np.ndarray:
    """int32 accumulators of a linear layer on uint8 codes (or int32 centred sums, zp 0)."""
    return _linear(x.astype(np.int64) - in_zp, q, bias_q)


def _linear(centred: np.ndarray, q: np.ndarray, bias_q: np.ndarray) -> np.ndarray:
    """Accumulators (N, O) of centred inputs (N, K) and weights (O, K)."""
    return _wrap32(_exact_dot(centred, q) + bias_q.astype(np.int64))


def requantize(
    acc: np.ndarray, m0: np.ndarray, shift: np.ndarray, out_zp: int, relu: bool, act_bits: int
) -> np.ndarray:
    """Requantization to uint8 codes, per output channel on axis 1 (float32, ties to even:
    :func:`kernels.plan.fixedpoint.requantize_reference`)."""
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


def _weights(layer: LayerQuant) -> np.ndarray:
    return unpack_rows(layer.packed, layer.k, layer.bits).astype(np.int64)  # (O, K)


LayerHook = Callable[[int, np.ndarray, np.ndarray], None]


def forward(
    layers: Sequence[dict[str, Any]],
    quant: QuantModel,
    mean: np.ndarray,
    std: np.ndarray,
    x: np.ndarray,
    on_weighted: LayerHook | None = None,
) -> np.ndarray:
    """Float logits (N, classes) of float inputs ``x`` (N, *input_shape).

    ``on_weighted(i, cols, acc)``, if given, sees every weighted layer's input with its
    zero point subtracted as integer patches ``cols`` (N, positions, K) (one position for a
    linear layer) and its int32 accumulators (what the engine's :meth:`Engine.trace` and
    the calibrator's forward-only features are checked against).
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
            cols = layer_patches(op, h.astype(np.int64) - in_zp)
            q = _weights(lq)
            acc = _linear(cols, q, lq.bias_q) if kind == "linear" else _conv(cols, q, lq.bias_q)
            if on_weighted is not None:
                on_weighted(index, cols.reshape(len(h), -1, cols.shape[-1]), acc)
            if lq.out_mult is not None:  # last layer: float logits
                shape = (1, -1, *(1,) * (acc.ndim - 2))
                return (acc.astype(np.float32) * lq.out_mult.reshape(shape)).reshape(len(acc), -1)
            assert lq.m0 is not None and lq.shift is not None and lq.out_zp is not None
            h = requantize(acc, lq.m0, lq.shift, lq.out_zp, bool(op.get("relu")), a)
            zp = lq.out_zp
        elif kind in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
            h = pool(h, *pool_geometry(op), kind[:3])
        elif kind == "gap":
            h = gap(h, zp)
        elif kind == "flatten":
            h = h.reshape(h.shape[0], -1)
        else:
            raise ValueError(f"unknown layer op {kind!r}")
    raise ValueError("the layer list has no last weighted layer")
