"""Coreset scores for QAT bursts: the Relative Entropy Score and the combined score.

numpy only (no torch): the scores are functions of the quantized and full-precision
models' softmax outputs, so they can be computed from any forward pass, the burst's
fake-quant model or the agent's integer engine alike (docs/method.md section 8).

- ``RES(x) = KL(p_Q(x) || p_F(x)) = sum_m p_Q,m log(p_Q,m / p_F,m)`` at a temperature.
- ``d(t) = a(t) * EVS + (1 - a(t)) * DS + RES`` with ``EVS = ||p_Q - onehot(y)||_2``,
  ``DS = ||p_Q - p_F||_2`` and ``a(t) = cos(pi * t / (2 T))``. Where a sample has no label
  (``y < 0``) the FP model's prediction stands in for it. With ``normalize`` each term is
  divided by its maximum over the pool first, so the three terms weigh alike.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-12


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def relative_entropy(p_q: np.ndarray, p_f: np.ndarray) -> np.ndarray:
    """Per-sample ``KL(p_Q || p_F)`` of two (N, M) probability arrays."""
    p_q = np.clip(p_q, _EPS, 1.0)
    p_f = np.clip(p_f, _EPS, 1.0)
    return np.sum(p_q * (np.log(p_q) - np.log(p_f)), axis=1)


def res_scores(q_logits: np.ndarray, f_logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The Relative Entropy Score of every sample from the two models' logits."""
    return relative_entropy(softmax(q_logits, temperature), softmax(f_logits, temperature))


def evs_weight(step: int, total_steps: int) -> float:
    """``a(t) = cos(pi * t / (2 T))``: 1 at the start of a burst, 0 at its end."""
    if total_steps <= 0:
        return 1.0
    return math.cos(math.pi * min(max(step, 0), total_steps) / (2 * total_steps))


def combined_scores(
    q_logits: np.ndarray,
    f_logits: np.ndarray,
    labels: np.ndarray,
    step: int,
    total_steps: int,
    temperature: float = 1.0,
    normalize: bool = True,
) -> np.ndarray:
    """``a(t) * EVS + (1 - a(t)) * DS + RES`` per sample; ``labels < 0`` are unlabelled."""
    p_q = softmax(q_logits, temperature)
    p_f = softmax(f_logits, temperature)
    targets = np.where(labels >= 0, labels, p_f.argmax(axis=1))
    onehot = np.eye(p_q.shape[1])[targets]
    terms = [
        np.linalg.norm(p_q - onehot, axis=1),
        np.linalg.norm(p_q - p_f, axis=1),
        relative_entropy(p_q, p_f),
    ]
    if normalize:
        terms = [t / max(float(t.max(initial=0.0)), _EPS) for t in terms]
    a = evs_weight(step, total_steps)
    return a * terms[0] + (1 - a) * terms[1] + terms[2]


def coreset_size(pool_size: int, fraction: float) -> int:
    """Number of samples a ``fraction`` of the pool keeps (at least one, at most all)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"coreset fraction must be in (0, 1], got {fraction}")
    return min(pool_size, max(1, round(pool_size * fraction)))


def select_top(
    scores: np.ndarray, fraction: float, classes: np.ndarray | None = None
) -> np.ndarray:
    """Sorted indices of the top ``fraction`` of samples (see :func:`ranked_top`)."""
    return np.sort(ranked_top(scores, fraction, classes))


def ranked_top(
    scores: np.ndarray, fraction: float, classes: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the top ``fraction`` of samples by score, best first (ties: lower index).

    With ``classes`` (label or pseudo-label per sample) the selection is class-balanced:
    the best of every class first, then every class's second best, and so on, so a few
    classes with large scores cannot take the whole coreset.
    """
    s = np.asarray(scores, dtype=np.float64)
    k = coreset_size(len(s), fraction)
    order = np.argsort(-s, kind="stable")
    if classes is not None:
        cls = np.asarray(classes)[order]
        rank = np.empty(len(s), dtype=np.int64)
        for c in np.unique(cls):
            members = np.flatnonzero(cls == c)
            rank[members] = np.arange(len(members))
        order = order[np.argsort(rank, kind="stable")]
    return order[:k]


def mix_random(
    top: np.ndarray, pool_size: int, share: float, rng: np.random.Generator
) -> np.ndarray:
    """Replace the lowest-ranked ``share`` of a top-S selection ``top`` (given best first)
    by samples drawn uniformly from the rest of the pool: hard samples plus coverage."""
    n_rand = round(len(top) * share)
    keep = top[: len(top) - n_rand]
    rest = np.setdiff1d(np.arange(pool_size), keep)
    return np.sort(np.concatenate([keep, rng.choice(rest, n_rand, replace=False)]))


def select_random(pool_size: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a uniform random ``fraction`` of the pool (the baseline)."""
    return np.sort(rng.choice(pool_size, coreset_size(pool_size, fraction), replace=False))
