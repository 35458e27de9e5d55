"""The references a drift score is measured against (see :mod:`edge_agent.calibrate.drift_signal`):
- :func:`sample_features` ``(X) -> (N, 3C)``: per channel of each sample, its mean, the
  log of its standard deviation and the log of its mean absolute first difference (over
  the sample's time / spatial axes): offset, gain, noise and channel-mixing drift move them.
- :class:`DriftReference`: the class-conditional means and spreads of those features on
  the training data, and the level of the novelty score there. :meth:`DriftReference.fit`
  builds it from labelled samples (export time, or the bundle's QCore anchors on the
  device); :meth:`DriftReference.to_extras` / :meth:`DriftReference.from_extras` store it
  in a bundle's extras (keys ``drift/*``); :meth:`DriftReference.score` is the novelty of
  each sample: the log of its smallest mean squared standardized distance to a class.
  Class-conditional on purpose: a run of samples of one class (a label shift, an activity
  that lasts) stays close to that class and raises no alarm; a drift moves samples away
  from every class.
- :class:`OutputReference`: the output side. The score of a sample is the normalized
  predictive entropy ``H(softmax(logits)) / log K`` of the *deployed integer model* (the
  bundle's default bit-width as the agent started it, never the calibrated one: the
  score must not depend on when rounds landed); its reference is the level of that
  entropy on the training data. It is for a drift that leaves the input statistics
  alone but makes the model unsure. Integer logits: the same score whether samples come
  one at a time or in a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import DRIFT_FEATURE_MEAN as EXTRA_MEAN
from edge_agent.bundle import DRIFT_FEATURE_STD as EXTRA_STD
from edge_agent.bundle import DRIFT_OUTPUT_LEVEL as EXTRA_OUTPUT
from edge_agent.bundle import DRIFT_SCORE_LEVEL as EXTRA_LEVEL
from edge_agent.bundle import Bundle
from edge_agent.engine.engine import Engine

_EPS = 1e-6
_MIN_SPREAD = 0.05  # floor of a feature's class spread, as a share of its pooled spread


def sample_features(X: np.ndarray) -> np.ndarray:
    """Per-channel mean, log std and log mean |first difference| of each sample (N, 3C)."""
    a = np.asarray(X, dtype=np.float32)
    a = a.reshape(a.shape[0], a.shape[1], -1) if a.ndim > 2 else a.reshape(a.shape[0], -1, 1)
    mean = a.mean(axis=2, dtype=np.float64)
    logstd = np.log(a.std(axis=2, dtype=np.float64) + _EPS)
    if a.shape[2] > 1:
        rough = np.log(np.abs(np.diff(a, axis=2)).mean(axis=2, dtype=np.float64) + _EPS)
    else:
        rough = np.zeros_like(mean)
    return np.concatenate([mean, logstd, rough], axis=1)


@dataclass(frozen=True)
class DriftReference:
    """Class-conditional feature statistics of the training data (see the module text)."""

    mean: np.ndarray  # (K, F)
    std: np.ndarray  # (K, F)
    level: tuple[float, float]  # mean and std of score() on the data it was fitted on

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, num_classes: int) -> DriftReference:
        """Fit on labelled samples; a class without samples gets no reference row. The
        score's level is measured leaving each sample out of its own class statistics
        (in-sample distances would be too small and make unseen samples look drifted)."""
        f = sample_features(X)
        y = np.asarray(y, dtype=np.int64)
        pooled = f.std(axis=0) + _EPS
        means, stds, counts = [], [], []
        for k in range(num_classes):
            fk = f[y == k]
            if len(fk) == 0:
                continue
            means.append(fk.mean(axis=0))
            stds.append(np.maximum(fk.std(axis=0), _MIN_SPREAD * pooled))
            counts.append(len(fk))
        mean, std = np.array(means), np.array(stds)
        ref = cls(mean.astype(np.float32), std.astype(np.float32), (0.0, 1.0))
        scores = ref._loo_scores(f, y, num_classes, np.array(counts))
        lo, sd = float(np.mean(scores)), float(np.std(scores))
        return cls(ref.mean, ref.std, (lo, max(sd, 1e-3)))

    def _loo_scores(
        self, f: np.ndarray, y: np.ndarray, num_classes: int, counts: np.ndarray
    ) -> np.ndarray:
        """Scores of the fitting samples with each left out of its class mean (the spread
        is kept: one sample moves it little, and a floor bounds it)."""
        present = [k for k in range(num_classes) if (y == k).any()]
        row = {k: i for i, k in enumerate(present)}
        z2 = ((f[:, None, :] - self.mean[None]) / self.std[None]) ** 2  # (N, K, F)
        for n in range(len(f)):
            if y[n] not in row:
                continue
            i = row[int(y[n])]
            c = counts[i]
            if c > 1:  # the class mean without this sample
                loo = (self.mean[i] * c - f[n]) / (c - 1)
                z2[n, i] = ((f[n] - loo) / self.std[i]) ** 2
            else:
                z2[n, i] = np.inf
        d = z2.mean(axis=2).min(axis=1)
        return np.log(d[np.isfinite(d)] + _EPS)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Novelty of each sample (N,): log of the smallest mean squared standardized
        feature distance to a class."""
        f = sample_features(X)
        z2 = ((f[:, None, :] - self.mean[None]) / self.std[None]) ** 2
        return np.log(z2.mean(axis=2).min(axis=1) + _EPS)

    def to_extras(self) -> dict[str, np.ndarray]:
        """The reference as bundle extras."""
        return {
            EXTRA_MEAN: self.mean.astype(np.float32),
            EXTRA_STD: self.std.astype(np.float32),
            EXTRA_LEVEL: np.asarray(self.level, np.float32),
        }

    @classmethod
    def from_extras(cls, extras: dict[str, np.ndarray]) -> DriftReference | None:
        """The reference a bundle records, or None if it has none (or a malformed one)."""
        try:
            mean, std, level = (
                np.asarray(extras[k], np.float64) for k in (EXTRA_MEAN, EXTRA_STD, EXTRA_LEVEL)
            )
        except KeyError:
            return None
        if (
            mean.ndim != 2
            or std.shape != mean.shape
            or level.shape != (2,)
            or not (np.all(std > 0) and level[1] > 0)
        ):
            return None
        return cls(mean, std, (float(level[0]), float(level[1])))


