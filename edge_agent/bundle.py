"""The model bundle: what the agent runs (quantized layers, FP model, extras) and its keys.

:class:`Bundle` holds the architecture, the quantized models per bit-width, the FP
parameters, ``meta`` and ``extras`` (arrays: QCore, rounding residuals, flipping network);
the keys below name the entries that several packages share. The file format, validation
and atomic I/O are in :mod:`edge_agent.bundle_io`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernels.digest import sha256
from kernels.plan.packing import pack_rows, row_bytes

_DTYPES = {"uint8", "int8", "int16", "int32", "int64", "float32", "float64", "bool"}
WEIGHTED_OPS = ("conv1d", "conv2d", "linear")


class BundleError(ValueError):
    """A bundle file or object is unreadable, corrupt, of the wrong version or invalid."""


@dataclass
class LayerQuant:
    """Integer parameters of one weighted layer (see docs/quantization.md)."""

    bits: int
    k: int  # codes per output row
    packed: np.ndarray  # (out, row_bytes) uint8
    w_scale: np.ndarray  # (out,) float32
    bias_q: np.ndarray  # (out,) int32
    in_scale: float
    in_zp: int
    out_scale: float | None  # None for the last layer
    out_zp: int | None
    m0: np.ndarray | None  # (out,) int32, hidden layers
    shift: np.ndarray | None  # (out,) int32, hidden layers
    out_mult: np.ndarray | None  # (out,) float32, last layer

    @property
    def out_features(self) -> int:
        """Number of output channels."""
        return int(self.packed.shape[0])


@dataclass
class QuantModel:
    """A model quantized at one weight bit-width."""

    weight_bits: int
    act_bits: int
    input_scale: float
    input_zp: int
    layers: list[LayerQuant]

    def weight_bytes(self) -> int:
        """Bytes of integer weights as stored in the bundle (one bit stream per layer)."""
        return int(
            sum(row_bytes(layer.out_features * layer.k, layer.bits) for layer in self.layers)
        )


@dataclass
class Bundle:
    """Everything needed to run, recalibrate and describe one model."""

    arch: dict[str, Any]  # name, input_shape, num_classes, layers (op dicts)
    fp_weights: list[tuple[np.ndarray, np.ndarray]]  # (W, b) per weighted layer, BN folded
    label_names: list[str]
    norm_mean: np.ndarray  # (C,) float32
    norm_std: np.ndarray  # (C,) float32
    quant: dict[int, QuantModel]
    default_bits: int
    meta: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, channels first."""
        return tuple(int(v) for v in self.arch["input_shape"])

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return int(self.arch["num_classes"])

    @property
    def model_version(self) -> str:
        """Short content hash of the integer weights: changes with every accepted update."""
        h = sha256()
        if self.meta.get(INPUT_CORRECTED):  # the statistics rung moved the normalization
            h.update(self.norm_mean.astype(np.float32).tobytes())
            h.update(self.norm_std.astype(np.float32).tobytes())
        for bits in sorted(self.quant):
            for layer in self.quant[bits].layers:
                h.update(layer.packed.tobytes())
                h.update(layer.bias_q.tobytes())
                if self.meta.get(INPUT_CORRECTED) and layer.m0 is not None:
                    h.update(np.asarray(layer.m0, np.int32).tobytes())  # the rung's scale
                    h.update(np.asarray(layer.shift, np.int32).tobytes())
        return h.hexdigest()[:12]

    def weighted_ops(self) -> list[dict[str, Any]]:
        """The conv/linear entries of the layer list, in order."""
        return [op for op in self.arch["layers"] if op["op"] in WEIGHTED_OPS]

    def with_codes(self, bits: int, codes: Sequence[np.ndarray]) -> Bundle:
        """A new bundle whose ``bits`` model holds the signed integer weights ``codes`` (one
        (O, K) array per weighted layer, torch column order), packed; the rest is shared."""
        quant = self.quant[bits]
        layers = [
            dataclasses.replace(lq, packed=pack_rows(q, bits))
            for lq, q in zip(quant.layers, codes, strict=True)
        ]
        return dataclasses.replace(
            self, quant={**self.quant, bits: dataclasses.replace(quant, layers=layers)}
        )


# ---------------------------------------------------------------- keys

SERIES_NORM = "series_norm"  # meta: the model takes every sample z-normalized per series
RESIDUAL_SCALE = 254  # residuals in [-0.5, 0.5] are stored as int8 in units of 1/254


def residual_key(bits: int, layer: int) -> str:
    """Extras key of one layer's rounding residuals at one bit-width."""
    return f"flip.residual.{bits}.{layer}"


INPUT_CORRECTED = "input_corrected"  # meta: the normalization is the statistics rung's
STATS_INPUT = "stats/input"  # (4, C) float64: norm mean, norm std, input mean, input std
DRIFT_FEATURE_MEAN = "drift/feature_mean"  # (classes, features) float32
DRIFT_FEATURE_STD = "drift/feature_std"  # (classes, features) float32
DRIFT_SCORE_LEVEL = "drift/score_level"  # (2,): mean and std of the score on training data
# (3,): bit-width, mean and std of the deployed model's predictive entropy on training data
DRIFT_OUTPUT_LEVEL = "drift/output_level"


def acc_mean_key(bits: int, layer: int) -> str:
    """Extras key of the training mean int32 accumulator (O,) float64 of one hidden
    layer at one bit-width (the statistics rung's target)."""
    return f"stats/{bits}/acc_mean/{layer}"


def acc_std_key(bits: int, layer: int) -> str:
    """Extras key of the training standard deviation (O,) float64 of one hidden layer's
    int32 accumulators at one bit-width (the statistics rung's scale target)."""
    return f"stats/{bits}/acc_std/{layer}"


# ---------------------------------------------------------------- serialization


def array_record(a: np.ndarray) -> dict[str, Any]:
    """A msgpack-ready record of an array: dtype name, shape, little-endian bytes."""
    a = np.ascontiguousarray(a)
    if a.dtype.name not in _DTYPES:
        raise BundleError(f"array dtype {a.dtype} cannot be stored in a bundle")
    return {
        "dtype": a.dtype.name,
        "shape": list(a.shape),
        "data": a.astype(a.dtype.newbyteorder("<")).tobytes(),
    }


def array_from_record(obj: Any, where: str) -> np.ndarray:
    """The array of an :func:`array_record`; raise BundleError naming ``where`` if malformed."""
    if not isinstance(obj, dict) or set(obj) != {"dtype", "shape", "data"}:
        raise BundleError(f"{where}: expected an array record")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if dtype not in _DTYPES:
        raise BundleError(f"{where}: dtype {dtype!r} not allowed")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise BundleError(f"{where}: bad shape {shape!r}")
    dt = np.dtype(dtype).newbyteorder("<")
    if (
        not isinstance(data, bytes)
        or len(data) != int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    ):
        raise BundleError(f"{where}: data length does not match shape {shape} and dtype {dtype}")
    return np.frombuffer(data, dtype=dt).astype(np.dtype(dtype)).reshape(shape)
