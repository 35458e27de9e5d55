"""The label-free statistics rung: the first, cheapest correction after a drift.

Forward passes only, numpy only; AdaBN (batch-norm statistics re-estimated on the
target domain) in integer form. From the per-channel statistics of the stream's recent
samples, compared with those the bundle records from training, it corrects

(a) the input normalization: per channel, the mean and scale the engine subtracts and
    divides by before the input quantizer (float32, as the engine and
    :mod:`edge_agent.reference` compute), so that the stream's normalized samples have the
    training data's mean and standard deviation again (an offset or gain drift of a
    sensor is undone exactly), with a negative scale for a channel whose sign flipped
    (:mod:`edge_agent.calibrate.stats_signs`: a watch on the other wrist);
(b) every hidden conv/linear layer, per output channel, shift AND scale of its int32
    accumulators (pre-activation, before requantization): layer by layer, with the
    corrections of the layers before it in place, the scale ratio
    ``r = training std / stream std`` goes into the channel's fixed-point requantization
    multiplier (``m0 * 2^-shift`` times ``r``, re-quantized) and the shift into its bias
    (``bias_q += rint(training mean / r - stream mean)``), so the requantized output of
    every channel has its training mean and spread again, within one output step. Integer
    parameters replaced by integer parameters: exact on the engine's grid. The last
    layer is left alone (its mean logits follow the class mix of the stream).

One :class:`Correction` holds the correction of every bit-width of the bundle (the input
normalization is shared; each bit-width's layers get their own, from the same samples),
and :func:`apply` / :func:`corrected_bundle` are the only places it is put into an engine
or a bundle: a bit-width switch or a restart from the saved bundle sees the same model.
The maths: ``docs/method.md`` section 5.

Public API (``bench/real_drift.py`` uses it as a method):

- :func:`record_statistics` ``(bundle, X, y=None)``: the extras a bundle records from its
  training samples ``X`` (as the model takes them): input mean/std per channel
  (``stats/input``), the mean and standard deviation of every channel's accumulators of
  every hidden layer at every bit-width (``stats/<bits>/acc_mean|acc_std/<layer>``), the
  input channel correlations (``stats/input_corr``), and the drift signal's references
  (:mod:`edge_agent.calibrate.drift_signal`).
  :func:`with_statistics` adds them.
- :func:`statistics_of` ``(bundle)``: the recorded :class:`Statistics`, else statistics
  computed on the device from the bundle's QCore anchors (``source == "anchors"``), else
  None (the rung is off) with the reason.
- :func:`propose` ``(scratch, bundle, stats, X)``: a :class:`Correction` of every
  bit-width from stream samples ``X``; it leaves the correction applied on ``scratch``.
- :func:`run_stats_round` ``(engine, scratch, bundle, stats, X, labelled, cfg)``: propose,
  gate on labelled stream samples at the active bit-width, apply to ``engine`` (every
  bit-width) when kept; returns a :class:`edge_agent.calibrate.flip_round.RoundResult`
  with ``rung="stats"``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import INPUT_CORRECTED, WEIGHTED_OPS, Bundle, acc_mean_key, acc_std_key
from edge_agent.bundle import STATS_INPUT as EXTRA_INPUT
from edge_agent.calibrate.drift_reference import DriftReference, OutputReference
from edge_agent.calibrate.qcore_miss import EXTRA_X, EXTRA_Y
from edge_agent.calibrate.stats_signs import EXTRA_CORR, channel_rows, channel_signs, input_corr
from edge_agent.engine.engine import Engine
from edge_agent.engine.reference import layer_patches
from kernels.plan.fixedpoint import quantize_multipliers

log = logging.getLogger(__name__)

_MIN_RATIO = 0.01  # a channel's scale may shrink to this share of its training scale
MAX_RATIO = 8.0  # a layer channel's spread is rescaled by at most this factor either way
_MIN_SPREAD = 0.5  # accumulator spreads below half an integer step are not rescaled
_ROWS = 1 << 14  # patch rows per product: bounds the memory of one moments pass
acc_key = acc_mean_key  # bundle extras key of one hidden layer's training mean accumulators


@dataclass(frozen=True)
class Statistics:
    """Training statistics the rung corrects towards."""

    norm_mean: np.ndarray  # (C,) the normalization they were recorded under
    norm_std: np.ndarray
    in_mean: np.ndarray  # (C,) raw input mean and std per channel
    in_std: np.ndarray
    acc_mean: dict[int, list[np.ndarray]]  # bits -> per hidden layer (O,) float64
    acc_std: dict[int, list[np.ndarray]] | None  # the same, spreads (None: shift only)
    source: str  # "bundle" or "anchors"
    in_corr: np.ndarray | None = None  # (C, C) input channel correlations (None: no signs)

    @property
    def target(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std of the training input after its normalization."""
        return (self.in_mean - self.norm_mean) / self.norm_std, self.in_std / self.norm_std


