"""Which simulated drift each offline flipper-training episode sees (numpy only).

The episodes cover the drift kinds met in real data, each at every bit-width the bundle
has: for sensor series offset, gain, rotation (3-axis channel triplets only), noise, a
dead channel (two or more channels only: one dead channel of a univariate series leaves
no signal) and time warp; for images shift, rotation, contrast, noise, gain and offset;
and for both, mixtures of two kinds. The (kind, bit-width) cells are drawn as a
shuffled, repeated cycle, so any ``len(kinds) * len(bits)`` consecutive episodes hold
every cell once. Strengths vary around the publisher's defaults in both directions
(attenuation and amplification, positive and negative offsets and angles, slower and
faster gestures): docs/method.md, section 7.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_agent.data.drift import DEFAULT_STRENGTH, Drift

MIXTURE = "mixture"
SENSOR_EPISODE_KINDS = ("offset", "gain", "rotation", "noise", "dropout", "timewarp")
IMAGE_EPISODE_KINDS = ("shift", "rotate", "contrast", "noise", "gain", "offset")
SIGNED = ("offset", "rotation", "rotate")  # strength drawn with a random sign
RATIO = ("gain", "timewarp", "contrast")  # factors: drawn as default ** (+-u)


def episode_kinds(input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The single drift kinds that change samples of ``input_shape``, then ``mixture``."""
    if len(input_shape) != 2:
        return (*IMAGE_EPISODE_KINDS, MIXTURE)
    channels = input_shape[0]
    kinds = [
        k
        for k in SENSOR_EPISODE_KINDS
        if not (k == "rotation" and channels < 3) and not (k == "dropout" and channels < 2)
    ]
    return (*kinds, MIXTURE)


def draw_strength(kind: str, rng: np.random.Generator, scale: tuple[float, float]) -> float:
    """A strength of ``kind`` around its default: ``u ~ U(scale)`` times the default for
    magnitudes (a random sign for offsets and angles), ``default ** (+-u)`` for factors."""
    u = float(rng.uniform(*scale))
    default = DEFAULT_STRENGTH[kind]
    if kind == "shift":  # whole pixels, at least one (a shift of 0 is no drift)
        return float(max(1, round(u * default)))
    if kind in RATIO:
        return float(default ** (u if rng.random() < 0.5 else -u))
    sign = -1.0 if kind in SIGNED and rng.random() < 0.5 else 1.0
    return sign * u * default


@dataclass(frozen=True)
class EpisodeDrift:
    """One episode's bit-width and its drift: one transform, or two for a mixture."""

    bits: int
    kind: str  # a drift kind or ``mixture``
    parts: tuple[Drift, ...]

    def apply(self, X: np.ndarray, seed: int) -> np.ndarray:
        """The samples with every part applied, in order (seeded noise)."""
        out = np.asarray(X, dtype=np.float32)
        for i, d in enumerate(self.parts):
            out = d.apply_stream(out, seed=seed + i)
        return out


def draw_episode(
    kind: str, bits: int, kinds: tuple[str, ...], rng: np.random.Generator
) -> EpisodeDrift:
    """The drift of one (kind, bits) cell: a single kind at 0.4-1.2 of its default
    strength, or a mixture of two distinct single kinds at 0.3-0.8 each."""
    if kind != MIXTURE:
        return EpisodeDrift(bits, kind, (Drift(kind, draw_strength(kind, rng, (0.4, 1.2)), 0),))
    singles = [k for k in kinds if k != MIXTURE]
    pair = rng.choice(len(singles), size=min(2, len(singles)), replace=False)
    parts = tuple(Drift(singles[i], draw_strength(singles[i], rng, (0.3, 0.8)), 0) for i in pair)
    return EpisodeDrift(bits, kind, parts)


def episode_plan(
    episodes: int, bits: list[int], input_shape: tuple[int, ...], rng: np.random.Generator
) -> list[EpisodeDrift]:
    """``episodes`` drifts: the (kind, bit-width) cells in shuffled cycles, each cell
    once per cycle, so ``episodes >= len(kinds) * len(bits)`` covers them all."""
    if episodes < 1 or not bits:
        raise ValueError(f"need at least one episode and one bit-width, got {episodes}, {bits}")
    kinds = episode_kinds(input_shape)
    cells = [(k, b) for k in kinds for b in sorted(bits)]
    order: list[tuple[str, int]] = []
    while len(order) < episodes:
        order += [cells[i] for i in rng.permutation(len(cells))]
    return [draw_episode(k, b, kinds, rng) for k, b in order[:episodes]]
