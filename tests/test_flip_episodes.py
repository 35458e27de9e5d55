"""The flipper's training episodes: every drift kind at every bit-width, and each one a
real change of the samples (numpy only, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.data import load_dataset
from edge_agent.training.flip_episodes import (
    MIXTURE,
    draw_strength,
    episode_kinds,
    episode_plan,
)
from edge_agent.training.flip_train import FlipTrainConfig, episode_count

SENSOR_ALL = {"offset", "gain", "rotation", "noise", "dropout", "timewarp", MIXTURE}


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((6, 100), SENSOR_ALL),  # 3-axis triplets: rotation applies
        ((2, 50), SENSOR_ALL - {"rotation"}),
        ((1, 361), SENSOR_ALL - {"rotation", "dropout"}),
        ((1, 8, 8), {"shift", "rotate", "contrast", "noise", "gain", "offset", MIXTURE}),
    ],
)
def test_kinds_follow_the_input(shape: tuple[int, ...], expected: set[str]) -> None:
    assert set(episode_kinds(shape)) == expected


@pytest.mark.parametrize("bits", [[4], [8, 4, 2], [8, 4, 3, 2]])
def test_default_episodes_hold_every_kind_at_every_bit_width(bits: list[int]) -> None:
    shape = (6, 100)
    n = episode_count(FlipTrainConfig(), bits, shape)
    plan = episode_plan(n, bits, shape, np.random.default_rng(0))
    cells = {(ep.kind, ep.bits) for ep in plan}
    assert cells == {(k, b) for k in SENSOR_ALL for b in bits}
    assert n >= 24  # the default never trains on fewer episodes than before
    mixtures = [ep for ep in plan if ep.kind == MIXTURE]
    assert all(len(ep.parts) == 2 and ep.parts[0].kind != ep.parts[1].kind for ep in mixtures)
    assert all(p.kind != MIXTURE for ep in plan for p in ep.parts)


def test_any_full_cycle_of_episodes_covers_every_cell() -> None:
    bits, shape = [8, 4, 2], (1, 8, 8)
    kinds = episode_kinds(shape)
    plan = episode_plan(5 * len(kinds) * len(bits), bits, shape, np.random.default_rng(3))
    cycle = len(kinds) * len(bits)
    for start in range(0, len(plan), cycle):
        assert len({(ep.kind, ep.bits) for ep in plan[start : start + cycle]}) == cycle


@pytest.mark.parametrize("data", ["basicmotions", "digits"])
def test_every_episode_changes_the_samples(data: str) -> None:
    ds = load_dataset(data)
    X = ds.X_train[:8]
    plan = episode_plan(60, [8, 4, 2], ds.input_shape, np.random.default_rng(1))
    for ep in plan:
        out = ep.apply(X, seed=5)
        assert out.shape == X.shape and out.dtype == np.float32
        assert np.isfinite(out).all()
        assert np.abs(out - X).max() > 1e-3, ep


def test_strengths_go_both_ways_around_the_default() -> None:
    rng = np.random.default_rng(0)
    gains = [draw_strength("gain", rng, (0.4, 1.2)) for _ in range(200)]
    offsets = [draw_strength("offset", rng, (0.4, 1.2)) for _ in range(200)]
    noise = [draw_strength("noise", rng, (0.4, 1.2)) for _ in range(200)]
    assert min(gains) < 1 < max(gains) and all(g > 0 for g in gains)
    assert min(offsets) < 0 < max(offsets)
    assert all(0 < s <= 1.2 * 0.8 + 1e-9 for s in noise)


def test_plan_is_seeded_and_rejects_nothing_to_do() -> None:
    a = episode_plan(10, [4, 2], (6, 100), np.random.default_rng(7))
    b = episode_plan(10, [4, 2], (6, 100), np.random.default_rng(7))
    assert a == b
    with pytest.raises(ValueError, match="at least one episode"):
        episode_plan(0, [4], (6, 100), np.random.default_rng(0))