@dataclass(frozen=True)
class LayerFix:
    """One hidden layer's corrected integer parameters at one bit-width."""

    bias: np.ndarray  # (O,) int32 bias_q
    m0: np.ndarray  # (O,) int32 requantization multiplier mantissa
    shift: np.ndarray  # (O,) int32


@dataclass(frozen=True)
class Correction:
    """New input normalization (shared) and hidden-layer parameters of every bit-width."""

    mean: np.ndarray  # (C,) float32
    std: np.ndarray  # (C,) float32
    layers: dict[int, dict[int, LayerFix]]  # bits -> layer -> fix
    moved: dict[int, int]  # active bit-width: layer -> sum of |bias change| in steps

    @property
    def biases(self) -> dict[int, dict[int, np.ndarray]]:
        """bits -> layer -> new int32 bias_q."""
        return {b: {i: f.bias for i, f in fix.items()} for b, fix in self.layers.items()}


@dataclass(frozen=True)
class Moments:
    """Count, sum and sum of squares (float64) of each channel's accumulators."""

    n: float
    s1: np.ndarray
    s2: np.ndarray

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.s1 + other.s1, self.s2 + other.s2)

    @property
    def mean(self) -> np.ndarray:
        """Per-channel mean."""
        return self.s1 / max(self.n, 1.0)

    @property
    def std(self) -> np.ndarray:
        """Per-channel population standard deviation."""
        m = self.mean
        return np.sqrt(np.maximum(self.s2 / max(self.n, 1.0) - m * m, 0.0))


