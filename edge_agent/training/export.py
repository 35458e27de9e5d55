"""Export trained torch models to a :class:`~edge_agent.bundle.Bundle` (integers, packed)."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import numpy as np
import torch

from edge_agent import __version__
from edge_agent.bundle import RESIDUAL_SCALE, Bundle, LayerQuant, QuantModel, residual_key
from edge_agent.data.datasets import Dataset
from edge_agent.training.arch import FPNet, Spec, exported_spec
from edge_agent.training.qnet import QuantNet
from kernels.plan.fixedpoint import quantize_multipliers
from kernels.plan.packing import pack_rows

_INT32 = np.iinfo(np.int32)


def _input_divisors(spec: Spec) -> list[int]:
    """For each weighted op, the GAP divisor T of its input (1 when no GAP precedes it)."""
    shape = list(spec["input_shape"])
    out: list[int] = []
    divisor = 1
    for op in spec["layers"]:
        kind = op["op"]
        if kind in ("conv1d", "conv2d", "linear"):
            out.append(divisor)
            divisor = 1
            shape = _conv_out_shape(op, shape)
        elif kind == "gap":
            divisor = int(np.prod(shape[1:]))
            shape = shape[:1]
        elif kind == "flatten":
            shape = [int(np.prod(shape))]
        else:
            k = np.atleast_1d(op["kernel"])
            s = np.atleast_1d(op["stride"])
            shape = [
                shape[0],
                *[(n - kk) // ss + 1 for n, kk, ss in zip(shape[1:], k, s, strict=True)],
            ]
    return out


def _conv_out_shape(op: dict[str, Any], shape: list[int]) -> list[int]:
    if op["op"] == "linear":
        return [op["out_features"]]
    k = np.atleast_1d(op["kernel"])
    s = np.atleast_1d(op["stride"])
    p = np.atleast_1d(op["padding"])
    spatial = [
        (n + 2 * pp - kk) // ss + 1 for n, kk, ss, pp in zip(shape[1:], k, s, p, strict=True)
    ]
    return [op["out_ch"], *spatial]


@torch.no_grad()
def quant_model(qnet: QuantNet) -> QuantModel:
    """Integer parameters of a trained fake-quant model, following docs/quantization.md."""
    divisors = _input_divisors(qnet.spec)
    in_scale, in_zp = qnet.input_q.grid()
    layers: list[LayerQuant] = []
    qlayers = qnet.quant_layers()
    act_q = qnet.act_quantizers()
    n = len(qlayers)
    for i, ql in enumerate(qlayers):
        w = ql.layer.weight.detach().float()
        s_w = ql.wq.effective_scale().detach().double().numpy()
        q = ql.wq.integers(w).reshape(w.shape[0], -1).numpy().astype(np.int8)
        s_in_eff = in_scale / divisors[i]
        bias_scale = (
            (ql.wq.effective_scale() * torch.tensor(s_in_eff, dtype=torch.float32)).double().numpy()
        )
        bias_q = np.clip(
            np.rint(cast(torch.Tensor, ql.layer.bias).detach().double().numpy() / bias_scale),
            _INT32.min,
            _INT32.max,
        )
        common = {
            "bits": qnet.weight_bits,
            "k": q.shape[1],
            "packed": pack_rows(q, qnet.weight_bits),
            "w_scale": s_w.astype(np.float32),
            "bias_q": bias_q.astype(np.int32),
            "in_scale": in_scale,
            "in_zp": in_zp,
        }
        if i < n - 1:
            out_scale, out_zp = act_q[i].grid()
            m0, shift = quantize_multipliers(s_w * s_in_eff / out_scale)
            layers.append(
                LayerQuant(
                    **common, out_scale=out_scale, out_zp=out_zp, m0=m0, shift=shift, out_mult=None
                )
            )
            in_scale, in_zp = out_scale, out_zp
        else:
            layers.append(
                LayerQuant(
                    **common,
                    out_scale=None,
                    out_zp=None,
                    m0=None,
                    shift=None,
                    out_mult=(s_w * s_in_eff).astype(np.float32),
                )
            )
    return QuantModel(qnet.weight_bits, qnet.act_bits, layers[0].in_scale, layers[0].in_zp, layers)


@torch.no_grad()
def rounding_residuals(qnet: QuantNet) -> dict[str, np.ndarray]:
    """``W/s - round(W/s)`` of the QAT latent weights, int8 in 1/254 steps, per layer.

    The device keeps these instead of float weights: they tell the bit flipper which
    integer weights sit near a rounding boundary.
    """
    out = {}
    for i, ql in enumerate(qnet.quant_layers()):
        w = ql.layer.weight.detach().float()
        s = ql.wq.effective_scale().reshape(-1, *([1] * (w.ndim - 1)))
        r = (w / s - ql.wq.integers(w)).clamp(-0.5, 0.5).reshape(w.shape[0], -1)
        out[residual_key(qnet.weight_bits, i)] = (
            torch.round(r * RESIDUAL_SCALE).numpy().astype(np.int8)
        )
    return out


def build_bundle(
    ds: Dataset,
    spec: Spec,
    fp: FPNet,
    qnets: dict[int, QuantNet],
    meta: dict[str, Any],
    extras: dict[str, np.ndarray] | None = None,
) -> Bundle:
    """Assemble a bundle from a folded FP model and its QAT models (first bit-width default).

    Rounding residuals of every QAT model are added to the extras, beside ``extras``.
    """
    mean, std = ds.normalization()
    fp_weights = [
        (
            m.weight.detach().numpy().astype(np.float32),
            cast(torch.Tensor, m.bias).detach().numpy().astype(np.float32),
        )
        for m in fp.weighted_layers()
    ]
    full_meta = {
        "dataset": ds.name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "edge_agent_version": __version__,
        "torch_version": torch.__version__,
        **meta,
    }
    return Bundle(
        arch=exported_spec(spec),
        fp_weights=fp_weights,
        label_names=list(ds.label_names),
        norm_mean=mean,
        norm_std=std,
        quant={b: quant_model(q) for b, q in qnets.items()},
        default_bits=next(iter(qnets)),
        meta=full_meta,
        extras={
            **{k: v for q in qnets.values() for k, v in rounding_residuals(q).items()},
            **(extras or {}),
        },
    )
