"""The accept-or-rollback gate every weight change must pass (bit flips and QAT bursts).

A candidate model is scored on a held-out part of the calibration data: accuracy where
labels exist, agreement with the full-precision model's predictions (pseudo-labels)
where they do not. It is kept only if its score is not below the current model's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]  # (N, *shape) float32 -> (N,) class indices


@dataclass(frozen=True)
class GateDecision:
    """The outcome of one gate check."""

    accepted: bool
    metric: str  # "accuracy" (labels) or "fp_agreement" (pseudo-labels)
    before: float
    after: float
    n: int
    reason: str


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (calibration, held-out) of ``n`` samples; at least one of each when n >= 2."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = min(max(1, round(n * fraction)), n - 1) if n >= 2 else 0
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def score(predict: Predict, X: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of ``X`` whose predicted class equals ``targets``."""
    if len(X) == 0:
        return float("nan")
    return float(np.mean(predict(X) == targets))


def decide(
    before: float, after: float, n: int, metric: str, tolerance: float = 0.0, min_samples: int = 1
) -> GateDecision:
    """Accept when ``after >= before - tolerance`` on at least ``min_samples`` samples."""
    if n < min_samples or not np.isfinite(before) or not np.isfinite(after):
        decision = GateDecision(
            False, metric, before, after, n, f"only {n} held-out samples (need {min_samples})"
        )
    elif after >= before - tolerance:
        decision = GateDecision(True, metric, before, after, n, "not worse on held-out data")
    else:
        decision = GateDecision(False, metric, before, after, n, "worse on held-out data")
    log.info(
        "gate %s: %s %.4f -> %.4f on %d held-out samples (%s)",
        "accepted" if decision.accepted else "rolled back",
        metric,
        before,
        after,
        n,
        decision.reason,
    )
    return decision


def check(
    current: Predict,
    candidate: Predict,
    X: np.ndarray,
    targets: np.ndarray,
    metric: str,
    tolerance: float = 0.0,
    min_samples: int = 1,
) -> GateDecision:
    """Score both models on the held-out ``X`` and decide."""
    return decide(
        score(current, X, targets),
        score(candidate, X, targets),
        len(X),
        metric,
        tolerance,
        min_samples,
    )
