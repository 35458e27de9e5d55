"""Candidate weights of a flip round scored from the pass of the weights they change.

A round tries candidates that differ from the best weights so far in a few layers (often
only the last one). The layers before the first changed one see the same inputs as in the
traced pass of the best weights, so a candidate's pass starts at that layer's recorded
input and runs the rest of the network in the plain-numpy integer reference
(:mod:`edge_agent.engine.reference`, the engine's arithmetic bit for bit), instead of the
whole network on the engine. A candidate that changes the first layer runs on the engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_agent.bundle import WEIGHTED_OPS, Bundle
from edge_agent.engine import reference as ref


def first_changed(old: list[np.ndarray], new: list[np.ndarray]) -> int | None:
    """Index of the first weighted layer whose codes differ (None: none does); arrays
    that are the same object are equal (code arrays are never modified in place)."""
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        if a is not b and not np.array_equal(a, b):
            return i
    return None


def suffix_pass(
    bundle: Bundle, bits: int, codes: list[np.ndarray], inputs: list[np.ndarray], start: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and every weighted layer's input (as :meth:`Engine.trace` records them) of
    the ``bits`` model with weights ``codes``, from weighted layer ``start`` on, given
    ``inputs``: the layer inputs of a pass whose weights equal ``codes`` before ``start``.
    The bundle's biases and requantization are the model's (a calibrator's bundle)."""
    quant = bundle.quant[bits]
    out = list(inputs[:start])
    ops = bundle.arch["layers"]
    weighted = [i for i, op in enumerate(ops) if op["op"] in WEIGHTED_OPS]
    h: np.ndarray = inputs[start]  # centred: zero point 0 from here
    zp = 0
    for op in ops[weighted[start] :]:
        kind = op["op"]
        if kind not in WEIGHTED_OPS:
            h = _other(op, h, zp)
            continue
        i = len(out)
        lq = quant.layers[i]
        centred = h if i == start else _centred(h, lq.in_zp)
        out.append(centred)
        acc = _accumulate(op, centred, codes[i], lq.bias_q)
        if lq.out_mult is not None:  # the last layer: float logits
            shape = (1, -1, *(1,) * (acc.ndim - 2))
            logits = (acc.astype(np.float32) * lq.out_mult.reshape(shape)).reshape(len(acc), -1)
            return logits, out
        assert lq.m0 is not None and lq.shift is not None and lq.out_zp is not None
        h = ref.requantize(acc, lq.m0, lq.shift, lq.out_zp, bool(op.get("relu")), quant.act_bits)
        zp = lq.out_zp
    raise ValueError("the layer list has no last weighted layer")


def _centred(h: np.ndarray, in_zp: int) -> np.ndarray:
    """A weighted layer's input as the engine's trace gives it: int32 centred sums after a
    global average pool as they are, codes minus the zero point as int16."""
    return h if h.dtype == np.int32 else h.astype(np.int16) - np.int16(in_zp)


def _accumulate(
    op: dict[str, Any], centred: np.ndarray, q: np.ndarray, bias_q: np.ndarray
) -> np.ndarray:
    """int32 accumulators of one weighted layer on centred inputs (zero point 0)."""
    if op["op"] == "linear":
        return ref.linear(centred.reshape(len(centred), -1), q, bias_q, 0)
    kernel, stride, padding = ref.conv_geometry(op)
    return ref.conv(centred, q.reshape(len(q), -1, *kernel), bias_q, 0, stride, padding)


def _other(op: dict[str, Any], h: np.ndarray, zp: int) -> np.ndarray:
    """A pooling, global average pool or flatten op on codes with zero point ``zp``."""
    kind = op["op"]
    if kind == "gap":
        return ref.gap(h, zp)
    if kind == "flatten":
        return h.reshape(len(h), -1)
    return ref.pool(h, *ref.pool_geometry(op), kind[:3])
