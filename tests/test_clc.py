"""Cascaded Layer Correction: zero for identical models, the block runner against QuantNet."""

from __future__ import annotations

import torch

from edge_agent.training.arch import FPNet, image_cnn, sensor_cnn
from edge_agent.training.clc import (
    cascaded_clc_loss,
    clc_loss,
    correction_loss,
    fp_forward,
    layer_alignment,
    quant_block,
)
from edge_agent.training.qnet import QuantNet, calibrate_activation_ranges


def _nets(spec: dict, x: torch.Tensor, bits: int = 4) -> tuple[FPNet, QuantNet]:
    torch.manual_seed(0)
    fp = FPNet(spec, folded=True).eval()
    q = QuantNet(fp, bits, 8)
    calibrate_activation_ranges(q, fp, x)
    return fp, q.eval()


def test_alignment_is_zero_for_identical_features_and_positive_otherwise() -> None:
    f = torch.randn(4, 8, 10)
    assert float(layer_alignment(f, f.clone())) == 0.0
    assert float(layer_alignment(f, torch.randn(4, 8, 10))) > 0


def test_clc_zero_when_models_identical() -> None:
    x = torch.randn(6, 3, 40)
    fp = FPNet(sensor_cnn((3, 40), 4), folded=True).eval()
    logits, feats = fp_forward(fp, x)
    assert torch.allclose(logits, fp(x))
    assert len(feats) == 3
    assert float(clc_loss(feats, [f.clone() for f in feats]).detach()) == 0.0
    blocks = [b for b in fp.blocks if isinstance(b, torch.nn.Sequential)]

    def fp_block(layer: int, prev: torch.Tensor) -> torch.Tensor:  # the FP model as "Q"
        return blocks[layer](fp.blocks[1](prev))  # a maxpool sits between the blocks

    assert float(cascaded_clc_loss(feats, feats[0].clone(), fp_block).detach()) == 0.0


def test_quant_block_reproduces_the_quantized_forward() -> None:
    for spec, shape in ((sensor_cnn((3, 40), 4), (3, 40)), (image_cnn((1, 8, 8), 5), (1, 8, 8))):
        x = torch.randn(5, *shape)
        _, q = _nets(spec, x)
        with torch.no_grad():
            _, q_feats = q(x, return_features=True)
            for layer in range(1, len(q_feats)):
                again = quant_block(q, layer, q_feats[layer - 1])
                assert torch.allclose(again, q_feats[layer], atol=1e-5)


def test_cascaded_and_independent_losses_have_gradients() -> None:
    x = torch.randn(5, 3, 40)
    fp, q = _nets(sensor_cnn((3, 40), 4), x, bits=2)
    _, fp_feats = fp_forward(fp, x)
    _, q_feats = q(x, return_features=True)
    for mode in ("independent", "cascaded"):
        loss = correction_loss(mode, q, fp_feats, q_feats)
        assert float(loss.detach()) > 0
        grads = torch.autograd.grad(loss, q.quant_layers()[1].layer.weight, retain_graph=True)
        assert float(grads[0].abs().sum()) > 0
