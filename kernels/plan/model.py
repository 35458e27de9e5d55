"""The data a compiled model is made of: its tables and slots, layer parameters and packed
weights (built by :mod:`kernels.plan.program`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LayerParams:
    """Integer parameters of one weighted layer; ``q`` (O, K) int8 in torch column order."""

    q: np.ndarray
    bits: int
    bias_q: np.ndarray  # (O,) int32
    in_zp: int
    out_zp: int | None = None  # hidden layers
    m0: np.ndarray | None = None  # (O,) int32, hidden layers
    shift: np.ndarray | None = None  # (O,) int32, hidden layers
    out_mult: np.ndarray | None = None  # (O,) float32, last layer


@dataclass(frozen=True)
class _Slot:
    """Where a weighted layer sits and how its columns are reordered for the kernels."""

    kind: str
    out_ch: int
    k: int
    reorder: tuple[str, int, tuple[int, ...]]  # ("none"|"conv"|"flatten", channels, dims)
    centred: bool  # input is the int32 output of gap
    relu: bool


@dataclass(frozen=True)
class Weights:
    """Immutable flat weight arrays of one model (replace, never modify)."""

    panel: np.ndarray  # uint8, all layers' panels
    bias: np.ndarray  # int32, bias_q - in_zp * rowsum(q) (bias_q after gap)
    m0: np.ndarray  # int32
    shift: np.ndarray  # int32
    out_mult: np.ndarray  # float32
    ltab: np.ndarray  # int64 (layers, tables.LAYER_FIELDS)


@dataclass(frozen=True)
class Model:
    """Structure of a compiled model; pair it with a :class:`Weights` to run."""

    ops: np.ndarray  # int64 (ops, tables.OP_FIELDS)
    tens: np.ndarray  # int64 (tensors, tables.T_FIELDS) activation layouts
    sizes: np.ndarray  # int64 scratch sizes (tables.S_*)
    slots: tuple[_Slot, ...]
    input_shape: tuple[int, ...]
    num_outputs: int
    mean: np.ndarray  # float32 (C,)
    std: np.ndarray  # float32 (C,)
    in_scale: np.float32
    in_zp: int
    act_hi: int
    act_offset: int  # subtracted from activation codes by the dot product (kernels.plan.targets)
