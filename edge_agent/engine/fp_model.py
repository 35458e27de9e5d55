"""Numpy forward pass of a bundle's BN-folded full-precision model (no torch).

The agent's label-free mode needs the FP model's predictions as pseudo-labels; this runs
``Bundle.fp_weights`` over the ``arch`` layer list in float32 with the same semantics as
the torch ``FPNet`` it was exported from (convolutions as windowed tensor contractions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edge_agent.bundle import WEIGHTED_OPS, Bundle
from edge_agent.contracts import Predict


def _ints(op: dict[str, Any], key: str, nd: int, default: int) -> tuple[int, ...]:
    v = op.get(key, default)
    return tuple(int(t) for t in v) if isinstance(v, (list, tuple)) else (int(v),) * nd


def _conv(
    h: np.ndarray, w: np.ndarray, b: np.ndarray, stride: Sequence[int], padding: Sequence[int]
) -> np.ndarray:
    nd = len(stride)
    h = np.pad(h, ((0, 0), (0, 0), *((p, p) for p in padding)))
    win = sliding_window_view(h, w.shape[2:], axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in stride))]
    # win: (N, C, *S', *kernel) contracted with w: (O, C, *kernel) -> (N, *S', O)
    out = np.tensordot(win, w, axes=([1, *range(2 + nd, 2 + 2 * nd)], list(range(1, 2 + nd))))
    out = np.moveaxis(out, -1, 1)
    return out + b.reshape((1, -1, *(1,) * nd))


def _pool(h: np.ndarray, kernel: Sequence[int], stride: Sequence[int], kind: str) -> np.ndarray:
    nd = len(kernel)
    win = sliding_window_view(h, tuple(kernel), axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None), *(slice(None, None, s) for s in stride))]
    axes = tuple(range(2 + nd, 2 + 2 * nd))
    return win.max(axis=axes) if kind == "max" else win.mean(axis=axes, dtype=np.float32)


def fp_logits(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    """Float32 logits (N, classes) of the FP model on raw inputs (N, *input_shape)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[1:] != bundle.input_shape:
        raise ValueError(f"input shape {x.shape} does not match (N, {bundle.input_shape})")
    shape = (1, -1, *(1,) * (x.ndim - 2))
    h = (x - bundle.norm_mean.reshape(shape)) / bundle.norm_std.reshape(shape)
    weights = iter(bundle.fp_weights)
    for op in bundle.arch["layers"]:
        kind = op["op"]
        if kind in WEIGHTED_OPS:
            w, b = next(weights)
            if kind == "linear":
                h = h @ w.T + b
            else:
                nd = 1 if kind == "conv1d" else 2
                h = _conv(h, w, b, _ints(op, "stride", nd, 1), _ints(op, "padding", nd, 0))
            if op.get("relu"):
                h = np.maximum(h, 0.0)
        elif kind in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
            nd = 1 if kind.endswith("1d") else 2
            kernel = _ints(op, "kernel", nd, 1)
            stride = _ints(op, "stride", nd, 1) if "stride" in op else kernel
            h = _pool(h, kernel, stride, kind[:3])
        elif kind == "gap":
            h = h.reshape(h.shape[0], h.shape[1], -1).mean(axis=2, dtype=np.float32)
        elif kind == "flatten":
            h = h.reshape(h.shape[0], -1)
        else:
            raise ValueError(f"unsupported layer {kind!r}")
    return np.asarray(h, dtype=np.float32)


def fp_predict_fn(bundle: Bundle, batch: int = 256) -> Predict:
    """A function mapping raw inputs (N, *input_shape) to the FP model's classes (int64)."""

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        out = [fp_logits(bundle, x[i : i + batch]).argmax(axis=1) for i in range(0, len(x), batch)]
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)

    return predict
