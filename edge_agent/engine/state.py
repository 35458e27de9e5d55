"""The engine's per-bit-width state: one frozen object per model, replaced as a whole
(:class:`edge_agent.engine.engine.Engine` swaps the reference), and the kernel parameters
it is built from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.bundle import LayerQuant, QuantModel
from kernels.plan import abi
from kernels.plan.model import LayerParams, Model, Weights
from kernels.plan.packing import qrange, row_bytes, unpack_rows


@dataclass(frozen=True)
class EngineState:
    """What one inference call needs; replaced as a whole, never modified."""

    bits: int
    model: Model
    weights: Weights
    version: str
    codes: tuple[np.ndarray, ...]  # per weighted layer: read-only (O, K) int8, torch order
    params: tuple[Any, ...] = field(init=False)  # the model's arrays and scalars (abi order)
    descriptor: np.ndarray = field(init=False)  # run_program's model argument: theirs

    def __post_init__(self) -> None:
        m, w = self.model, self.weights
        params = (
            m.ops,
            m.tens,
            w.ltab,
            w.panel,
            w.bias,
            w.m0,
            w.shift,
            w.out_mult,
            m.mean,
            m.std,
            m.in_scale,
            m.in_zp,
            m.act_hi,
            m.sizes,
        )
        # checked (compiled kernels would misread other types); this state keeps the
        # arrays the descriptor points to alive
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "descriptor", abi.descriptor(params))

    @property
    def args(self) -> tuple[np.ndarray]:
        """The model arguments of ``run_program`` (between the samples and the logits)."""
        return (self.descriptor,)


def layer_params(quant: QuantModel) -> list[LayerParams]:
    """Kernel parameters of a bundle's quantized model (weights unpacked transiently)."""
    return [_params(layer, quant.weight_bits) for layer in quant.layers]


def _params(layer: LayerQuant, bits: int) -> LayerParams:
    return LayerParams(
        q=unpack_rows(layer.packed, layer.k, layer.bits),
        bits=bits,
        bias_q=layer.bias_q,
        in_zp=layer.in_zp,
        out_zp=layer.out_zp,
        m0=layer.m0,
        shift=layer.shift,
        out_mult=layer.out_mult,
    )


def frozen_codes(q: np.ndarray) -> np.ndarray:
    """A private read-only int8 copy of signed codes (O, K)."""
    out = np.array(q, dtype=np.int8, order="C", copy=True)
    out.setflags(write=False)
    return out


WeightUpdate = Mapping[int, np.ndarray] | Sequence[np.ndarray | None]


def checked_codes(st: EngineState, update: WeightUpdate) -> dict[int, np.ndarray]:
    """The signed int8 codes of a weight update by layer, checked against ``st``'s
    model (layer, row length, bit range); packed uint8 rows are unpacked."""
    items: list[tuple[int, Any]] = (
        list(update.items()) if isinstance(update, Mapping) else list(enumerate(update))
    )
    codes: dict[int, np.ndarray] = {}
    for i, arr in items:
        if arr is None:
            continue
        if not 0 <= i < len(st.model.slots):
            raise IndexError(f"no weighted layer {i}")
        a = np.asarray(arr)
        k = st.model.slots[i].k
        if a.dtype == np.uint8:
            if a.ndim != 2 or a.shape[1] != row_bytes(k, st.bits):
                raise ValueError(f"layer {i}: packed rows {a.shape} do not hold {k} codes")
            a = unpack_rows(a, k, st.bits)
        elif not np.issubdtype(a.dtype, np.signedinteger):
            raise ValueError(f"layer {i}: weights must be signed integers or packed uint8")
        lo, hi = qrange(st.bits)
        if a.size and (int(a.min()) < lo or int(a.max()) > hi):
            raise ValueError(f"layer {i}: weights outside the {st.bits}-bit range")
        codes[i] = np.ascontiguousarray(a, dtype=np.int8) if a.dtype != np.int8 else a
    return codes
