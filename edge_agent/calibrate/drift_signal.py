"""A label-free drift signal: does the stream still look like the training data?

Public API (``bench/real_drift.py`` and the agent's controller use it):

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
- :class:`DriftSignal`: a two-sided CUSUM (Page's cumulative sum; the Page-Hinkley test
  with a known reference level) on the standardized novelty score, clipped to
  [-``clip``, ``clip``] so one odd sample cannot fire it. ``S+ = max(0, S+ + z - k)``,
  ``S- = max(0, S- - z - k)``; an alarm when either passes ``h``. For independent
  standard normal z, ``k = 0.5, h = 12`` gives an average run length between false alarms
  of about 4e5 samples per side (Siegmund's approximation) and detects a shift of 1.5
  standard deviations in about 12 samples. After an alarm the signal holds for ``hold``
  samples (the calibration episode the alarm starts), then re-estimates the score's
  level from the next ``baseline`` samples (the new normal: a drift the agent could not
  undo does not keep firing) and watches again. :meth:`DriftSignal.update` takes a batch
  of samples and returns the stream indices at which alarms fired; ``change_point`` is
  the estimated first drifted sample of the latest alarm (where its sum last left 0).

Numpy only, deterministic: the same samples in the same order give the same alarms.
`river`'s ``PageHinkley`` / ``ADWIN`` would do the test itself, but importing
``river.drift`` pulls in scipy and narwhals: 79 MB more peak RSS and 12.7 s at load 20
on the development machine (``bench/drift_import_cost.py``,
``bench/results/drift_import_cost.json``), too much for a 1 GB board whose agent runs in
about 40 MB; the CUSUM is a few lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_agent.bundle import DRIFT_FEATURE_MEAN as EXTRA_MEAN
from edge_agent.bundle import DRIFT_FEATURE_STD as EXTRA_STD
from edge_agent.bundle import DRIFT_SCORE_LEVEL as EXTRA_LEVEL

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


@dataclass(frozen=True)
class DriftConfig:
    """Knobs of :class:`DriftSignal` (the agent's ``calibration.drift_*`` keys)."""

    allowance: float = 1.0  # k: shifts of the standardized score below this are ignored
    threshold: float = 20.0  # h: alarm when a cumulative sum passes it
    clip: float = 4.0  # standardized scores are clipped to [-clip, clip]
    hold: int = 1024  # samples after an alarm before the signal re-baselines
    baseline: int = 256  # samples the new level is estimated from


@dataclass
class DriftSignal:
    """Two-sided CUSUM over the novelty score of every stream sample (see module text)."""

    reference: DriftReference
    cfg: DriftConfig = field(default_factory=DriftConfig)
    n: int = 0  # samples seen
    alarms: int = 0
    last_alarm: int | None = None
    change_point: int | None = None
    level: tuple[float, float] = (0.0, 1.0)
    phase: str = "watch"  # "watch" | "hold" | "baseline"
    _up: float = 0.0
    _down: float = 0.0
    _up_zero: int = 0  # index after the last sample at which the sum was 0
    _down_zero: int = 0
    _until: int = 0  # end of hold
    _collected: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.level = self.reference.level

    def update(self, X: np.ndarray) -> list[int]:
        """Score a batch of samples (in stream order); the stream indices of alarms."""
        if len(X) == 0:
            return []
        return self.update_scores(self.reference.score(X))

    def update_scores(self, scores: np.ndarray) -> list[int]:
        """Feed precomputed novelty scores; the stream indices of alarms."""
        fired: list[int] = []
        c = self.cfg
        for s in np.asarray(scores, np.float64):
            i = self.n
            self.n += 1
            if self.phase == "hold":
                if self.n >= self._until:
                    self.phase, self._collected = "baseline", []
                continue
            if self.phase == "baseline":
                self._collected.append(float(s))
                if len(self._collected) >= c.baseline:
                    arr = np.array(self._collected)
                    self.level = (float(arr.mean()), max(float(arr.std()), 1e-3))
                    self._reset(self.n)
                    self.phase = "watch"
                continue
            z = min(max((s - self.level[0]) / self.level[1], -c.clip), c.clip)
            self._up = max(0.0, self._up + z - c.allowance)
            self._down = max(0.0, self._down - z - c.allowance)
            if self._up == 0.0:
                self._up_zero = i + 1
            if self._down == 0.0:
                self._down_zero = i + 1
            if self._up > c.threshold or self._down > c.threshold:
                self.change_point = self._up_zero if self._up > c.threshold else self._down_zero
                self.alarms += 1
                self.last_alarm = i
                fired.append(i)
                self.phase, self._until = "hold", i + 1 + c.hold
                self._reset(i + 1)
        return fired

    def _reset(self, at: int) -> None:
        self._up = self._down = 0.0
        self._up_zero = self._down_zero = at

    def status(self) -> dict[str, object]:
        """For the agent's status."""
        return {
            "samples": self.n,
            "alarms": self.alarms,
            "last_alarm": self.last_alarm,
            "change_point": self.change_point,
            "phase": self.phase,
            "cusum": [round(self._up, 3), round(self._down, 3)],
            "level": [round(v, 4) for v in self.level],
        }
