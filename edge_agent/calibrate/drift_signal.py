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
- :class:`OutputReference`: the output side. The score of a sample is the normalized
  predictive entropy ``H(softmax(logits)) / log K`` of the *deployed integer model* (the
  bundle's default bit-width as the agent started it, never the calibrated one: the
  score must not depend on when rounds landed); its reference is the level of that
  entropy on the training data. It is for a drift that leaves the input statistics
  alone but makes the model unsure. Integer logits: the same score whether samples come
  one at a time or in a batch.
- :class:`DriftSignal`: a two-sided CUSUM (Page's cumulative sum; the Page-Hinkley test
  with a known reference level) on each standardized score, clipped to
  [-``clip``, ``clip``] so one odd sample cannot fire it: ``S+ = max(0, S+ + z - k)``,
  ``S- = max(0, S- - z - k)``; an alarm when any sum passes ``h``. For independent
  standard normal z, ``k = 0.5, h = 12`` gives an average run length between false alarms
  of about 4e5 samples per side (Siegmund's approximation) and detects a shift of 1.5
  standard deviations in about 12 samples. The output score's training level is
  optimistic (the model fits its training data better than unseen data of the same
  domain), so while it is watched against that level its allowance is the larger
  ``output_allowance``; once re-baselined on the stream it is ``output_allowance_stream``. After an
  alarm the signal holds for ``hold`` samples (the calibration episode the alarm
  starts), then re-estimates both levels from the next ``baseline`` samples (the new
  normal: a drift the agent could not undo does not keep firing; the stream returning
  to the training domain afterwards is a change again) and watches again.
  :meth:`DriftSignal.update` takes a batch of samples and returns the stream indices at
  which alarms fired; ``change_point`` is the estimated first drifted sample of the
  latest alarm (where its sum last left 0), ``fired_by`` which score fired it.

Numpy and the integer engine, deterministic: the same samples in the same order give the
same alarms. `river`'s ``PageHinkley`` / ``ADWIN`` would do the test itself (and ADWIN,
which compares the stream with its own past, cannot see a stream that is drifted from
its first sample on, as a freshly deployed model's may be), but importing
``river.drift`` pulls in scipy and narwhals: 79 MB more peak RSS and 12.7 s at load 20
on the development machine (``bench/drift_import_cost.py``,
``bench/results/drift_import_cost.json``), too much for a 1 GB board whose agent runs in
about 40 MB; the CUSUM is a few lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge_agent.bundle import DRIFT_FEATURE_MEAN as EXTRA_MEAN
from edge_agent.bundle import DRIFT_FEATURE_STD as EXTRA_STD
from edge_agent.bundle import DRIFT_OUTPUT_LEVEL as EXTRA_OUTPUT
from edge_agent.bundle import DRIFT_SCORE_LEVEL as EXTRA_LEVEL
from edge_agent.bundle import Bundle
from edge_agent.engine.engine import Engine, ModelKey

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


@dataclass(frozen=True)
class DriftConfig:
    """Knobs of :class:`DriftSignal` (the agent's ``calibration.drift_*`` keys)."""

    allowance: float = 1.0  # k: shifts of the standardized score below this are ignored
    # k of the output score while it is watched against its (optimistic) training level:
    # above the 2.3 training stds unseen train-domain samples reach on the real-drift sets
    # (bench/results/drift_output_level.json)
    output_allowance: float = 3.0
    # ... and once re-baselined on the stream (no bias left: half the input score's k,
    # so a return to the training domain, about 1 std of the drifted entropy, is seen)
    output_allowance_stream: float = 0.5
    threshold: float = 20.0  # h: alarm when a cumulative sum passes it
    clip: float = 4.0  # standardized scores are clipped to [-clip, clip]
    hold: int = 1024  # samples after an alarm before the signal re-baselines
    baseline: int = 256  # samples the new level is estimated from


_INPUT, _OUTPUT = 0, 1  # score columns
NAMES = ("input", "output")


@dataclass
class DriftSignal:
    """Two-sided CUSUMs over the input novelty and (given ``output`` and ``model``) the
    output entropy of every stream sample (see module text)."""

    reference: DriftReference
    cfg: DriftConfig = field(default_factory=DriftConfig)
    output: OutputReference | None = None
    model: Callable[[np.ndarray], np.ndarray] | None = None  # logits of the deployed model
    # which integer model ``model`` runs: logits another engine computed with the same key
    # are the same, and :meth:`score` takes them instead of running it again
    model_key: ModelKey | None = None
    n: int = 0  # samples seen
    rescored: int = 0  # samples whose output score needed a pass of ``model`` of its own
    alarms: int = 0
    last_alarm: int | None = None
    change_point: int | None = None
    fired_by: str | None = None
    levels: list[tuple[float, float]] = field(default_factory=list)  # per score
    phase: str = "watch"  # "watch" | "hold" | "baseline"
    rebaselined: bool = False  # levels come from the stream (else from training)
    _up: list[float] = field(default_factory=lambda: [0.0, 0.0])
    _down: list[float] = field(default_factory=lambda: [0.0, 0.0])
    _up_zero: list[int] = field(default_factory=lambda: [0, 0])  # after the last 0
    _down_zero: list[int] = field(default_factory=lambda: [0, 0])
    _until: int = 0  # end of hold
    _collected: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.model is None:
            self.output = None
        out = self.output.level if self.output is not None else (0.0, 1.0)
        self.levels = [self.reference.level, out]

    @property
    def level(self) -> tuple[float, float]:
        """The input score's current level."""
        return self.levels[_INPUT]

    def score(
        self, X: np.ndarray, logits: np.ndarray | None = None, key: ModelKey | None = None
    ) -> np.ndarray:
        """Scores (N, 2) of a batch: input novelty, output entropy (NaN without one).
        ``logits`` of ``X`` that a model with ``key`` computed (the agent's inference) are
        reused when ``key`` is the scoring model's own; otherwise (a kept round, another
        bit-width, another bundle) the scoring model runs on ``X``."""
        out = np.full((len(X), 2), np.nan)
        if len(X):
            out[:, _INPUT] = self.reference.score(X)
            if self.model is not None:
                if logits is None or key is None or key != self.model_key:
                    logits = self.model(X)
                    self.rescored += len(X)
                out[:, _OUTPUT] = predictive_entropy(logits)
        return out

    def update(self, X: np.ndarray) -> list[int]:
        """Score a batch of samples (in stream order); the stream indices of alarms."""
        if len(X) == 0:
            return []
        return self.update_scores(self.score(X))

    def _allowance(self, j: int) -> float:
        if j == _OUTPUT:
            return (
                self.cfg.output_allowance_stream if self.rebaselined else self.cfg.output_allowance
            )
        return self.cfg.allowance

    def update_scores(self, scores: np.ndarray) -> list[int]:
        """Feed precomputed scores (N,) input novelty or (N, 2) as :meth:`score` gives
        them; the stream indices of alarms."""
        s2 = np.asarray(scores, np.float64)
        if s2.ndim == 1:
            s2 = np.stack([s2, np.full(len(s2), np.nan)], axis=1)
        fired: list[int] = []
        # Python floats, not numpy scalars: the same IEEE doubles, several times cheaper
        # per sample (the agent runs this on its inference thread, for every sample)
        rows = s2.tolist()
        i = 0
        while i < len(rows):
            if self.phase == "watch":
                i = self._watch(rows, i, fired)
            else:
                self._hold_or_baseline(rows[i])
                i += 1
        return fired

    def _hold_or_baseline(self, row: list[float]) -> None:
        """One sample after an alarm: hold, then collect the new baseline."""
        self.n += 1
        if self.phase == "hold":
            if self.n >= self._until:
                self.phase, self._collected = "baseline", []
            return
        self._collected.append(row)
        if len(self._collected) >= self.cfg.baseline:
            arr = np.array(self._collected)
            self.levels = [
                (float(arr[:, j].mean()), max(float(arr[:, j].std()), 1e-3))
                if np.all(np.isfinite(arr[:, j]))
                else self.levels[j]
                for j in range(2)
            ]
            self.rebaselined = True
            self._reset(self.n)
            self.phase = "watch"

    def _watch(self, rows: list[list[float]], i: int, fired: list[int]) -> int:
        """The CUSUMs over ``rows[i:]`` until an alarm (appended to ``fired``) or the
        end; the index of the next row. The two scores unrolled, the state in locals,
        ``max(0, s)`` and the clip as comparisons (the same values as min/max)."""
        c = self.cfg
        clip, h = c.clip, c.threshold
        (lo0, sd0), (lo1, sd1) = self.levels
        k0, k1 = self._allowance(_INPUT), self._allowance(_OUTPUT)
        out = self.output is not None
        up0, up1 = self._up
        dn0, dn1 = self._down
        uz0, uz1 = self._up_zero
        dz0, dz1 = self._down_zero
        n, end, isfinite = self.n, len(rows), math.isfinite
        hit = -1
        while i < end and hit < 0:
            a, b = rows[i]
            i += 1
            at = n  # this sample's stream index
            n += 1
            if isfinite(a):
                z = (a - lo0) / sd0
                z = -clip if z < -clip else clip if z > clip else z
                up0 = up0 + z - k0
                up0 = up0 if up0 > 0.0 else 0.0
                dn0 = dn0 - z - k0
                dn0 = dn0 if dn0 > 0.0 else 0.0
                if up0 == 0.0:
                    uz0 = n
                if dn0 == 0.0:
                    dz0 = n
                if up0 > h or dn0 > h:
                    hit = _INPUT
            if out and isfinite(b):
                z = (b - lo1) / sd1
                z = -clip if z < -clip else clip if z > clip else z
                up1 = up1 + z - k1
                up1 = up1 if up1 > 0.0 else 0.0
                dn1 = dn1 - z - k1
                dn1 = dn1 if dn1 > 0.0 else 0.0
                if up1 == 0.0:
                    uz1 = n
                if dn1 == 0.0:
                    dz1 = n
                if hit < 0 and (up1 > h or dn1 > h):
                    hit = _OUTPUT
        self.n = n
        self._up, self._down = [up0, up1], [dn0, dn1]
        self._up_zero, self._down_zero = [uz0, uz1], [dz0, dz1]
        if hit >= 0:
            up = self._up[hit] > h
            self.change_point = self._up_zero[hit] if up else self._down_zero[hit]
            self.fired_by = NAMES[hit]
            self.alarms += 1
            self.last_alarm = at
            fired.append(at)
            self.phase, self._until = "hold", at + 1 + c.hold
            self._reset(at + 1)
        return i

    def _reset(self, at: int) -> None:
        self._up, self._down = [0.0, 0.0], [0.0, 0.0]
        self._up_zero, self._down_zero = [at, at], [at, at]

    def status(self) -> dict[str, object]:
        """For the agent's status."""
        return {
            "samples": self.n,
            "alarms": self.alarms,
            "last_alarm": self.last_alarm,
            "change_point": self.change_point,
            "fired_by": self.fired_by,
            "phase": self.phase,
            "output_score": self.output is not None,
            "output_rescored": self.rescored,
            "cusum": [round(self._up[0], 3), round(self._down[0], 3)],
            "output_cusum": [round(self._up[1], 3), round(self._down[1], 3)],
            "level": [round(v, 4) for v in self.levels[_INPUT]],
            "output_level": [round(v, 4) for v in self.levels[_OUTPUT]],
        }