def channel_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (float64) over samples and positions."""
    a = channel_rows(X)
    return a.mean(axis=1), a.std(axis=1)


def hidden_layers(bundle: Bundle) -> list[int]:
    """Indices of the weighted layers the rung corrects (all but the last)."""
    return list(range(len(bundle.weighted_ops()) - 1))


def accumulator_moments(
    engine: Engine, bundle: Bundle, X: np.ndarray, layers: Iterable[int]
) -> dict[int, Moments]:
    """:class:`Moments` of every channel's int32 accumulators of each of ``layers`` over
    samples and output positions, from one traced pass of the engine's active model (the
    layer inputs times the weights plus the bias, in float64: exact for int32 sums)."""
    _, inputs = engine.trace(X)
    ops = [op for op in bundle.arch["layers"] if op["op"] in WEIGHTED_OPS]
    out = {}
    for i in layers:
        q = engine.layer_codes(i).astype(np.float64)
        b = engine.layer_bias(i).astype(np.float64)
        total = Moments(0.0, np.zeros(len(q)), np.zeros(len(q)))
        per = max(1, _ROWS // max(1, int(np.prod(inputs[i].shape[2:]))))
        for s in range(0, len(X), per):  # bounded batches: patches are K times the input
            cols = layer_patches(ops[i], inputs[i][s : s + per]).reshape(-1, q.shape[1])
            acc = cols.astype(np.float64) @ q.T + b
            total = total + Moments(float(len(acc)), acc.sum(axis=0), (acc * acc).sum(axis=0))
        out[i] = total
    return out


def accumulator_means(
    engine: Engine, bundle: Bundle, X: np.ndarray, layers: list[int]
) -> dict[int, np.ndarray]:
    """Mean int32 accumulator (O,) of each of ``layers`` (:func:`accumulator_moments`)."""
    return {i: m.mean for i, m in accumulator_moments(engine, bundle, X, layers).items()}


def record_statistics(
    bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None, batch: int = 256
) -> dict[str, np.ndarray]:
    """The statistics extras of ``bundle`` from its training samples ``X`` (see module)."""
    X = np.asarray(X, np.float32)
    mean, std = channel_stats(X)
    out = {
        EXTRA_INPUT: np.stack(
            [bundle.norm_mean.astype(np.float64), bundle.norm_std.astype(np.float64), mean, std]
        ),
        EXTRA_CORR: input_corr(X),
    }
    layers = hidden_layers(bundle)
    for bits in bundle.quant:
        eng = Engine(bundle, bits=bits, scratch=True)
        sums: dict[int, Moments] = {}
        for s in range(0, len(X), batch):  # batched: traces hold every layer's input
            for i, m in accumulator_moments(eng, bundle, X[s : s + batch], layers).items():
                sums[i] = sums[i] + m if i in sums else m
        out.update({acc_key(bits, i): m.mean for i, m in sums.items()})
        out.update({acc_std_key(bits, i): m.std for i, m in sums.items()})
    if y is not None:
        out.update(DriftReference.fit(X, y, bundle.num_classes).to_extras())
    out.update(OutputReference.fit(bundle, X).to_extras())
    return out


def with_statistics(bundle: Bundle, X: np.ndarray, y: np.ndarray | None = None) -> Bundle:
    """``bundle`` with :func:`record_statistics` of ``X`` in its extras."""
    return dataclasses.replace(bundle, extras={**bundle.extras, **record_statistics(bundle, X, y)})


def _layer_arrays(
    bundle: Bundle, extras: dict[str, np.ndarray], key: object
) -> dict[int, list[np.ndarray]] | None:
    out: dict[int, list[np.ndarray]] = {}
    for bits, quant in bundle.quant.items():
        layers = []
        for i in hidden_layers(bundle):
            a = extras.get(key(bits, i))  # type: ignore[operator]
            if a is None or np.shape(a) != (quant.layers[i].out_features,):
                return None
            layers.append(np.asarray(a, np.float64))
        out[bits] = layers
    return out


def _from_extras(bundle: Bundle, extras: dict[str, np.ndarray], source: str) -> Statistics | None:
    inp = extras.get(EXTRA_INPUT)
    c = bundle.input_shape[0]
    if inp is None or np.shape(inp) != (4, c):
        return None
    acc = _layer_arrays(bundle, extras, acc_key)
    if acc is None:
        return None
    spread = _layer_arrays(bundle, extras, acc_std_key)
    rows = np.asarray(inp, np.float64)
    if not (np.all(np.isfinite(rows)) and np.all(rows[1] > 0)):
        return None
    # signs only from training data: the anchors are the hard samples (their correlations
    # flipped a wrong watch_side channel)
    got = extras.get(EXTRA_CORR) if source == "bundle" else None
    corr = None if got is None or np.shape(got) != (c, c) else np.asarray(got, np.float64)
    return Statistics(rows[0], rows[1], rows[2], rows[3], acc, spread, source, corr)


def statistics_of(bundle: Bundle) -> tuple[Statistics | None, str]:
    """The bundle's recorded statistics, else those of its QCore anchors, else None;
    with a sentence saying which. A bundle that records the means but not the spreads
    (made before the rung rescaled) takes the spreads from its anchors."""
    stats = _from_extras(bundle, bundle.extras, "bundle")
    X = bundle.extras.get(EXTRA_X)
    anchors = X is not None and len(X) >= 2
    if stats is not None and (stats.acc_std is not None or not anchors):
        why = "training statistics recorded in the bundle"
        return stats, why if stats.acc_std is not None else why + " (no spreads: shift only)"
    if not anchors:
        return None, "the bundle records no training statistics and has no QCore anchors"
    assert X is not None
    extras = record_statistics(bundle, np.asarray(X, np.float32), bundle.extras.get(EXTRA_Y))
    if stats is not None:
        return (
            dataclasses.replace(stats, acc_std=_layer_arrays(bundle, extras, acc_std_key)),
            f"training statistics recorded in the bundle, spreads from its {len(X)} QCore anchors",
        )
    return (
        _from_extras(bundle, extras, "anchors"),
        f"statistics computed from the bundle's {len(X)} QCore anchors (it records none)",
    )


def _layer_fix(
    scratch: Engine, i: int, mom: Moments, mean_t: np.ndarray, std_t: np.ndarray | None
) -> tuple[LayerFix, np.ndarray]:
    """Layer ``i``'s new parameters from its stream moments (see module); and the bias
    change in integer steps."""
    m0, shift = scratch.layer_requant(i)
    ratio = np.ones(len(mean_t))
    if std_t is not None:
        sd_s = mom.std
        ok = (sd_s >= _MIN_SPREAD) & (std_t >= _MIN_SPREAD) & (m0 > 0)
        ratio[ok] = np.clip(std_t[ok] / sd_s[ok], 1.0 / MAX_RATIO, MAX_RATIO)
        mult = m0.astype(np.float64) * np.exp2(-shift.astype(np.float64)) * ratio
        m0_new, shift_new = quantize_multipliers(np.where(ok, mult, 1.0))
        m0, shift = np.where(ok, m0_new, m0), np.where(ok, shift_new, shift)
        # the multiplier actually used (rounded): the bias is solved for it
        ratio = np.where(ok, m0 * np.exp2(-shift.astype(np.float64)) / (mult / ratio), 1.0)
    delta = np.rint(mean_t / ratio - mom.mean).astype(np.int64)
    new = np.clip(scratch.layer_bias(i).astype(np.int64) + delta, -(2**31) + 1, 2**31 - 1)
    fix = LayerFix(new.astype(np.int32), m0.astype(np.int32), shift.astype(np.int32))
    return fix, delta


def _propose_bits(
    scratch: Engine, bundle: Bundle, stats: Statistics, X: np.ndarray
) -> tuple[dict[int, LayerFix], dict[int, int]]:
    """The layer fixes of ``scratch``'s active bit-width, applied on it in order."""
    fixes: dict[int, LayerFix] = {}
    moved: dict[int, int] = {}
    bits = scratch.bits
    for i in hidden_layers(bundle):  # in order: each sees the corrections before it
        mom = accumulator_moments(scratch, bundle, X, [i])[i]
        std_t = None if stats.acc_std is None else stats.acc_std[bits][i]
        fix, delta = _layer_fix(scratch, i, mom, stats.acc_mean[bits][i], std_t)
        try:
            scratch.swap_params(biases={i: fix.bias}, requant={i: (fix.m0, fix.shift)})
        except ValueError as exc:  # a fused max pool whose sums could wrap: leave the layer
            log.info("statistics rung: %d-bit layer %d not corrected (%s)", bits, i, exc)
            continue
        fixes[i] = fix
        moved[i] = int(np.abs(delta).sum())
    return fixes, moved


