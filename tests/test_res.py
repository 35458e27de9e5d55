"""RES, the combined score and coreset selection against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.calibrate import res

P_Q = np.array([[0.7, 0.2, 0.1]])
P_F = np.array([[0.5, 0.3, 0.2]])
# KL(p_Q || p_F) = 0.7 ln(0.7/0.5) + 0.2 ln(0.2/0.3) + 0.1 ln(0.1/0.2)
KL = 0.7 * math.log(1.4) + 0.2 * math.log(2 / 3) + 0.1 * math.log(0.5)


def test_res_matches_hand_computation() -> None:
    assert abs(KL - 0.0851227) < 1e-6
    assert res.relative_entropy(P_Q, P_F)[0] == pytest.approx(KL, rel=1e-9)
    # from logits: log-probabilities shifted by any constant give the same softmax
    scores = res.res_scores(np.log(P_Q) + 3.0, np.log(P_F) - 1.0)
    assert scores[0] == pytest.approx(KL, rel=1e-9)


def test_res_is_zero_for_identical_models_and_uses_the_temperature() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    assert np.allclose(res.res_scores(logits, logits), 0.0)
    hot, cold = res.res_scores(2 * logits, logits, 1.0), res.res_scores(2 * logits, logits, 4.0)
    assert hot[0] > cold[0] > 0


def test_combined_score_by_hand() -> None:
    q, f = np.log(P_Q), np.log(P_F)
    evs = math.sqrt(0.3**2 + 0.2**2 + 0.1**2)  # ||p_Q - onehot(0)||
    ds = math.sqrt(0.2**2 + 0.1**2 + 0.1**2)  # ||p_Q - p_F||
    labels = np.array([0])
    start = res.combined_scores(q, f, labels, 0, 10, normalize=False)[0]
    end = res.combined_scores(q, f, labels, 10, 10, normalize=False)[0]
    mid = res.combined_scores(q, f, labels, 5, 10, normalize=False)[0]
    a = math.cos(math.pi / 4)
    assert start == pytest.approx(evs + KL)
    assert end == pytest.approx(ds + KL)
    assert mid == pytest.approx(a * evs + (1 - a) * ds + KL)
    # unlabelled: the FP prediction (class 0 here) is the label
    assert res.combined_scores(q, f, np.array([-1]), 0, 10, normalize=False)[0] == pytest.approx(
        start
    )


def test_normalized_terms_are_at_most_one() -> None:
    rng = np.random.default_rng(0)
    q, f = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    scores = res.combined_scores(q, f, rng.integers(0, 4, 50), 3, 10, normalize=True)
    assert scores.max() <= 2.0 + 1e-9  # a*EVS + (1-a)*DS <= 1 and RES <= 1


def test_evs_weight_schedule() -> None:
    assert res.evs_weight(0, 100) == 1.0
    assert res.evs_weight(100, 100) == pytest.approx(0.0, abs=1e-12)
    assert res.evs_weight(500, 100) == pytest.approx(0.0, abs=1e-12)


def test_select_top_and_sizes() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3, 0.0, 0.7, 0.2, 0.8, 0.4])
    assert res.select_top(scores, 0.3).tolist() == [1, 3, 8]
    assert res.coreset_size(1000, 0.01) == 10
    assert res.coreset_size(40, 0.01) == 1
    assert res.coreset_size(40, 1.0) == 40
    with pytest.raises(ValueError):
        res.coreset_size(40, 0.0)


def test_select_top_balanced_takes_every_class() -> None:
    scores = np.array([9.0, 8.0, 7.0, 6.0, 1.0, 0.5])
    classes = np.array([0, 0, 0, 0, 1, 1])
    assert res.select_top(scores, 0.5).tolist() == [0, 1, 2]
    assert res.select_top(scores, 0.5, classes).tolist() == [0, 1, 4]


def test_select_random_is_seeded_and_distinct() -> None:
    a = res.select_random(100, 0.1, np.random.default_rng(1))
    b = res.select_random(100, 0.1, np.random.default_rng(1))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10


def test_ranked_top_and_random_mix() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.8, 0.3, 0.0, 0.7, 0.2, 0.6, 0.4])
    assert res.ranked_top(scores, 0.4).tolist() == [1, 3, 6, 8]
    mixed = res.mix_random(res.ranked_top(scores, 0.4), 10, 0.5, np.random.default_rng(0))
    assert len(mixed) == 4 and {1, 3} <= set(mixed.tolist())
    assert len(set(mixed.tolist())) == 4 and mixed.tolist() == sorted(mixed.tolist())
    assert res.mix_random(np.array([4, 2]), 10, 0.0, np.random.default_rng(0)).tolist() == [2, 4]
