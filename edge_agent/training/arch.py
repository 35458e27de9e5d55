"""Architecture specs (plain dicts, stored in bundles) and the torch FP network built from one.

A spec is ``{"name", "input_shape", "num_classes", "layers": [op, ...]}`` with the ops of
docs/quantization.md. During FP training conv layers carry ``"bn": true``; BatchNorm is
folded into the conv at export and the exported spec has no ``bn`` keys.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

Spec = dict[str, Any]
WeightedLayer = nn.Conv1d | nn.Conv2d | nn.Linear


def sensor_cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 32) -> Spec:
    """1D CNN for (C, T) sensor windows: 3 conv blocks, max pooling, GAP, linear."""
    c, _ = input_shape
    w1, w2, w3 = width, 2 * width, 2 * width

    def conv(cin: int, cout: int, k: int) -> dict[str, Any]:
        return {
            "op": "conv1d",
            "in_ch": cin,
            "out_ch": cout,
            "kernel": k,
            "stride": 1,
            "padding": k // 2,
            "relu": True,
            "bn": True,
        }

    pool = {"op": "maxpool1d", "kernel": 2, "stride": 2}
    layers: list[dict[str, Any]] = [
        conv(c, w1, 5),
        dict(pool),
        conv(w1, w2, 5),
        dict(pool),
        conv(w2, w3, 3),
        {"op": "gap"},
        {"op": "linear", "in_features": w3, "out_features": num_classes, "relu": False},
    ]
    return {
        "name": "sensor_cnn",
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "layers": layers,
    }


def image_cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> Spec:
    """Small 2D CNN for (C, H, W) images such as 8x8 digits."""
    c = input_shape[0]
    w1, w2 = width, 2 * width
    conv = {
        "op": "conv2d",
        "kernel": [3, 3],
        "stride": [1, 1],
        "padding": [1, 1],
        "relu": True,
        "bn": True,
    }
    layers: list[dict[str, Any]] = [
        {**conv, "in_ch": c, "out_ch": w1},
        {**conv, "in_ch": w1, "out_ch": w2},
        {"op": "maxpool2d", "kernel": [2, 2], "stride": [2, 2]},
        {**conv, "in_ch": w2, "out_ch": w2},
        {"op": "gap"},
        {"op": "linear", "in_features": w2, "out_features": num_classes, "relu": False},
    ]
    return {
        "name": "image_cnn",
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "layers": layers,
    }


def default_spec(input_shape: tuple[int, ...], num_classes: int, width: int | None = None) -> Spec:
    """The default architecture for an input shape: (C, T) -> sensor CNN, (C, H, W) -> image
    CNN; ``width`` (channels of the first conv, doubled further on) defaults to the builder's."""
    if width is not None and width < 1:
        raise ValueError(f"width must be positive, got {width}")
    if len(input_shape) == 2:
        return sensor_cnn(input_shape, num_classes, **({"width": width} if width else {}))
    if len(input_shape) == 3:
        return image_cnn(input_shape, num_classes, **({"width": width} if width else {}))
    raise ValueError(f"no default architecture for input shape {input_shape}")


def exported_spec(spec: Spec) -> Spec:
    """The spec as stored in a bundle: BatchNorm folded away."""
    out = copy.deepcopy(spec)
    for op in out["layers"]:
        op.pop("bn", None)
    return out


def _pool(op: dict[str, Any]) -> nn.Module:
    kind = op["op"]
    if kind == "maxpool1d":
        return nn.MaxPool1d(op["kernel"], op["stride"])
    if kind == "maxpool2d":
        return nn.MaxPool2d(tuple(op["kernel"]), tuple(op["stride"]))
    if kind == "avgpool1d":
        return nn.AvgPool1d(op["kernel"], op["stride"])
    return nn.AvgPool2d(tuple(op["kernel"]), tuple(op["stride"]))


def weighted_module(op: dict[str, Any], bias: bool) -> nn.Module:
    """The conv/linear torch module of one weighted op."""
    if op["op"] == "conv1d":
        return nn.Conv1d(
            op["in_ch"], op["out_ch"], op["kernel"], op["stride"], op["padding"], bias=bias
        )
    if op["op"] == "conv2d":
        return nn.Conv2d(
            op["in_ch"],
            op["out_ch"],
            tuple(op["kernel"]),
            tuple(op["stride"]),
            tuple(op["padding"]),
            bias=bias,
        )
    return nn.Linear(op["in_features"], op["out_features"], bias=bias)


class GlobalAvgPool(nn.Module):
    """Mean over every spatial axis: (N, C, ...) -> (N, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=2)


class FPNet(nn.Module):
    """Full-precision network of a spec; with ``fold=True`` conv layers have a bias and no BN."""

    def __init__(self, spec: Spec, folded: bool = False) -> None:
        super().__init__()
        self.spec = spec
        blocks: list[nn.Module] = []
        for op in spec["layers"]:
            kind = op["op"]
            if kind in ("conv1d", "conv2d", "linear"):
                use_bn = bool(op.get("bn")) and not folded
                parts: list[nn.Module] = [weighted_module(op, bias=not use_bn)]
                if use_bn:
                    parts.append(
                        nn.BatchNorm1d(op["out_ch"])
                        if kind == "conv1d"
                        else nn.BatchNorm2d(op["out_ch"])
                    )
                if op.get("relu"):
                    parts.append(nn.ReLU())
                blocks.append(nn.Sequential(*parts))
            elif kind == "gap":
                blocks.append(GlobalAvgPool())
            elif kind == "flatten":
                blocks.append(nn.Flatten())
            else:
                blocks.append(_pool(op))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def weighted_layers(self) -> list[WeightedLayer]:
        """The conv/linear modules in order."""
        return [
            cast(WeightedLayer, m)
            for b in self.blocks
            if isinstance(b, nn.Sequential)
            for m in b
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
        ]


def fold_batchnorm(net: FPNet) -> FPNet:
    """A copy of ``net`` with every BatchNorm folded into its conv (eval-mode statistics)."""
    folded = FPNet(net.spec, folded=True)
    with torch.no_grad():
        for src, dst in zip(net.blocks, folded.blocks, strict=True):
            if not isinstance(src, nn.Sequential):
                continue
            layer = cast(WeightedLayer, src[0])
            target = cast(WeightedLayer, cast(nn.Sequential, dst)[0])
            bn = next((m for m in src if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))), None)
            w = layer.weight.detach().clone()
            b = layer.bias.detach().clone() if layer.bias is not None else torch.zeros(w.shape[0])
            if bn is not None:
                assert bn.running_var is not None and bn.running_mean is not None
                gamma = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                w = w * gamma.reshape(-1, *([1] * (w.ndim - 1)))
                b = (b - bn.running_mean) * gamma + bn.bias
            target.weight.copy_(w)
            cast(torch.Tensor, target.bias).copy_(b)
    return folded.eval()