def dead_channels(stats: Statistics, std: np.ndarray) -> np.ndarray:
    """(C,) bool: the channels an input scale ``std`` of :func:`propose` treats as dead
    (the stream's spread was at the floor, a hundredth of the training spread)."""
    return np.abs(std) <= _MIN_RATIO * stats.norm_std * (1 + 1e-3)


def propose(scratch: Engine, bundle: Bundle, stats: Statistics, X: np.ndarray) -> Correction:
    """The correction of every bit-width of ``scratch`` from stream samples ``X``; applied
    to ``scratch`` on return, its active bit-width unchanged (its other parameters are
    the live model's: :func:`sync`)."""
    mu_n, sd_n = stats.target
    m_s, sd_s = channel_stats(X)
    floor = _MIN_RATIO * stats.in_std  # a dead channel must not divide by ~0
    # a negative scale turns a channel worn the other way round back (stats_signs)
    sign = (
        1.0
        if stats.in_corr is None
        else channel_signs(stats.in_corr, stats.in_mean, stats.in_std, X)
    )
    std = (sign * np.maximum(sd_s, floor) / sd_n).astype(np.float32)
    mean = (m_s - mu_n * std).astype(np.float32)
    active = scratch.bits
    layers: dict[int, dict[int, LayerFix]] = {}
    moved: dict[int, int] = {}
    for bits in [*(b for b in scratch.available_bits if b != active), active]:
        scratch.set_bits(bits)
        scratch.swap_params(mean=mean, std=std)
        layers[bits], m = _propose_bits(scratch, bundle, stats, X)
        if bits == active:
            moved = m
    return Correction(mean, std, layers, moved)


def apply(engine: Engine, corr: Correction, version: str | None = None) -> str:
    """Put ``corr`` into every bit-width of ``engine`` (the active one last); the active
    model's new version."""
    out = ""
    for bits in [*(b for b in corr.layers if b != engine.bits), engine.bits]:
        fix = corr.layers.get(bits, {})
        out = engine.swap_params(
            corr.mean,
            corr.std,
            {i: f.bias for i, f in fix.items()},
            bits=bits,
            version=version,
            requant={i: (f.m0, f.shift) for i, f in fix.items()},
        )
    return out


def corrected_bundle(bundle: Bundle, corr: Correction) -> Bundle:
    """``bundle`` with ``corr`` in every bit-width (what the agent saves and restarts from)."""
    quant = dict(bundle.quant)
    for bits, fix in corr.layers.items():
        q = quant[bits]
        layers = [
            dataclasses.replace(lq, bias_q=fix[i].bias, m0=fix[i].m0, shift=fix[i].shift)
            if i in fix
            else lq
            for i, lq in enumerate(q.layers)
        ]
        quant[bits] = dataclasses.replace(q, layers=layers)
    return dataclasses.replace(
        bundle,
        norm_mean=corr.mean,
        norm_std=corr.std,
        meta={**bundle.meta, INPUT_CORRECTED: True},
        quant=quant,
    )
