"""A label-free drift signal: does the stream still look like the training data?

Public API (``bench/real_drift.py`` and the agent's controller use it):

- the scores' references (:mod:`edge_agent.calibrate.drift_reference`):
  :class:`DriftReference` (input side) and :class:`OutputReference` (output side).
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

from edge_agent.calibrate.drift_reference import (
    DriftReference,
    OutputReference,
    predictive_entropy,
)
from edge_agent.engine.engine import ModelKey


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
