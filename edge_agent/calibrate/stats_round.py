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
    """Gate knobs (the agent's ``calibration`` keys)."""

    tolerance: float = 0.0
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
    labels: stream samples the correction never used) at the active bit-width, and put
    the correction into every bit-width of ``engine`` if kept.

    The gate is :mod:`edge_agent.calibrate.gate`'s, stricter: at least one more labelled
    sample right, and a higher soft accuracy (:func:`gate.guard`). The bundle's pre-drift
    anchors take no part: a correction for drifted inputs is meant to change what
    undrifted ones give.
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
        version = apply(engine, corr, version=name)
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
