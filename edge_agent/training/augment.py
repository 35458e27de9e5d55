"""Training-time data augmentation (torch): sensor jitter/scaling/rotation/time warp and
small image shifts. Used by FP training, QAT and the consistency-regularization views."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def jitter(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise of ``sigma`` (inputs are normalized, so sigma is in std units)."""
    return x + sigma * torch.randn(x.shape, generator=gen)


def scaling(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Multiply each sample's channels by factors drawn around 1."""
    factors = 1 + sigma * torch.randn(
        (x.shape[0], x.shape[1], *([1] * (x.ndim - 2))), generator=gen
    )
    return x * factors


def rotation3(x: torch.Tensor, max_deg: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate every 3-channel triplet of (N, C, T) windows by a small random rotation."""
    n, c = x.shape[:2]
    if c < 3:
        return x
    angles = (torch.rand((n, 3), generator=gen) * 2 - 1) * math.radians(max_deg)
    out = x.clone()
    for i in range(n):
        a, b, g = angles[i]
        rx = torch.tensor(
            [[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]]
        )
        ry = torch.tensor(
            [[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]]
        )
        rz = torch.tensor(
            [[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]]
        )
        r = (rz @ ry @ rx).to(x.dtype)
        for c0 in range(0, c - c % 3, 3):
            out[i, c0 : c0 + 3] = r @ x[i, c0 : c0 + 3]
    return out


def time_warp(x: torch.Tensor, max_factor: float, gen: torch.Generator) -> torch.Tensor:
    """Resample each (N, C, T) window at a random speed in [1/f, f] (linear interpolation)."""
    n, _, t = x.shape
    logf = (torch.rand(n, generator=gen) * 2 - 1) * math.log(max_factor)
    out = torch.empty_like(x)
    base = torch.arange(t, dtype=x.dtype)
    for i in range(n):
        pos = torch.clamp(base * torch.exp(logf[i]), 0, t - 1)
        lo = pos.floor().long()
        hi = torch.clamp(lo + 1, max=t - 1)
        w = pos - lo
        out[i] = x[i][:, lo] * (1 - w) + x[i][:, hi] * w
    return out


def image_shift(x: torch.Tensor, max_px: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each (N, C, H, W) image by up to ``max_px`` pixels in each direction (zero fill)."""
    n = x.shape[0]
    padded = F.pad(x, (max_px, max_px, max_px, max_px))
    h, w = x.shape[-2:]
    offs = torch.randint(0, 2 * max_px + 1, (n, 2), generator=gen)
    return torch.stack(
        [padded[i, :, offs[i, 0] : offs[i, 0] + h, offs[i, 1] : offs[i, 1] + w] for i in range(n)]
    )


def augment(x: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """The default augmentation of a batch of normalized samples, by input rank."""
    if x.ndim == 3:
        x = scaling(jitter(x, 0.05 * strength, gen), 0.1 * strength, gen)
        return time_warp(rotation3(x, 10 * strength, gen), 1 + 0.1 * strength, gen)
    return jitter(image_shift(x, 1, gen), 0.05 * strength, gen)