def predictive_entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy of the softmax of each row of ``logits`` over log(classes): in [0, 1]."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    h = -(p * np.log(np.maximum(p, 1e-300))).sum(axis=1)
    return h / np.log(max(z.shape[1], 2))


@dataclass(frozen=True)
class OutputReference:
    """Level of the deployed integer model's predictive entropy on the training data."""

    bits: int  # the bit-width it was measured at
    level: tuple[float, float]  # mean and std

    @classmethod
    def fit(cls, bundle: Bundle, X: np.ndarray, batch: int = 256) -> OutputReference:
        """Measure the level on samples ``X`` (as the model takes them)."""
        eng = Engine(bundle, bits=bundle.default_bits, scratch=True)
        h = np.concatenate(
            [
                predictive_entropy(eng.predict_logits(X[s : s + batch]))
                for s in range(0, len(X), batch)
            ]
        )
        return cls(bundle.default_bits, (float(h.mean()), max(float(h.std()), 1e-3)))

    def to_extras(self) -> dict[str, np.ndarray]:
        """The reference as bundle extras."""
        return {EXTRA_OUTPUT: np.array([self.bits, *self.level], np.float64)}

    @classmethod
    def from_extras(cls, extras: dict[str, np.ndarray]) -> OutputReference | None:
        """The reference a bundle records, or None (absent or malformed)."""
        v = np.asarray(extras.get(EXTRA_OUTPUT, ()), np.float64)
        if v.shape != (3,) or not (np.all(np.isfinite(v)) and v[2] > 0):
            return None
        return cls(int(v[0]), (float(v[1]), float(v[2])))

    def engine(self, bundle: Bundle) -> Engine:
        """The scoring model: ``bundle`` at the reference's bit-width (the default one if
        the bundle has no such model)."""
        bits = self.bits if self.bits in bundle.quant else bundle.default_bits
        return Engine(bundle, bits=bits, scratch=True)

    def model(self, bundle: Bundle) -> Callable[[np.ndarray], np.ndarray]:
        """The scoring model's logits function (see :meth:`engine`)."""
        return self.engine(bundle).predict_logits
