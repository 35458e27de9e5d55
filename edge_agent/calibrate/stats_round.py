"""One statistics round: propose an AdaBN-form correction on a scratch engine, gate it on
labelled stream samples, and put it into the live engine if kept (docs/method.md,
section 5; the correction itself is :mod:`edge_agent.calibrate.stats_rung`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.calibrate import gate
from edge_agent.calibrate.flip_round import RoundResult
from edge_agent.calibrate.stats_rung import Correction, Statistics, apply, propose
from edge_agent.engine.engine import Engine

log = logging.getLogger(__name__)
LogitsFn = Callable[[np.ndarray], np.ndarray]  # (N, *shape) float32 -> (N, classes) logits


@dataclass(frozen=True)
class StatsConfig:
    """Gate knob (the agent's ``calibration.min_holdout``)."""

    min_labelled: int = 4


def sync(scratch: Engine, engine: Engine, layers: list[int]) -> None:
    """Give ``scratch`` the live engine's model at every bit-width (codes, normalization,
    hidden biases and multipliers) and its active bit-width."""
    for bits in engine.available_bits:
        mean, std = engine.normalization(bits)
        scratch.swap_weights(engine.codes(bits), bits=bits)
        scratch.swap_params(
            mean,
            std,
            {i: engine.layer_bias(i, bits) for i in layers},
            bits=bits,
            requant={i: engine.layer_requant(i, bits) for i in layers},
        )
    scratch.set_bits(engine.bits)


def vouch(
    before: np.ndarray, after: np.ndarray, y: np.ndarray, min_labelled: int
) -> gate.GateDecision:
    """The statistics round's verdict from the live (``before``) and corrected (``after``)
    logits of labelled samples ``y``: kept when there are at least ``min_labelled`` and
    the correction wins at least as many of them (right where the live model is wrong)
    as it loses."""
    won = int(np.sum((after.argmax(axis=1) == y) & (before.argmax(axis=1) != y)))
    lost = int(np.sum((before.argmax(axis=1) == y) & (after.argmax(axis=1) != y)))
    acc = gate.hits(before, y), gate.hits(after, y)
    if len(y) < min_labelled:
        why, ok = f"only {len(y)} labelled samples (need {min_labelled})", False
    elif lost > won:
        why, ok = f"loses {lost} labelled samples, wins {won}", False
    else:
        why, ok = f"wins {won} labelled samples, loses {lost}", True
    return gate.GateDecision(ok, "accuracy", *acc, len(y), why)


def run_stats_round(
    engine: Engine,
    scratch: Engine,
    bundle: Bundle,
    stats: Statistics,
    X: np.ndarray,
    labelled: tuple[np.ndarray, np.ndarray],
    cfg: StatsConfig | None = None,
    version_of: object = None,
    predictors: tuple[LogitsFn, LogitsFn] | None = None,
) -> tuple[RoundResult, Correction | None]:
    """One statistics round: propose from the unlabelled stream samples ``X`` on
    ``scratch`` (holding the live model: :func:`sync`), gate on ``labelled`` (inputs,
    labels: distinct stream samples, their labels never used by the correction) at the
    active bit-width, and put the correction into every bit-width of ``engine`` if kept.

    The gate (:func:`vouch`): at least ``min_labelled`` labelled samples, and the
    correction gets at least as many of them right that the live model gets wrong as the
    other way round. A tie keeps it: the round runs only after a drift alarm, and a
    re-estimation of the statistics is what that calls for unless labels say otherwise.
    The bundle's pre-drift anchors take no part: a correction for drifted inputs is meant
    to change what undrifted ones give.
    ``version_of(correction)``, if given, names the version the engine reports (that of
    the bundle the agent will save). ``predictors``, if given, are the logits functions
    the gate compares (before, after) instead of ``engine``'s and ``scratch``'s (the
    domain-routed models, :mod:`edge_agent.calibrate.routed`)."""
    cfg = cfg or StatsConfig()
    t0 = time.thread_time()
    corr = propose(scratch, bundle, stats, X)
    Xl, yl = labelled
    old, new = predictors or (engine.predict_logits, scratch.predict_logits)
    before = old(Xl) if len(yl) else np.zeros((0, engine.num_classes))
    after = new(Xl) if len(yl) else before
    decision = vouch(before, after, yl, cfg.min_labelled)
    version = None
    if decision.accepted:
        name = version_of(corr) if callable(version_of) else None
        version = apply(engine, corr, version=name)
    log.info(
        "statistics round on %d samples: bias steps %s, %s (%s)",
        len(X),
        corr.moved,
        "kept" if version else "rolled back",
        decision.reason,
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
