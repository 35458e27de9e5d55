"""LSQ+ quantizers: values on the grid, STE gradients, learnable scale/offset gradients."""

from __future__ import annotations

import pytest
import torch

from edge_agent.training.quantizers import ActQuantizer, WeightQuantizer, round_ste


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_quantizer_values_on_per_channel_grid(bits: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 3, 7)
    wq = WeightQuantizer(5, bits)
    wq.init_from(w)
    out = wq(w)
    s = wq.effective_scale().reshape(-1, 1, 1)
    q = out / s
    assert torch.allclose(q, q.round(), atol=1e-4)
    assert q.min() >= -(2 ** (bits - 1)) - 1e-4 and q.max() <= 2 ** (bits - 1) - 1 + 1e-4
    assert torch.equal(wq.integers(w), q.round())


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_act_quantizer_values_on_integer_zero_point_grid(bits: int) -> None:
    aq = ActQuantizer(bits)
    aq.init_range(-1.3, 2.1)
    x = torch.linspace(-3, 4, 301)
    out = aq(x)
    s, z = aq.grid()
    codes = out / s + z
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.min() >= -1e-3 and codes.max() <= 2**bits - 1 + 1e-3
    assert 0 <= z <= 2**bits - 1


def test_round_ste_passes_gradient_through() -> None:
    x = torch.tensor([0.2, 1.7, -2.5], requires_grad=True)
    round_ste(x).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.ones(3))
    assert torch.equal(round_ste(x.detach()), torch.tensor([0.0, 2.0, -2.0]))  # half to even


def test_weight_ste_gradient_is_identity_inside_range_and_zero_outside() -> None:
    wq = WeightQuantizer(1, 4)
    with torch.no_grad():
        wq.scale.fill_(0.1)
    w = torch.tensor([[0.05, 0.33, -0.61, 5.0, -5.0]], requires_grad=True)
    wq(w).sum().backward()
    assert w.grad is not None
    assert torch.equal(w.grad, torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]]))


def test_learnable_scale_and_offset_get_nonzero_gradients() -> None:
    torch.manual_seed(1)
    wq = WeightQuantizer(4, 2)
    w = torch.randn(4, 9)
    wq.init_from(w)
    ((wq(w) - w) ** 2).sum().backward()
    assert wq.scale.grad is not None and torch.all(wq.scale.grad != 0)

    aq = ActQuantizer(4)
    aq.init_range(-0.5, 1.0)
    x = torch.randn(64) * 2
    ((aq(x) - x) ** 2).sum().backward()
    assert aq.scale.grad is not None and aq.scale.grad != 0
    assert aq.offset.grad is not None and aq.offset.grad != 0
