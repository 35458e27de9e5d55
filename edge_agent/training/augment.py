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
    """Rotate every 3-channel triplet of (N, C, T) windows by a small random rotation
    (one rotation per sample, Rz Ry Rx of three angles; batched, no per-sample loop)."""
    n, c = x.shape[:2]
    if c < 3:
        return x
    angles = (torch.rand((n, 3), generator=gen) * 2 - 1) * math.radians(max_deg)
    cos, sin = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones(n), torch.zeros(n)

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, -1) for r in rows], -2)  # (n, 3, 3)

    (ca, cb, cg), (sa, sb, sg) = cos.unbind(1), sin.unbind(1)
    rx = mat([[one, zero, zero], [zero, ca, -sa], [zero, sa, ca]])
    ry = mat([[cb, zero, sb], [zero, one, zero], [-sb, zero, cb]])
    rz = mat([[cg, -sg, zero], [sg, cg, zero], [zero, zero, one]])
    r = (rz @ ry @ rx).to(x.dtype)
    k = c - c % 3
    trip = x[:, :k].reshape(n, k // 3, 3, -1)
    rotated = torch.einsum("nij,ngjt->ngit", r, trip).reshape(n, k, -1)
    return torch.cat([rotated, x[:, k:]], 1) if k < c else rotated


def time_warp(x: torch.Tensor, max_factor: float, gen: torch.Generator) -> torch.Tensor:
    """Resample each (N, C, T) window at a random speed in [1/f, f] (linear interpolation,
    all samples at once)."""
    n, c, t = x.shape
    logf = (torch.rand(n, generator=gen) * 2 - 1) * math.log(max_factor)
    base = torch.arange(t, dtype=x.dtype)
    pos = torch.clamp(base[None, :] * torch.exp(logf)[:, None], 0, t - 1)  # (n, t)
    lo = pos.floor().long()
    hi = torch.clamp(lo + 1, max=t - 1)
    w = (pos - lo).unsqueeze(1)
    lo_i, hi_i = lo.unsqueeze(1).expand(n, c, t), hi.unsqueeze(1).expand(n, c, t)
    return x.gather(2, lo_i) * (1 - w) + x.gather(2, hi_i) * w


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
