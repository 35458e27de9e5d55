"""A domain's label-free signature: a mixture of diagonal Gaussians over the per-sample
features of :func:`edge_agent.calibrate.drift_reference.sample_features`, by which the
domain bank (:mod:`edge_agent.calibrate.domains`) routes samples (``docs/method.md``
section 5, "Domain routing")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_agent.calibrate.drift_reference import DriftReference

_PRIOR = 2.0  # samples' weight of the window's variance in a group's (shrinkage)
_LOG_2PI = float(np.log(2.0 * np.pi))
# a domain's typical likelihood: this quantile of its own samples' (under its signature)
TYPICAL_QUANTILE = 0.05


@dataclass(frozen=True)
class Signature:
    """A mixture of diagonal Gaussians over per-sample features (K components, F features)."""

    mean: np.ndarray  # (K, F) float64
    std: np.ndarray  # (K, F) float64, > 0
    log_weight: np.ndarray  # (K,) log mixture weights

    @classmethod
    def of_reference(cls, ref: DriftReference) -> Signature:
        """The training domain's: one equally weighted component per class of the drift
        reference (class spreads floored as the reference floors them)."""
        k = len(ref.mean)
        return cls(
            np.asarray(ref.mean, np.float64),
            np.asarray(ref.std, np.float64),
            np.full(k, -np.log(k)),
        )

    @classmethod
    def fit(cls, features: np.ndarray, groups: np.ndarray, floor: np.ndarray) -> Signature:
        """One component per group of a window's features (the classes the corrected
        model predicts: label-free), weighted by its share; each group's variance is
        shrunk towards the window's with the weight of ``_PRIOR`` samples (a group of a
        few samples has no spread of its own) and its spread is at least ``floor`` (F,)."""
        f = np.asarray(features, np.float64)
        pooled = f.var(axis=0)
        means, stds, weights = [], [], []
        for g in np.unique(groups):
            fg = f[groups == g]
            var = (len(fg) * fg.var(axis=0) + _PRIOR * pooled) / (len(fg) + _PRIOR)
            means.append(fg.mean(axis=0))
            stds.append(np.maximum(np.sqrt(var), floor))
            weights.append(len(fg) / len(f))
        return cls(np.array(means), np.array(stds), np.log(np.array(weights)))

    def quadratic(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each component's weighted log density as ``(f*f) @ A + f @ B + c``: (F, K)
        ``A``, ``B`` and (K,) ``c`` (two small products score a whole batch)."""
        prec = 1.0 / (self.std * self.std)
        c = -0.5 * (self.mean * self.mean * prec).sum(axis=1) - np.log(self.std).sum(axis=1)
        c += self.log_weight - 0.5 * _LOG_2PI * self.mean.shape[1]
        return (-0.5 * prec).T.copy(), (self.mean * prec).T.copy(), c

    def score(self, f: np.ndarray) -> np.ndarray:
        """Log likelihood (N,) of feature rows at their most likely component (weighted),
        as :meth:`DomainBank.route` scores them."""
        a, b, c = self.quadratic()
        return np.asarray(((f * f) @ a + f @ b + c).max(axis=1), np.float64)

    def typical(self, f: np.ndarray) -> float:
        """The :data:`TYPICAL_QUANTILE` quantile of the scores of the domain's own feature
        rows ``f`` (nan for none): a window at least this likely is the domain's."""
        return float(np.quantile(self.score(f), TYPICAL_QUANTILE)) if len(f) else float("nan")

    def spread(self) -> np.ndarray:
        """Per-feature spread (F,) of the mixture's components (their mean)."""
        return self.std.mean(axis=0)

    def check(self, features: int) -> None:
        """ValueError unless the shapes fit ``features`` and the numbers are usable."""
        k = len(self.log_weight)
        if self.mean.shape != (k, features) or self.std.shape != (k, features) or k < 1:
            raise ValueError(f"signature shapes {self.mean.shape}, {self.std.shape} for {features}")
        good = np.isfinite(self.mean).all() and np.isfinite(self.log_weight).all()
        if not (good and np.isfinite(self.std).all() and (self.std > 0).all()):
            raise ValueError("signature holds non-finite numbers or spreads <= 0")
