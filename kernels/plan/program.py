"""Turn a layer list (docs/quantization.md) and integer parameters into a runnable model.

:func:`build_model` checks shapes, lays the weights out as panels and writes the op
table the compiled interpreter (:mod:`kernels.codegen.runner`) walks, with a table of activation
layouts: each tensor is padded for the convolution that reads it, so its producer (a
GEMM epilogue, a pool, the input quantization) writes straight into the padded buffer.
Max pooling with ``kernel == stride`` after a convolution is fused into its epilogue;
``flatten`` is no op at all (a channels-last sample is already flat). The weights live in a
frozen :class:`Weights` object (:mod:`kernels.plan.weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernels.plan import layout, tables
from kernels.plan.model import LayerParams, Model, Weights, _Slot
from kernels.plan.packing import check_bits
from kernels.plan.weights import pack_weights

_SLACK = 64  # bytes past every activation buffer: the micro-kernel reads whole chunks
_CHUNK = 16  # samples run through the layers together (rows of one GEMM per layer) ...
_CHUNK_BYTES = 1 << 20  # ... unless their scratch buffers would exceed this


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def _conv_geometry(op: dict[str, Any], h: int, w: int) -> tuple[int, ...]:
    """(kh, kw, sh, sw, ph, pw, oh, ow) of a conv or pooling op on an (h, w) input."""
    if op["op"] in ("conv1d", "maxpool1d", "avgpool1d"):
        if h != 1:
            raise ValueError(f"{op['op']} needs a 1-D input")
        kh, kw = 1, int(op["kernel"])
        sh, sw = 1, int(op.get("stride") or (1 if op["op"] == "conv1d" else kw))
        ph, pw = 0, int(op.get("padding", 0))
    else:
        default = 1 if op["op"] == "conv2d" else op["kernel"]
        (kh, kw), (sh, sw) = _pair(op["kernel"]), _pair(op.get("stride") or default)
        ph, pw = _pair(op.get("padding", 0))
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1 or min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{op['op']} does not fit its {h}x{w} input")
    return kh, kw, sh, sw, ph, pw, oh, ow


@dataclass
class _Tensor:
    """An activation tensor of the plan; its consumer sets the padding and fill code."""

    h: int
    w: int
    c: int
    ph: int = 0
    pw: int = 0
    w_mult: int = 1  # padded width rounded up to a multiple of this (direct conv stride)
    fill: int = 0

    def row(self) -> list[int]:
        wp = -(-(self.w + 2 * self.pw) // self.w_mult) * self.w_mult
        return [
            self.h,
            self.w,
            self.c,
            self.ph,
            self.pw,
            wp,
            (self.h + 2 * self.ph) * wp * self.c,
            self.fill,
        ]


def build_model(
    layers: Sequence[dict[str, Any]],
    input_shape: Sequence[int],
    params: Sequence[LayerParams],
    mean: np.ndarray,
    std: np.ndarray,
    in_scale: float,
    in_zp: int,
    act_bits: int,
    *,
    act_offset: int,
) -> tuple[Model, Weights]:
    """Check the layer list against ``input_shape`` and the parameters; plan and pack.

    ``act_offset`` is that of the instruction set the kernels run on
    (:func:`kernels.plan.targets.act_offset`): it is folded into the biases.
    """
    shape = tuple(int(v) for v in input_shape)
    if not 1 <= len(shape) <= 3:
        raise ValueError(f"input shape {shape} must be (C,), (C, T) or (C, H, W)")
    c = shape[0]
    h, w = (1, 1) if len(shape) == 1 else ((1, shape[1]) if len(shape) == 2 else shape[1:])
    zp = int(in_zp)  # zero point of the current activation grid
    tensors = [_Tensor(h, w, c)]
    ops: list[list[int]] = []
    slots: list[_Slot] = []
    col = vec = lin = 0
    centred = False
    flat_from: tuple[int, int] | None = None
    n_weighted = sum(op["op"] in ("conv1d", "conv2d", "linear") for op in layers)
    if len(params) != n_weighted:
        raise ValueError(f"{len(params)} parameter sets for {n_weighted} weighted layers")
    for op in layers:
        kind = op["op"]
        reorder: tuple[str, int, tuple[int, ...]]
        row = [0] * tables.OP_FIELDS
        row[tables.F_IN] = len(tensors) - 1
        src = tensors[-1]
        if (centred or flat_from) and kind != "linear":
            raise ValueError(f"only a linear layer may follow gap or flatten, not {kind}")
        if kind in ("conv1d", "conv2d", "linear"):
            p = params[len(slots)]
            last = len(slots) == n_weighted - 1
            if kind == "linear":
                k_in = c if centred else h * w * c
                if int(op["in_features"]) != k_in:
                    raise ValueError(f"linear expects {op['in_features']} inputs, gets {k_in}")
                if not centred and h * w > 1 and flat_from is None:
                    raise ValueError("linear on a spatial input needs flatten or gap first")
                out = int(op["out_features"])
                reorder = (
                    ("flatten", flat_from[0], (flat_from[1],))
                    if (flat_from and flat_from[1] > 1)
                    else ("none", 0, ())
                )
                row[tables.F_OP] = tables.OP_LINEAR_I32 if centred else tables.OP_LINEAR
                lin = max(lin, k_in) if centred else lin
                oh = ow = 1
            else:
                if int(op["in_ch"]) != c:
                    raise ValueError(f"{kind} expects {op['in_ch']} channels, gets {c}")
                kh, kw, sh, sw, ph, pw, oh, ow = _conv_geometry(op, h, w)
                out = int(op["out_ch"])
                spatial = (kw,) if kind == "conv1d" else (kh, kw)
                reorder = ("conv", c, spatial)
                k_in = kh * kw * c
                row[tables.F_KH : tables.F_SW + 1] = [kh, kw, sh, sw]
                src.ph, src.pw, src.fill = ph, pw, int(p.in_zp)
                if kind == "conv1d":  # windows are contiguous runs of the padded signal
                    row[tables.F_OP] = tables.OP_CONV_DIRECT
                    src.w_mult = sw
                else:
                    row[tables.F_OP] = tables.OP_CONV_IM2COL
                    col = max(col, oh * ow * layout.padded_k(k_in, p.bits))
            _check_params(p, out, k_in, last, len(slots))
            row[tables.F_MAP + tables.M_PREMAX] = int(_never_wraps(p, k_in))
            if last and oh * ow != 1:
                raise ValueError("the last weighted layer must have one output position")
            row[tables.F_OH : tables.F_OW + 1] = [oh, ow]
            row[tables.F_PKH : tables.F_PKW + 1] = [1, 1]
            row[tables.F_LAYER] = len(slots)
            row[tables.F_LAST] = int(last)
            slots.append(_Slot(kind, out, k_in, reorder, centred, bool(op.get("relu", False))))
            h, w, c = oh, ow, out
            zp = p.out_zp if p.out_zp is not None else 0
            centred, flat_from = False, None
        elif kind in ("maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"):
            kh, kw, sh, sw, _, _, oh, ow = _conv_geometry({**op, "padding": 0}, h, w)
            h, w = oh, ow
            prev = ops[-1] if ops else None
            if (
                kind.startswith("max")
                and (kh, kw) == (sh, sw)
                and prev is not None
                and prev[tables.F_OP] in (tables.OP_CONV_DIRECT, tables.OP_CONV_IM2COL)
                and prev[tables.F_PKH] == prev[tables.F_PKW] == 1
            ):
                prev[tables.F_PKH : tables.F_PKW + 1] = [kh, kw]  # fused into the epilogue
                src.h, src.w = h, w
                continue
            row[tables.F_OP] = tables.OP_MAXPOOL if kind.startswith("max") else tables.OP_AVGPOOL
            row[tables.F_KH : tables.F_SW + 1] = [kh, kw, sh, sw]
            row[tables.F_OH : tables.F_OW + 1] = [oh, ow]
        elif kind == "gap":
            row[tables.F_OP] = tables.OP_GAP
            row[tables.F_ZP] = zp
            vec = max(vec, c)
            h = w = 1
            centred = True
        elif kind == "flatten":  # a channels-last sample is already flat: no op, no copy
            flat_from = (c, h * w)
            h, w, c = 1, 1, h * w * c
            continue
        else:
            raise ValueError(f"unknown layer op {kind!r}")
        row[tables.F_OUT] = len(tensors)
        tensors.append(_Tensor(h, w, c))
        ops.append(row)
    if not slots or ops[-1][tables.F_OP] not in tables.WEIGHTED_OPS:
        raise ValueError("the layer list must end with a weighted layer")
    tens = np.array([t.row() for t in tensors], dtype=np.int64)
    for row in ops:
        _set_map(row, tens)
    act = int(tens[:, tables.T_SS].max())
    per_sample = 2 * (act + _SLACK) + col + _SLACK
    chunk = max(1, min(_CHUNK, _CHUNK_BYTES // per_sample))
    sizes = _sizes(
        act + _SLACK, col + _SLACK, max(vec, 1), chunk, int(tens[:, tables.T_C].max()), lin
    )
    model = Model(
        ops=np.array(ops, dtype=np.int64),
        tens=tens,
        sizes=sizes,
        slots=tuple(slots),
        input_shape=shape,
        num_outputs=slots[-1].out_ch,
        mean=np.ascontiguousarray(mean, dtype=np.float32),
        std=np.ascontiguousarray(std, dtype=np.float32),
        in_scale=np.float32(in_scale),
        in_zp=int(in_zp),
        act_hi=(1 << int(act_bits)) - 1,
        act_offset=int(act_offset),
    )
    if model.mean.shape != (shape[0],) or model.std.shape != (shape[0],):
        raise ValueError(f"normalization statistics must have shape ({shape[0]},)")
    return model, pack_weights(model, params)


def _align(n: int) -> int:
    return -(-n // 64) * 64


def _sizes(act: int, col: int, vec: int, chunk: int, max_c: int, lin: int) -> np.ndarray:
    """The sizes vector (:mod:`kernels.plan.tables`): per-sample buffer sizes and the
    workspace layout of a whole chunk, every part 64-byte aligned.

    The kernel's parts: two activation buffers, the im2col columns, the int32 sums after
    ``gap``, an int32 row for average pooling (``max_c``), one quantized input row, the
    int32 tile sums and int64 scratch (the GEMM's row cursor and row targets, 8 +
    ``PANEL_ROWS``; the int32 linear layer's cursor, target and decoded weights, 16 +
    ``16 * lin``).
    """
    parts = [
        chunk * act,
        chunk * act,
        chunk * col,
        4 * chunk * vec,
        4 * max_c,
        act,
        4 * tables.I32_SCRATCH,
        8 * (16 + max(tables.PANEL_ROWS, 16 * lin)),
    ]
    offsets = [0]
    for n in parts:
        offsets.append(offsets[-1] + _align(n))
    sizes = np.zeros(tables.SIZES, np.int64)
    sizes[: tables.W_ACT_B] = [act, col, vec, chunk]
    sizes[tables.W_ACT_B :] = offsets[1:]
    sizes[tables.W_BYTES] += tables.ALIGN  # the kernel aligns the layout's start
    return sizes


def _never_wraps(p: LayerParams, k: int) -> bool:
    """Whether ``sum (x - act_offset) q + folded bias`` fits int32 for any codes.

    Then requantization is monotone in the sums, and a fused max pool may take the max
    of the int32 sums before requantizing (same result, fewer requantizations). Both the
    kernel sum and the zero-point fold are bounded by ``255 * k * 2^(b-1)``; swaps change
    only the codes, so the bound holds for every later weight swap too.
    """
    bound = 2 * 255 * k * (1 << (p.bits - 1)) + int(np.abs(p.bias_q.astype(np.int64)).max())
    return bound < 2**31


def _set_map(row: list[int], tens: np.ndarray) -> None:
    """Fill the epilogue map of a weighted op: GEMM rows -> cells of its output tensor."""
    if row[tables.F_OP] not in tables.WEIGHTED_OPS:
        return
    src, dst = tens[row[tables.F_IN]], tens[row[tables.F_OUT]]
    oh, ow = row[tables.F_OH], row[tables.F_OW]
    rows = oh * ow
    if row[tables.F_OP] == tables.OP_CONV_DIRECT:
        rows = int(src[tables.T_WP]) // row[tables.F_SW]
    m = tables.F_MAP
    row[m + tables.M_R] = rows
    row[m + tables.M_P] = oh * ow
    row[m + tables.M_OW] = ow
    row[m + tables.M_PKH] = row[tables.F_PKH]
    row[m + tables.M_PKW] = row[tables.F_PKW]
    row[m + tables.M_POH] = int(dst[tables.T_H])
    row[m + tables.M_POW] = int(dst[tables.T_W])
    row[m + tables.M_SS] = int(dst[tables.T_SS])
    row[m + tables.M_WP] = int(dst[tables.T_WP])
    row[m + tables.M_PH] = int(dst[tables.T_PH])
    row[m + tables.M_PW] = int(dst[tables.T_PW])


def _check_params(p: LayerParams, out: int, k: int, last: bool, index: int) -> None:
    check_bits(p.bits)
    where = f"weighted layer {index}"
    if p.q.shape != (out, k):
        raise ValueError(f"{where}: weights have shape {p.q.shape}, expected {(out, k)}")
    if p.bias_q.shape != (out,):
        raise ValueError(f"{where}: bias must have shape ({out},)")
    if last and (p.out_mult is None or p.out_mult.shape != (out,)):
        raise ValueError(f"{where}: the last layer needs out_mult of shape ({out},)")
    if not last and (
        p.m0 is None
        or p.shift is None
        or p.out_zp is None
        or p.m0.shape != (out,)
        or p.shift.shape != (out,)
    ):
        raise ValueError(f"{where}: a hidden layer needs out_zp, m0 and shift of shape ({out},)")
