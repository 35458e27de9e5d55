"""LSQ+ quantizers with the straight-through estimator.

- :class:`WeightQuantizer`: per-output-channel symmetric, learnable scale (LSQ),
  integer range ``[-2^(b-1), 2^(b-1)-1]``.
- :class:`ActQuantizer`: per-tensor asymmetric, learnable scale and offset (LSQ+). The
  offset is snapped to an integer zero point (``z = round(-beta/s)``, STE) so the fake
  quantization grid is exactly the integer engine's uint8 grid.

Gradient scaling follows LSQ: ``g = 1 / sqrt(numel * qmax)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even in the forward pass, identity gradient in the backward pass."""
    return (torch.round(x) - x).detach() + x


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``scale``."""
    return (x - x * scale).detach() + x * scale


class WeightQuantizer(nn.Module):
    """Per-channel symmetric LSQ weight quantizer."""

    def __init__(self, out_channels: int, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.qmin = -(1 << (bits - 1))
        self.qmax = (1 << (bits - 1)) - 1
        self.scale = nn.Parameter(torch.ones(out_channels))

    @torch.no_grad()
    def init_from(self, w: torch.Tensor) -> None:
        """LSQ+ initialization: ``max(|mu - 3 sd|, |mu + 3 sd|) / 2^(b-1)`` per channel,
        never beyond the channel's max |w| (which 8-bit prefers)."""
        flat = w.reshape(w.shape[0], -1)
        mu, sd = flat.mean(dim=1), flat.std(dim=1, unbiased=False)
        rng = torch.maximum((mu - 3 * sd).abs(), (mu + 3 * sd).abs())
        rng = torch.minimum(rng, flat.abs().amax(dim=1))
        self.scale.copy_(torch.clamp(rng / (1 << (self.bits - 1)), min=1e-8))

    def effective_scale(self) -> torch.Tensor:
        """The positive scale used in the forward pass."""
        return self.scale.abs().clamp(min=1e-8)

    def integers(self, w: torch.Tensor) -> torch.Tensor:
        """Integer weights (as float tensor) of ``w``, no gradient."""
        s = self.effective_scale().reshape(-1, *([1] * (w.ndim - 1)))
        return torch.clamp(w / s, self.qmin, self.qmax).round()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        g = 1.0 / math.sqrt(w[0].numel() * self.qmax)
        s = grad_scale(self.effective_scale(), g).reshape(-1, *([1] * (w.ndim - 1)))
        return round_ste(torch.clamp(w / s, self.qmin, self.qmax)) * s


class ActQuantizer(nn.Module):
    """Per-tensor asymmetric LSQ+ activation quantizer on an integer-zero-point grid."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits
        self.qmax = (1 << bits) - 1
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.offset = nn.Parameter(torch.tensor(0.0))

    @torch.no_grad()
    def init_range(self, lo: float, hi: float) -> None:
        """Initialize from an observed range (LSQ+ min/max initialization)."""
        lo, hi = min(lo, 0.0), max(hi, lo + 1e-6)
        self.scale.fill_((hi - lo) / self.qmax)
        self.offset.fill_(lo)

    def effective_scale(self) -> torch.Tensor:
        """The positive scale used in the forward pass."""
        return self.scale.abs().clamp(min=1e-8)

    def zero_point(self) -> torch.Tensor:
        """Integer zero point in ``[0, qmax]`` (STE through the rounding)."""
        return round_ste(torch.clamp(-self.offset / self.effective_scale(), 0, self.qmax))

    def grid(self) -> tuple[float, int]:
        """The exported ``(scale, zero_point)``."""
        with torch.no_grad():
            return float(self.effective_scale()), int(self.zero_point().item())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = 1.0 / math.sqrt(x[0].numel() * self.qmax)
        s = grad_scale(self.effective_scale(), g)
        z = self.zero_point()
        q = torch.clamp(round_ste(x / s) + z, 0, self.qmax)  # rint(x/s) + z, as the engine
        return (q - z) * s
