"""The label-free statistics rung: the first, cheapest correction after a drift.

Forward passes only, numpy only. From the per-channel statistics of the stream's recent
samples, compared with those the bundle records from training, it corrects

(a) the input normalization: per channel, the mean and scale the engine subtracts and
    divides by before the input quantizer (float32, as the engine and
    :mod:`edge_agent.reference` compute), so that the stream's normalized samples have the
    training data's mean and standard deviation again (an offset or gain drift of a
    sensor is undone exactly);
(b) the int32 bias ``bias_q`` of every hidden conv/linear layer, in the accumulator's own
    scale (``s_w[o] * s_in``): layer by layer, with the corrections of the layers before
    it in place, ``bias_q[o] -= rint(stream mean - training mean)`` of the layer's
    accumulators (pre-activation, before requantization), so the mean accumulator of
    every channel lands within half an integer step of its training value. An integer
    change of an integer parameter: exact on the engine's grid. The last layer is left
    alone (its mean logits follow the class mix of the stream, which may change).

Public API (``bench/real_drift.py`` uses it as a method):

- :func:`record_statistics` ``(bundle, X, y=None)``: the extras a bundle records from its
  training samples ``X`` (as the model takes them): input mean/std per channel
  (``stats/input``), the mean accumulator of every channel of every hidden layer at every
  bit-width (``stats/<bits>/acc_mean/<layer>``), and with labels the drift signal's
  reference (:mod:`edge_agent.calibrate.drift_signal`). :func:`with_statistics` adds them.
- :func:`statistics_of` ``(bundle)``: the recorded :class:`Statistics`, else statistics
  computed on the device from the bundle's QCore anchors (``source == "anchors"``), else
  None (the rung is off) with the reason.
- :func:`propose` ``(scratch, stats, X)``: a :class:`Correction` for the scratch engine's
  active model from stream samples ``X``; it leaves the correction applied on ``scratch``.
- :func:`run_stats_round` ``(engine, scratch, stats, X, labelled, cfg)``: propose, gate
  on labelled stream samples the correction never saw, apply to ``engine`` when kept;
  returns a :class:`edge_agent.calibrate.flip_round.RoundResult` with ``rung="stats"``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import STATS_INPUT as EXTRA_INPUT
from edge_agent.bundle import WEIGHTED_OPS, Bundle, acc_mean_key
from edge_agent.calibrate import gate
from edge_agent.calibrate.drift_signal import DriftReference
from edge_agent.calibrate.flip_features import conv_patch_stats
from edge_agent.calibrate.flip_round import RoundResult
from edge_agent.calibrate.qcore_miss import EXTRA_X, EXTRA_Y
from edge_agent.engine.engine import Engine
from edge_agent.engine.reference import conv_geometry

log = logging.getLogger(__name__)

_MIN_RATIO = 0.01  # a channel's scale may shrink to this share of its training scale
acc_key = acc_mean_key  # bundle extras key of one hidden layer's training mean accumulators


@dataclass(frozen=True)
class Statistics:
    """Training statistics the rung corrects towards."""

    norm_mean: np.ndarray  # (C,) the normalization they were recorded under
    norm_std: np.ndarray
    in_mean: np.ndarray  # (C,) raw input mean and std per channel
    in_std: np.ndarray
    acc_mean: dict[int, list[np.ndarray]]  # bits -> per hidden layer (O,) float64
    source: str  # "bundle" or "anchors"

    @property
    def target(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the training input after its normalization."""
        return (self.in_mean - self.norm_mean) / self.norm_std, self.in_std / self.norm_std


@dataclass(frozen=True)
class Correction:
    """New input normalization and hidden-layer biases of one bit-width's model."""

    mean: np.ndarray  # (C,) float32
    std: np.ndarray  # (C,) float32
    biases: dict[int, np.ndarray]  # layer -> (O,) int32 bias_q
    moved: dict[int, int]  # layer -> sum of |bias change| in integer steps


