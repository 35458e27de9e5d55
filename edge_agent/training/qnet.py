"""Fake-quantized network that follows the integer engine's arithmetic (docs/quantization.md).

Built from a BN-folded :class:`FPNet`: every conv/linear gets an LSQ+ weight quantizer and
a quantized bias; an activation quantizer sits at the model input and after every hidden
weighted layer (after its ReLU), i.e. on the grid the engine requantizes to.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.training.arch import FPNet, GlobalAvgPool, Spec, WeightedLayer
from edge_agent.training.quantizers import ActQuantizer, WeightQuantizer, round_ste


class QuantLayer(nn.Module):
    """A conv/linear layer with fake-quantized weights and bias."""

    def __init__(self, layer: WeightedLayer, op: dict, bits: int) -> None:
        super().__init__()
        self.op = op
        self.layer: WeightedLayer = layer
        self.wq = WeightQuantizer(layer.weight.shape[0], bits)
        self.wq.init_from(layer.weight.detach())

    def forward(self, x: torch.Tensor, in_scale: torch.Tensor) -> torch.Tensor:
        w = self.wq(self.layer.weight)
        bias_scale = self.wq.effective_scale() * in_scale
        b = round_ste(cast(torch.Tensor, self.layer.bias) / bias_scale) * bias_scale
        kind = self.op["op"]
        if kind == "conv1d":
            return F.conv1d(x, w, b, self.op["stride"], self.op["padding"])
        if kind == "conv2d":
            return F.conv2d(x, w, b, tuple(self.op["stride"]), tuple(self.op["padding"]))
        return F.linear(x, w, b)


class QuantNet(nn.Module):
    """LSQ+ fake-quant model on the engine's integer grid."""

    def __init__(self, fp: FPNet, weight_bits: int, act_bits: int) -> None:
        super().__init__()
        self.spec: Spec = fp.spec
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.input_q = ActQuantizer(act_bits)
        qlayers, aq = [], []
        fp_layers = fp.weighted_layers()
        ops = [op for op in self.spec["layers"] if op["op"] in ("conv1d", "conv2d", "linear")]
        for i, (layer, op) in enumerate(zip(fp_layers, ops, strict=True)):
            clone = type(layer)(*_ctor_args(layer))
            clone.load_state_dict(layer.state_dict())
            qlayers.append(QuantLayer(clone, op, weight_bits))
            if i < len(ops) - 1:
                aq.append(ActQuantizer(act_bits))
        self.qlayers = nn.ModuleList(qlayers)
        self.act_q = nn.ModuleList(aq)
        self.gap = GlobalAvgPool()

    def quant_layers(self) -> list[QuantLayer]:
        """The quantized conv/linear layers in order."""
        return [cast(QuantLayer, m) for m in self.qlayers]

    def act_quantizers(self) -> list[ActQuantizer]:
        """Activation quantizers after each hidden weighted layer, in order."""
        return [cast(ActQuantizer, m) for m in self.act_q]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits; with ``return_features`` also the output of every hidden weighted layer."""
        x = self.input_q(x)
        scale = self.input_q.effective_scale()
        li = 0
        feats: list[torch.Tensor] = []
        for op in self.spec["layers"]:
            kind = op["op"]
            if kind in ("conv1d", "conv2d", "linear"):
                x = self.qlayers[li](x, scale)
                if li < len(self.act_q):
                    if op.get("relu"):
                        x = F.relu(x)
                    x = self.act_q[li](x)
                    feats.append(x)
                    scale = self.act_quantizers()[li].effective_scale()
                li += 1
            elif kind == "gap":
                scale = scale / x[0, 0].numel()
                x = self.gap(x)
            elif kind == "flatten":
                x = x.flatten(1)
            elif kind.startswith("maxpool"):
                x = (F.max_pool1d if kind == "maxpool1d" else F.max_pool2d)(
                    x, op["kernel"], op["stride"]
                )
            else:  # avgpool: engine rounds the average back onto the same grid
                x = (F.avg_pool1d if kind == "avgpool1d" else F.avg_pool2d)(
                    x, op["kernel"], op["stride"]
                )
                x = (self.act_q[li - 1] if li > 0 else self.input_q)(x)
        return (x, feats) if return_features else x

    def quantizer_params(self) -> list[nn.Parameter]:
        """Scales and offsets of every quantizer."""
        return [p for n, p in self.named_parameters() if n.endswith(("scale", "offset"))]

    def weight_params(self) -> list[nn.Parameter]:
        """Conv/linear weights and biases."""
        return [p for n, p in self.named_parameters() if not n.endswith(("scale", "offset"))]


def _ctor_args(layer: nn.Module) -> tuple:
    if isinstance(layer, nn.Linear):
        return (layer.in_features, layer.out_features)
    assert isinstance(layer, (nn.Conv1d, nn.Conv2d))
    return (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding)


Ranges = list[tuple[float, float]]


def _percentiles(t: torch.Tensor) -> tuple[float, float]:
    flat = t.flatten().float()
    if flat.numel() > 200_000:
        flat = flat[
            torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:200_000]
        ]
    return float(torch.quantile(flat, 0.001)), float(torch.quantile(flat, 0.999))


@torch.no_grad()
def activation_ranges(fp: FPNet, x: torch.Tensor) -> Ranges:
    """The FP model's 0.1 / 99.9 percentiles on ``x``: of the input, then of every
    quantized block's output (one FP pass; the same for every weight bit-width)."""
    out = [_percentiles(x)]
    h = x
    for block in fp.blocks:
        h = block(h)
        if isinstance(block, nn.Sequential):
            out.append(_percentiles(h))
    return out


def set_activation_ranges(qnet: QuantNet, ranges: Ranges) -> None:
    """Initialize the activation quantizers from :func:`activation_ranges` (LSQ+ min/max
    initialization)."""
    qnet.input_q.init_range(*ranges[0])
    for q, r in zip(qnet.act_quantizers(), ranges[1:], strict=False):
        q.init_range(*r)


@torch.no_grad()
def calibrate_activation_ranges(qnet: QuantNet, fp: FPNet, x: torch.Tensor) -> None:
    """Initialize every activation quantizer from the FP model's ranges on ``x``."""
    set_activation_ranges(qnet, activation_ranges(fp, x))
