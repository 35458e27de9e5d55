"""Read and replace the int32 biases and requantization multipliers of a built model (the
statistics rung's corrections).

The kernels hold each layer's bias folded with its input zero point
(:func:`kernels.plan.weights.pack_weights`); these helpers unfold it and move it by an
exact integer amount, without touching the weight panels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from kernels.plan import layout, tables
from kernels.plan.fixedpoint import MAX_SHIFT
from kernels.plan.model import Model, Weights
from kernels.plan.weights import aligned


def layer_bias(model: Model, weights: Weights, index: int) -> np.ndarray:
    """The int32 ``bias_q`` (O,) of one weighted layer, unfolded from ``weights.bias``."""
    slot = model.slots[index]
    w_off, bits, _, o, p0, in_zp = (int(v) for v in weights.ltab[index, :6])
    folded = weights.bias[p0 : p0 + o].astype(np.int64)
    if slot.centred:
        return folded.astype(np.int32)
    size = layout.panel_nbytes(o, slot.k, bits)
    q = layout.from_panel(weights.panel[w_off : w_off + size], o, slot.k, bits)
    fold = (in_zp - model.act_offset) * q.astype(np.int64).sum(axis=1)
    return (folded + fold).astype(np.int32)


def replace_biases(model: Model, weights: Weights, biases: Mapping[int, np.ndarray]) -> Weights:
    """A new :class:`Weights` with the int32 ``bias_q`` of some layers replaced.

    The folded bias moves by exactly the change of ``bias_q`` (the fold term depends on
    the codes only). A layer whose op takes the max of its int32 sums before
    requantizing (a fused max pool: ``M_PREMAX``, set when no sum can wrap) refuses a
    bias that could make its sums wrap: ValueError.
    """
    bias = aligned(weights.bias)
    for index, new in biases.items():
        if not 0 <= index < len(model.slots):
            raise IndexError(f"no weighted layer {index}")
        _, bits, k, o, p0 = (int(v) for v in weights.ltab[index, :5])
        b_new = np.asarray(new, dtype=np.int64)
        if b_new.shape != (o,) or np.abs(b_new).max(initial=0) >= 2**31:
            raise ValueError(f"layer {index}: bias must be ({o},) int32, got {b_new.shape}")
        row = next(
            r
            for r in model.ops
            if r[tables.F_OP] in tables.WEIGHTED_OPS and r[tables.F_LAYER] == index
        )
        bound = 2 * 255 * k * (1 << (bits - 1)) + int(np.abs(b_new).max(initial=0))
        if row[tables.F_MAP + tables.M_PREMAX] and bound >= 2**31:
            raise ValueError(f"layer {index}: bias too large for its fused max pool")
        old = layer_bias(model, weights, index).astype(np.int64)
        bias[p0 : p0 + o] = (bias[p0 : p0 + o].astype(np.int64) + b_new - old).astype(np.int32)
    return Weights(
        panel=weights.panel,
        bias=bias,
        m0=weights.m0,
        shift=weights.shift,
        out_mult=weights.out_mult,
        ltab=weights.ltab,
    )


def layer_requant(weights: Weights, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-point requantization multiplier ``(m0, shift)`` (O,) int32 of one hidden
    weighted layer (the last layer has none: its ``m0`` is 0)."""
    o, p0 = (int(v) for v in weights.ltab[index, 3:5])
    return weights.m0[p0 : p0 + o].copy(), weights.shift[p0 : p0 + o].copy()


def replace_requant(
    model: Model, weights: Weights, requant: Mapping[int, tuple[np.ndarray, np.ndarray]]
) -> Weights:
    """A new :class:`Weights` with the requantization multipliers of some hidden layers
    replaced (index -> (m0, shift), as :func:`kernels.plan.fixedpoint.quantize_multipliers`
    gives them). A multiplier stays positive, so requantization stays monotone in the sums
    (what a fused max pool relies on). ValueError for the last layer or a bad pair."""
    m0s, shifts = aligned(weights.m0), aligned(weights.shift)
    for index, (m0, shift) in requant.items():
        if not 0 <= index < len(model.slots) - 1:
            raise IndexError(f"no hidden weighted layer {index}")
        o, p0 = (int(v) for v in weights.ltab[index, 3:5])
        m = np.asarray(m0, dtype=np.int64)
        s = np.asarray(shift, dtype=np.int64)
        if m.shape != (o,) or s.shape != (o,):
            raise ValueError(f"layer {index}: m0 and shift must be ({o},)")
        if m.min(initial=0) < 0 or m.max(initial=0) >= 2**31:
            raise ValueError(f"layer {index}: m0 must lie in [0, 2^31)")
        if s.min(initial=1) < 1 or s.max(initial=1) > MAX_SHIFT:
            raise ValueError(f"layer {index}: shift must lie in [1, {MAX_SHIFT}]")
        m0s[p0 : p0 + o] = m.astype(np.int32)
        shifts[p0 : p0 + o] = s.astype(np.int32)
    return Weights(
        panel=weights.panel,
        bias=weights.bias,
        m0=m0s,
        shift=shifts,
        out_mult=weights.out_mult,
        ltab=weights.ltab,
    )