def channel_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (float64) over samples and positions."""
    a = np.asarray(X, np.float64)
    a = np.moveaxis(a.reshape(a.shape[0], a.shape[1], -1), 1, 0).reshape(a.shape[1], -1)
    return a.mean(axis=1), a.std(axis=1)


def hidden_layers(bundle: Bundle) -> list[int]:
    """Indices of the weighted layers the rung corrects (all but the last)."""
    return list(range(len(bundle.weighted_ops()) - 1))


def accumulator_means(
    engine: Engine, bundle: Bundle, X: np.ndarray, layers: list[int]
) -> dict[int, np.ndarray]:
    """Mean int32 accumulator (O,) of each of ``layers`` over samples and positions, from
    one traced pass of the engine's active model (mean input patch times the weights,
    plus the bias: the mean of a linear function)."""
    _, inputs = engine.trace(X)
    ops = [op for op in bundle.arch["layers"] if op["op"] in WEIGHTED_OPS]
    out = {}
    for i in layers:
        x = inputs[i].astype(np.float64)
        if ops[i]["op"] == "linear":
            patch = x.mean(axis=0)
        else:  # the mean of per-sample mean patches is the mean sample's patch
            patch = conv_patch_stats(x.mean(axis=0, keepdims=True), *conv_geometry(ops[i]))[0][0]
        q = engine.layer_codes(i).astype(np.float64)
        out[i] = q @ patch + engine.layer_bias(i).astype(np.float64)
    return out


def record_statistics(
    bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, batch: int = 256
) -> dict[str, np.ndarray]:
    """The statistics extras of ``bundle`` from its training samples ``X`` (see module)."""
    X = np.asarray(X, np.float32)
    mean, std = channel_stats(X)
    out = {
        EXTRA_INPUT: np.stack(
            [bundle.norm_mean.astype(np.float64), bundle.norm_std.astype(np.float64), mean, std]
        )
    }
    layers = hidden_layers(bundle)
    for bits in bundle.quant:
        eng = Engine(bundle, bits=bits, scratch=True)
        sums = {i: np.zeros(bundle.quant[bits].layers[i].out_features) for i in layers}
        for s in range(0, len(X), batch):  # batched: traces hold every layer's input
            part = X[s : s + batch]
            for i, m in accumulator_means(eng, bundle, part, layers).items():
                sums[i] += m * len(part)
        out.update({acc_key(bits, i): v / len(X) for i, v in sums.items()})
    if y is not None:
        out.update(DriftReference.fit(X, y, bundle.num_classes).to_extras())
    return out


def with_statistics(bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None) -> Bundle:
    """``bundle`` with :func:`record_statistics` of ``X`` in its extras."""
    return dataclasses.replace(bundle, extras={**bundle.extras, **record_statistics(bundle, X, y)})


def _from_extras(bundle: Bundle, extras: dict[str, np.ndarray], source: str) -> Statistics | None:
    inp = extras.get(EXTRA_INPUT)
    c = bundle.input_shape[0]
    if inp is None or np.shape(inp) != (4, c):
        return None
    acc: dict[int, list[np.ndarray]] = {}
    for bits, quant in bundle.quant.items():
        layers = []
        for i in hidden_layers(bundle):
            a = extras.get(acc_key(bits, i))
            if a is None or a.shape != (quant.layers[i].out_features,):
                return None
            layers.append(np.asarray(a, np.float64))
        acc[bits] = layers
    rows = np.asarray(inp, np.float64)
    if not (np.all(np.isfinite(rows)) and np.all(rows[1] > 0)):
        return None
    return Statistics(rows[0], rows[1], rows[2], rows[3], acc, source)


def statistics_of(bundle: Bundle) -> tuple[Statistics | None, str]:
    """The bundle's recorded statistics, else those of its QCore anchors, else None;
    with a sentence saying which."""
    stats = _from_extras(bundle, bundle.extras, "bundle")
    if stats is not None:
        return stats, "training statistics recorded in the bundle"
    X = bundle.extras.get(EXTRA_X)
    if X is None or len(X) < 2:
        return None, "the bundle records no training statistics and has no QCore anchors"
    y = bundle.extras.get(EXTRA_Y)
    extras = record_statistics(bundle, np.asarray(X, np.float32), y)
    return (
        _from_extras(bundle, extras, "anchors"),
        f"statistics computed from the bundle's {len(X)} QCore anchors (it records none)",
    )


def propose(scratch: Engine, bundle: Bundle, stats: Statistics, X: np.ndarray) -> Correction:
    """The correction for ``scratch``'s active model from stream samples ``X``; applied to
    ``scratch`` on return (its other parameters are the live model's)."""
    mu_n, sd_n = stats.target
    m_s, sd_s = channel_stats(X)
    floor = _MIN_RATIO * stats.in_std  # a dead channel must not divide by ~0
    std = np.maximum(sd_s, floor) / sd_n
    mean = m_s - mu_n * std
    scratch.swap_params(mean=mean.astype(np.float32), std=std.astype(np.float32))
    biases: dict[int, np.ndarray] = {}
    moved: dict[int, int] = {}
    target = stats.acc_mean[scratch.bits]
    for i in hidden_layers(bundle):  # in order: each sees the corrections before it
        acc = accumulator_means(scratch, bundle, X, [i])[i]
        delta = np.rint(acc - target[i]).astype(np.int64)
        new = np.clip(scratch.layer_bias(i).astype(np.int64) - delta, -(2**31) + 1, 2**31 - 1)
        try:
            scratch.swap_params(biases={i: new.astype(np.int32)})
        except ValueError as exc:  # a fused max pool whose sums could wrap: leave the layer
            log.info("statistics rung: layer %d bias not corrected (%s)", i, exc)
            continue
        biases[i] = new.astype(np.int32)
        moved[i] = int(np.abs(delta).sum())
    return Correction(mean.astype(np.float32), std.astype(np.float32), biases, moved)


@dataclass(frozen=True)
class StatsConfig:
    """Gate knobs (the agent's ``calibration`` keys)."""

    tolerance: float = 0.0
    min_labelled: int = 4


def sync(scratch: Engine, engine: Engine, layers: list[int]) -> None:
    """Give ``scratch`` the live engine's normalization and hidden biases at its bit-width
    (its weights are synced by the caller)."""
    mean, std = engine.normalization()
    scratch.swap_params(mean=mean, std=std, biases={i: engine.layer_bias(i) for i in layers})


def run_stats_round(
    engine: Engine,
    scratch: Engine,
    bundle: Bundle,
    stats: Statistics,
    X: np.ndarray,
    labelled: tuple[np.ndarray, np.ndarray],
    cfg: StatsConfig | None = None,
    version_of: object = None,
) -> tuple[RoundResult, Correction | None]:
    """One statistics round: propose from the unlabelled stream samples ``X`` on
    ``scratch`` (holding the live model), gate on ``labelled`` (inputs, labels: stream
    samples the correction never used), and swap the correction into ``engine`` if kept.

    The gate is :mod:`edge_agent.calibrate.gate`'s, stricter: at least one more labelled
    sample right, and a higher soft accuracy (:func:`gate.guard`). The bundle's pre-drift
    anchors take no part: a correction for drifted inputs is meant to change what
    undrifted ones give.
    ``version_of(correction)``, if given, names the version the engine reports (that of
    the bundle the agent will save)."""
    cfg = cfg or StatsConfig()
    t0 = time.thread_time()
    corr = propose(scratch, bundle, stats, X)
    Xl, yl = labelled
    before = engine.predict_logits(Xl) if len(yl) else np.zeros((0, engine.num_classes))
    after = scratch.predict_logits(Xl) if len(yl) else before
    # a correction must get at least one more labelled sample right: a tie keeps the model
    # (a kept correction moves the anchors the flip rounds after it pull towards)
    gain = -0.5 / max(1, len(yl))
    decision = gate.decide(
        gate.hits(before, yl),
        gate.hits(after, yl),
        len(yl),
        "accuracy",
        min(cfg.tolerance, 0.0) + gain,
        cfg.min_labelled,
    )
    empty = (np.zeros((0, engine.num_classes)),) * 2 + (np.zeros(0, np.int64),)
    decision = gate.guard(decision, (before, after, yl), empty)
    version = None
    if decision.accepted:
        name = version_of(corr) if callable(version_of) else None
        version = engine.swap_params(corr.mean, corr.std, corr.biases, version=name)
    log.info(
        "statistics round on %d samples: bias steps %s, %s",
        len(X),
        corr.moved,
        "kept" if version else "rolled back",
    )
    result = RoundResult(
        decision,
        int(sum(corr.moved.values())),
        1,
        float("nan"),
        float("nan"),
        time.thread_time() - t0,
        version,
        rung="stats",
    )
    return result, corr if version else None
