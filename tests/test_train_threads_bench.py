"""bench/train_threads: the paired statistics the README's thread conclusion rests on."""

from __future__ import annotations

import math

import pytest

from bench.train_threads import paired


def _run(seed: int, threads: int, acc: float, **extra: object) -> dict[str, object]:
    return {"seed": seed, "threads": threads, "int4": acc, **extra}


def test_paired_pairs_by_seed_and_ignores_repeats_and_unpaired_seeds() -> None:
    runs = [
        _run(0, 1, 0.70),
        _run(0, 2, 0.74),  # +4
        _run(1, 2, 0.70),
        _run(1, 1, 0.72),  # -2
        _run(2, 1, 0.76),
        _run(2, 2, 0.76),  # 0
        _run(3, 1, 0.10),  # no two-thread run: left out
        _run(0, 2, 0.10, repeat=True),  # a repeat: not a pair
    ]
    p = paired(runs, "int4")
    assert p["seeds"] == [0, 1, 2]
    assert p["diff_pts_per_seed"] == pytest.approx([4.0, -2.0, 0.0])
    assert p["mean_diff_pts"] == pytest.approx(0.67)
    sd = math.sqrt(((4 - 2 / 3) ** 2 + (-2 - 2 / 3) ** 2 + (2 / 3) ** 2) / 2)
    assert p["se_pts"] == pytest.approx(round(sd / math.sqrt(3), 2))
    assert p["n_pos_zero_neg"] == [1, 1, 1]
    assert p["mean_1_thread_pct"] == pytest.approx(72.67)
    assert p["mean_2_threads_pct"] == pytest.approx(73.33)


def test_paired_without_pairs_is_empty() -> None:
    assert paired([_run(0, 1, 0.5)], "int4") == {}
