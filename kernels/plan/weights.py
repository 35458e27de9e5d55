"""The weights of a built model: each layer's codes in kernel order, laid out as panels
with their folded biases (:func:`pack_weights`), and a new frozen :class:`Weights` with
some layers' codes changed (:func:`replace_layers`), so a swap is one reference
assignment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kernels.plan import layout
from kernels.plan.model import LayerParams, Model, Weights, _Slot


def kernel_order(slot: _Slot, q: np.ndarray) -> np.ndarray:
    """Columns of ``q`` reordered from torch order to the kernels' channels-last order."""
    kind, channels, dims = slot.reorder
    if kind == "conv":
        return layout.conv_to_kernel_order(q, channels, dims)
    if kind == "flatten":
        return layout.flatten_to_kernel_order(q, channels, dims[0])
    return np.ascontiguousarray(q)


def aligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` starting on a 64-byte cache line (its buffer is the
    copy's base). Panel chunks and 16-channel parameter blocks are 64 bytes at multiples
    of 64: aligned, no vector load of them straddles two lines."""
    buf = np.empty(a.nbytes + 64, np.uint8)
    skew = -buf.ctypes.data % 64
    out = buf[skew : skew + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _folded_bias(slot: _Slot, p: LayerParams, q: np.ndarray, act_offset: int) -> np.ndarray:
    """``bias_q - (in_zp - act_offset) * rowsum(q)`` (int32, wrapping), ``bias_q`` after gap.

    The micro-kernels sum ``(x - act_offset) * q`` over the codes ``x`` (kernels.plan.targets).
    """
    bias = np.asarray(p.bias_q, dtype=np.int32)
    if slot.centred:
        return bias.copy()
    rowsum = q.astype(np.int64).sum(axis=1)
    return (bias.astype(np.int64) - (int(p.in_zp) - act_offset) * rowsum).astype(np.int32)


def pack_weights(model: Model, params: Sequence[LayerParams]) -> Weights:
    """Lay out every layer's parameters into a fresh :class:`Weights`.

    Per-channel parameters of each layer are padded to whole blocks of 16 channels
    (the vector epilogue reads 16 at a time): bias 0, ``m0`` 0, ``shift`` 1.
    """
    panels, biases, m0s, shifts, mults, rows = [], [], [], [], [], []
    w_off = p0 = 0
    for slot, p in zip(model.slots, params, strict=True):
        q = np.asarray(p.q, dtype=np.int8)
        panel = layout.to_panel(kernel_order(slot, q), p.bits)
        o = slot.out_ch
        pad = -o % layout.OUT_BLOCK
        panels.append(panel)
        biases.append(np.pad(_folded_bias(slot, p, q, model.act_offset), (0, pad)))
        m0s.append(
            np.zeros(o + pad, np.int32)
            if p.m0 is None
            else np.pad(np.asarray(p.m0, np.int32), (0, pad))
        )
        shifts.append(
            np.ones(o + pad, np.int32)
            if p.shift is None
            else np.pad(np.asarray(p.shift, np.int32), (0, pad), constant_values=1)
        )
        mults.append(
            np.zeros(o + pad, np.float32)
            if p.out_mult is None
            else np.pad(np.asarray(p.out_mult, np.float32), (0, pad))
        )
        zo = 0 if p.out_zp is None else int(p.out_zp)
        rows.append(
            [
                w_off,
                p.bits,
                slot.k,
                o,
                p0,
                int(p.in_zp),
                zo,
                zo if slot.relu else 0,
                layout.padded_k(slot.k, p.bits),
            ]
        )
        w_off += panel.size
        p0 += o + pad
    ltab = np.array(rows, dtype=np.int64)
    return Weights(
        panel=aligned(np.concatenate(panels)),
        bias=aligned(np.concatenate(biases)),
        m0=aligned(np.concatenate(m0s)),
        shift=aligned(np.concatenate(shifts)),
        out_mult=np.concatenate(mults),
        ltab=ltab,
    )


def replace_layers(model: Model, weights: Weights, codes: Mapping[int, np.ndarray]) -> Weights:
    """A new :class:`Weights` with the codes of some layers replaced (bit-widths unchanged).

    ``codes`` maps a weighted-layer index to its new (O, K) signed weights in torch order.
    The folded biases of those layers are recomputed; ``weights`` is not modified.
    """
    panel = aligned(weights.panel)
    bias = aligned(weights.bias)
    for index, q_new in codes.items():
        if not 0 <= index < len(model.slots):
            raise IndexError(f"no weighted layer {index}")
        slot = model.slots[index]
        w_off, bits, _, o, p0, in_zp = (int(v) for v in weights.ltab[index, :6])
        q = np.asarray(q_new)
        if q.shape != (o, slot.k):
            raise ValueError(f"layer {index}: new weights {q.shape}, expected {(o, slot.k)}")
        new_panel = layout.to_panel(kernel_order(slot, q), bits)
        panel[w_off : w_off + new_panel.size] = new_panel
        old_bias = bias[p0 : p0 + o].astype(np.int64)
        old_q = layout.from_panel(weights.panel[w_off : w_off + new_panel.size], o, slot.k, bits)
        if not slot.centred:  # refold bias_q with the new rows (see _folded_bias)
            delta = q.astype(np.int64).sum(axis=1) - old_q.astype(np.int64).sum(axis=1)
            bias[p0 : p0 + o] = (old_bias - (in_zp - model.act_offset) * delta).astype(np.int32)
    return Weights(
        panel=panel,
        bias=bias,
        m0=weights.m0,
        shift=weights.shift,
        out_mult=weights.out_mult,
        ltab=weights.ltab,
    )
