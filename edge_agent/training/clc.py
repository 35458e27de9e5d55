"""Cascaded Layer Correction: align the quantized model's hidden layers with the FP model's.

The alignment of one layer is ``KL(softmax(pool(F_l) / tau) || softmax(pool(Q_l) / tau))``
over channels, where ``pool`` is the global average over spatial positions and ``F_l`` /
``Q_l`` are the outputs of hidden weighted layer ``l`` (after ReLU; on the activation grid
for Q). Two variants (docs/method.md section 8, "cascaded" is ours to define):

- ``independent``: ``Q_l`` comes from the quantized model's own forward pass, so errors of
  earlier layers are in it.
- ``cascaded``: quantized block ``l`` receives the FP output of block ``l - 1``, so each
  term measures only block ``l``'s own quantization error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edge_agent.training.arch import FPNet
from edge_agent.training.qnet import QuantNet

MODES = ("independent", "cascaded")
_WEIGHTED = ("conv1d", "conv2d", "linear")


def fp_forward(fp: FPNet, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and the outputs of every hidden weighted block of the FP model."""
    feats: list[torch.Tensor] = []
    n_hidden = len(fp.weighted_layers()) - 1
    for block in fp.blocks:
        x = block(x)
        if isinstance(block, nn.Sequential) and len(feats) < n_hidden:
            feats.append(x)
    return x, feats


def layer_alignment(f: torch.Tensor, q: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL between the channel softmaxes of globally pooled FP and quantized features."""
    pf = f.flatten(2).mean(dim=2) / temperature
    pq = q.flatten(2).mean(dim=2) / temperature
    return F.kl_div(
        F.log_softmax(pq, 1), F.log_softmax(pf, 1), reduction="batchmean", log_target=True
    )


def clc_loss(
    fp_feats: Sequence[torch.Tensor], q_feats: Sequence[torch.Tensor], temperature: float = 1.0
) -> torch.Tensor:
    """Independent per-layer alignment summed over the hidden layers."""
    if len(fp_feats) != len(q_feats):
        raise ValueError(f"{len(fp_feats)} FP features against {len(q_feats)} quantized ones")
    return torch.stack(
        [
            layer_alignment(f.detach(), q, temperature)
            for f, q in zip(fp_feats, q_feats, strict=True)
        ]
    ).sum()


def cascaded_clc_loss(
    fp_feats: Sequence[torch.Tensor],
    first_q_feat: torch.Tensor,
    run_block: Callable[[int, torch.Tensor], torch.Tensor],
    temperature: float = 1.0,
) -> torch.Tensor:
    """Cascaded alignment: layer 0 from the quantized pass, layer ``l`` from
    ``run_block(l, F_{l-1})`` (the quantized block fed the FP output of the block before)."""
    terms = [layer_alignment(fp_feats[0].detach(), first_q_feat, temperature)]
    for layer in range(1, len(fp_feats)):
        q = run_block(layer, fp_feats[layer - 1].detach())
        terms.append(layer_alignment(fp_feats[layer].detach(), q, temperature))
    return torch.stack(terms).sum()


def quant_block(qnet: QuantNet, layer: int, fp_input: torch.Tensor) -> torch.Tensor:
    """Hidden output of quantized layer ``layer`` (>= 1) given the FP output of layer
    ``layer - 1``: quantized onto that layer's activation grid, then the ops in between
    (pooling, GAP) and the quantized layer itself, as :meth:`QuantNet.forward` runs them."""
    ops = qnet.spec["layers"]
    weighted = [i for i, op in enumerate(ops) if op["op"] in _WEIGHTED]
    if not 1 <= layer < len(weighted) - 1:
        raise ValueError(f"layer {layer} is not a hidden layer after the first")
    prev_q = qnet.act_quantizers()[layer - 1]
    x = prev_q(fp_input)
    scale = prev_q.effective_scale()
    for op in ops[weighted[layer - 1] + 1 : weighted[layer]]:
        kind = op["op"]
        if kind == "gap":
            scale = scale / x[0, 0].numel()
            x = x.flatten(2).mean(dim=2)
        elif kind == "flatten":
            x = x.flatten(1)
        elif kind.startswith("maxpool"):
            pool = F.max_pool1d if kind == "maxpool1d" else F.max_pool2d
            x = pool(x, op["kernel"], op["stride"])
        else:
            avg = F.avg_pool1d if kind == "avgpool1d" else F.avg_pool2d
            x = prev_q(avg(x, op["kernel"], op["stride"]))
    x = qnet.qlayers[layer](x, scale)
    if ops[weighted[layer]].get("relu"):
        x = F.relu(x)
    return qnet.act_quantizers()[layer](x)


def correction_loss(
    mode: str,
    qnet: QuantNet,
    fp_feats: Sequence[torch.Tensor],
    q_feats: Sequence[torch.Tensor],
    temperature: float = 1.0,
) -> torch.Tensor:
    """The CLC term of the burst loss in ``mode`` (``independent`` or ``cascaded``)."""
    if mode == "independent":
        return clc_loss(fp_feats, q_feats, temperature)
    if mode == "cascaded":
        return cascaded_clc_loss(
            fp_feats, q_feats[0], lambda i, f: quant_block(qnet, i, f), temperature
        )
    raise ValueError(f"unknown CLC mode {mode!r} (use one of {MODES})")
