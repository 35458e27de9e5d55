"""One bit-flipping recalibration round: propose flips, apply within budget, gate, swap.

A round works on the calibration data the agent holds (QCore buffer plus labelled recent
samples): part of it drives the flips, a held-out part decides through the gate whether
the new integer weights replace the engine's. The bundle's own QCore (pre-drift training
samples with labels) joins every round as *anchors*: they define the class prototypes of
the hidden layers' task step, count in the loss the flips must lower, and guard the gate
against forgetting. A step whose flips do not lower the loss is retried with half the
budget. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge_agent.bundle import RESIDUAL_SCALE, Bundle, residual_key
from edge_agent.calibrate import gate
from edge_agent.calibrate.flip_eval import first_changed, suffix_pass
from edge_agent.calibrate.flip_features import (
    FEATURES,
    LayerTrace,
    layer_feature,
    layer_trace,
    layer_traces,
)
from edge_agent.calibrate.flip_net import FlipNet
from edge_agent.calibrate.qcore_miss import EXTRA_X, EXTRA_Y
from edge_agent.engine.engine import Engine
from kernels.plan.packing import qrange, unpack_rows

log = logging.getLogger(__name__)

# per layer: action in {-1, 0, +1} (0: not a candidate) and a score to rank candidates;
# a proposer scores each layer from its own features (a round asks again only for the
# layers whose features changed)
Proposal = list[tuple[np.ndarray, np.ndarray]]
Proposer = Callable[[list[np.ndarray]], Proposal]
# the training domain's labelled samples and what routes an engine's predictions
# (engine -> logits function) for the routed check of :func:`gate.guard_base`
BaseCheck = tuple[np.ndarray, np.ndarray, Callable[[Engine], Callable[[np.ndarray], np.ndarray]]]


@dataclass(frozen=True)
class FlipConfig:
    """Knobs of a round (all in the agent's config, ``[calibration]``; ``range``: the
    values the config accepts)."""

    # flips per step, as a fraction of all weights
    budget_fraction: float = field(default=0.02, metadata={"range": (0.0, 1.0)})
    # network confidence needed for a flip
    threshold: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    # propose/apply steps per round (a failed step halves the budget)
    iterations: int = field(default=4, metadata={"range": (1, 1000)})
    holdout_fraction: float = field(default=0.3, metadata={"range": (0.05, 0.95)})
    min_holdout: int = field(default=4, metadata={"range": (1, 100_000)})
    # held-out score may drop by this much and still pass
    tolerance: float = field(default=0.0, metadata={"range": (0.0, 1.0)})
    # accuracy the pre-drift anchors may lose and still pass
    anchor_tolerance: float = field(default=0.05, metadata={"range": (0.0, 1.0)})


@dataclass(frozen=True)
class RoundResult:
    """What one round did."""

    decision: gate.GateDecision
    flips: int  # weights changed by the kept candidate (0 when rolled back)
    iterations: int
    loss_before: float
    loss_after: float
    cpu_seconds: float
    version: str | None  # new engine model version when accepted
    rung: str = "flip"  # "flip", "stats" (stats_rung) or "label" (label_rung)


def network_proposer(net: FlipNet, threshold: float) -> Proposer:
    """The flipping network: its action where its confidence reaches ``threshold``."""

    def propose(feats: list[np.ndarray]) -> Proposal:
        out = []
        for f in feats:
            action, conf = net.propose(f)
            out.append((np.where(conf >= threshold, action, 0).astype(np.int8), conf))
        return out

    return propose


def greedy_proposer() -> Proposer:
    """No network: follow each weight's local task step (its reconstruction step where
    the task step is 0: no anchors) where it exceeds half an integer step."""

    def propose(feats: list[np.ndarray]) -> Proposal:
        out = []
        for f in feats:
            task, rec = f[..., FEATURES.index("task_step")], f[..., FEATURES.index("rec_step")]
            step = np.where(task != 0, task, rec)
            action = np.where(np.abs(step) > 0.5, np.sign(step), 0).astype(np.int8)
            out.append((action, np.abs(step)))
        return out

    return propose


def random_proposer(seed: int) -> Proposer:
    """Random weights, random direction: the baseline with the same budget."""
    rng = np.random.default_rng(seed)

    def propose(feats: list[np.ndarray]) -> Proposal:
        return [
            (rng.choice(np.array([-1, 1], np.int8), size=f.shape[:2]), rng.random(f.shape[:2]))
            for f in feats
        ]

    return propose


def select_flips(proposal: Proposal, budget: int) -> list[np.ndarray]:
    """Per-layer int8 deltas: the ``budget`` highest-scoring non-zero actions overall."""
    scores = np.concatenate([np.where(a != 0, s, -np.inf).ravel() for a, s in proposal])
    n = int(min(budget, np.isfinite(scores).sum()))
    chosen = np.zeros(scores.shape, bool)
    if n > 0:
        chosen[np.argpartition(-scores, n - 1)[:n]] = True
    deltas, start = [], 0
    for a, _ in proposal:
        take = chosen[start : start + a.size].reshape(a.shape)
        deltas.append(np.where(take, a, 0).astype(np.int8))
        start += a.size
    return deltas


def apply_flips(codes: list[np.ndarray], deltas: list[np.ndarray], bits: int) -> list[np.ndarray]:
    """Codes moved by ``deltas``, clipped to the ``bits`` integer range (stay on the grid);
    a layer without flips keeps its array."""
    lo, hi = qrange(bits)
    return [
        np.clip(q.astype(np.int16) + d, lo, hi).astype(np.int8) if d.any() else q
        for q, d in zip(codes, deltas, strict=True)
    ]


def recent_gain(recent_acc: list[float], anchors: gate.Scored) -> bool:
    """A lenient round's evidence with nothing unseen to judge on: the recent labelled
    samples' accuracy rose (a tie won on soft accuracy is only confidence on samples the
    flips fitted) and the anchors' soft accuracy did not fall (a round fitting the replay
    at the cost of what the model knew: ``bench/results/recover.md``)."""
    before, after, y = anchors
    calm = len(y) == 0 or gate.soft_accuracy(after, y) >= gate.soft_accuracy(before, y)
    return recent_acc[1] > recent_acc[0] and calm


class BitFlipCalibrator:
    """Runs rounds for one bundle with one proposer; keeps a scratch engine per bit-width."""

    def __init__(self, bundle: Bundle, proposer: Proposer, cfg: FlipConfig | None = None) -> None:
        self.bundle = bundle
        self.proposer = proposer
        self.cfg = cfg or FlipConfig()
        self._scratch: dict[int, Engine] = {}
        self._loaded: dict[int, list[np.ndarray | None]] = {}
        shape = (0, *bundle.input_shape)
        self.anchor_X = np.asarray(bundle.extras.get(EXTRA_X, np.zeros(shape)), np.float32)
        self.anchor_y = np.asarray(bundle.extras.get(EXTRA_Y, np.zeros(0)), np.int64)

    def set_bundle(self, bundle: Bundle) -> None:
        """Run on ``bundle`` from now on (same weights and anchors, other biases or input
        normalization: the statistics rung's); scratch engines are rebuilt from it."""
        self.bundle = bundle
        self._scratch, self._loaded = {}, {}

    def deployed_codes(self, bits: int) -> list[np.ndarray]:
        """The bundle's integer weights (O, K) at ``bits``."""
        return [unpack_rows(lq.packed, lq.k, lq.bits) for lq in self.bundle.quant[bits].layers]

    def residuals(self, bits: int) -> list[np.ndarray]:
        """The bundle's rounding residuals at ``bits`` (zeros where it has none)."""
        out = []
        for i, lq in enumerate(self.bundle.quant[bits].layers):
            r = self.bundle.extras.get(residual_key(bits, i))
            shape = (lq.out_features, lq.k)
            out.append(
                np.zeros(shape)
                if r is None or r.shape != shape
                else r.astype(np.float64) / RESIDUAL_SCALE
            )
        return out

    def trace(
        self, bits: int, codes: list[np.ndarray], X: np.ndarray
    ) -> tuple[np.ndarray, list[LayerTrace]]:
        """Logits and layer traces of ``X`` under integer weights ``codes`` at ``bits``
        (run on this calibrator's scratch engine)."""
        logits, inputs = self._load(bits, codes).trace(X)
        return logits, layer_traces(self.bundle, bits, codes, inputs)

    def _load(self, bits: int, codes: list[np.ndarray]) -> Engine:
        """The scratch engine for ``bits`` holding ``codes`` (only layers whose array is
        not the one it last got are swapped: code arrays are never modified in place)."""
        if bits not in self._scratch:
            self._scratch[bits] = Engine(self.bundle, bits=bits, scratch=True)
            self._loaded[bits] = [None] * len(codes)
        loaded = self._loaded[bits]
        changed = {i: q for i, q in enumerate(codes) if q is not loaded[i]}
        if changed:
            self._scratch[bits].swap_weights(changed)
            self._loaded[bits] = list(codes)
        return self._scratch[bits]

    def _candidate_pass(
        self,
        bits: int,
        codes: list[np.ndarray],
        traced: tuple[np.ndarray, list[np.ndarray]],
        cand: list[np.ndarray],
        X: np.ndarray,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits and layer inputs of ``X`` under ``cand``, given ``traced`` = those under
        ``codes``: from the first layer they differ in (:mod:`flip_eval`), the engine
        when that is the first layer."""
        start = first_changed(codes, cand)
        if start is None:
            return traced
        if start == 0:
            return self._load(bits, cand).trace(X)
        return suffix_pass(self.bundle, bits, cand, traced[1], start)

    def _now_and_new(
        self, engine: Engine, current: list[np.ndarray], best: list[np.ndarray], X: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits of ``X`` under ``engine``'s weights ``current`` and under ``best`` (one
        engine pass and the changed layers; the same logits when nothing changed)."""
        start = first_changed(current, best)
        if start is None or not len(X):  # a trace of no samples has no layer inputs
            now = engine.predict_logits(X)
            return now, now
        if start == 0:
            return engine.predict_logits(X), self._load(engine.bits, best).predict_logits(X)
        now, inputs = engine.trace(X)
        return now, suffix_pass(self.bundle, engine.bits, best, inputs, start)[0]

    def _split(
        self, n: int, labelled: np.ndarray | None, seed: int
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(calibration, held-out) indices and whether the held-out part is all labelled:
        it is drawn from the labelled samples when they are enough for the gate."""
        cfg = self.cfg
        if labelled is not None:
            lab = np.flatnonzero(labelled)
            if round(len(lab) * cfg.holdout_fraction) >= cfg.min_holdout:
                _, h = gate.holdout_split(len(lab), cfg.holdout_fraction, seed)
                return np.setdiff1d(np.arange(n), lab[h]), lab[h], True
        cal, hold = gate.holdout_split(n, cfg.holdout_fraction, seed)
        return cal, hold, labelled is not None and bool(labelled[hold].all())

    def _base_split(self, base: BaseCheck | None, seed: int) -> tuple[np.ndarray, BaseCheck | None]:
        """The anchors a round fits on, and the training-domain check on the others: a
        check on samples the flips were chosen to fit would pass them (without a check,
        or with samples not aligned with the anchors, every anchor fits)."""
        every = np.arange(len(self.anchor_y))
        if base is None or len(base[1]) != len(every) or len(every) < 2:
            return every, base
        fit, check = gate.holdout_split(len(every), 0.5, seed)
        return fit, (base[0][check], base[1][check], base[2])

    def run_round(
        self,
        engine: Engine,
        X: np.ndarray,
        y: np.ndarray,
        seed: int = 0,
        labelled: np.ndarray | None = None,
        recent: tuple[np.ndarray, np.ndarray] | None = None,
        unseen: tuple[np.ndarray, np.ndarray] | None = None,
        base: BaseCheck | None = None,
        lenient: bool = False,
    ) -> RoundResult:
        """Calibrate ``engine``'s active model on ``(X, y)``; swap the weights if the gate
        accepts. ``y`` are labels or, without labels, the FP model's predictions;
        ``labelled`` marks the real labels (default: all): the gate scores on labelled
        samples when there are enough of them, as FP pseudo-labels of drifted inputs can
        be wrong together with the model. ``recent``: the latest labelled stream samples
        (inputs, labels), on which an accepted round may not lose accuracy.
        ``unseen``: labelled stream samples since a drift that are not in ``X``; given,
        an accepted round must win more of them than it loses (:func:`gate.guard_unseen`).
        ``base``: the training domain's samples (the anchors, row by row, in the training
        input domain), labels and router (domain routing on): the round fits on half of
        the anchors and may not lose more of the other half, routed, than it wins
        (:func:`gate.guard_base`). ``lenient``: the round changes a drifted domain's
        weights only (routing on, an adapted domain live): with too few unseen samples to
        judge on, losing none of them with :func:`recent_gain` will do."""
        t0 = time.thread_time()
        cfg = self.cfg
        bits = engine.bits
        quant = self.bundle.quant[bits]
        n_layers = len(quant.layers)
        cal, hold, all_labelled = self._split(len(X), labelled, seed)
        metric = "accuracy" if labelled is None or all_labelled else "target_agreement"
        fit, base = self._base_split(base, seed)
        Xc = np.concatenate([X[cal], self.anchor_X[fit]])
        yc = np.concatenate([y[cal], self.anchor_y[fit]])
        anchors = np.arange(len(Xc)) >= len(cal)
        current = [engine.layer_codes(i) for i in range(n_layers)]
        deployed, residuals = self.deployed_codes(bits), self.residuals(bits)
        budget = max(1, round(cfg.budget_fraction * sum(q.size for q in current)))

        best = current
        # the live engine holds ``current``; a candidate's pass starts at its first
        # changed layer (:meth:`_candidate_pass`), an accepted one's needs no other pass
        logits, inputs = engine.trace(Xc)
        logits_before = logits
        best_loss = loss_before = gate.cross_entropy(logits, yc)
        # proposals for the best codes; from layer ``stale`` on out of date. One layer at
        # a time (its trace and features are freed before the next layer's are made)
        proposal: Proposal = []
        stale, iterations = 0, 0
        for _ in range(cfg.iterations):
            iterations += 1
            del proposal[stale:]  # the layers before kept their codes and inputs
            for i in range(stale, n_layers):
                tr = layer_trace(self.bundle, bits, i, best[i], inputs[i])
                w = (best[i], deployed[i], residuals[i])
                f = layer_feature(self.bundle, quant, i, w, tr, logits, yc, anchors)
                proposal += self.proposer([f])
                del tr, f  # not alive beside the next layer's
            stale = n_layers
            deltas = select_flips(proposal, budget)
            if not any(d.any() for d in deltas):
                break
            cand = apply_flips(best, deltas, bits)
            cand_logits, cand_inputs = self._candidate_pass(bits, best, (logits, inputs), cand, Xc)
            cand_loss = gate.cross_entropy(cand_logits, yc)
            if cand_loss >= best_loss:
                budget //= 2  # same proposal, fewer (the most confident) flips
                if budget < 1:
                    break
                continue
            stale = first_changed(best, cand) or 0  # a lower loss: some layer changed
            best, best_loss, logits, inputs = cand, cand_loss, cand_logits, cand_inputs

        changed = {
            i: q
            for i, (q, c) in enumerate(zip(best, current, strict=True))
            if not np.array_equal(q, c)
        }
        held_now, held_new = self._now_and_new(engine, current, best, X[hold])
        decision = gate.decide(
            gate.hits(held_now, y[hold]),
            gate.hits(held_new, y[hold]),
            len(hold),
            metric,
            cfg.tolerance,
            cfg.min_holdout,
        )
        if not changed:
            decision = dataclasses.replace(decision, accepted=False, reason="no flip proposed")
        # the anchors are the last rows of the calibration set
        anchored = (logits_before[anchors], logits[anchors], yc[anchors])
        decision = gate.guard(
            decision, (held_now, held_new, y[hold]), anchored, cfg.anchor_tolerance
        )
        rose = False  # evidence enough for a lenient round: see :func:`recent_gain`
        if decision.accepted and recent is not None and len(recent[1]):
            Xr, yr = recent
            scored = (*self._now_and_new(engine, current, best, Xr), yr)
            decision = gate.guard_recent(decision, scored, cfg.tolerance)
            acc = [gate.hits(z, yr) for z in scored[:2]]
            rose = recent_gain(acc, anchored)
        if decision.accepted and unseen is not None:
            Xu, yu = unseen
            scored = (*self._now_and_new(engine, current, best, Xu), yu)
            decision = gate.guard_unseen(decision, scored, lenient and rose, cfg.min_holdout)
        if decision.accepted and base is not None and len(base[1]):
            Xb, yb, routed = base
            new = self._load(bits, best)
            decision = gate.guard_base(decision, (routed(engine)(Xb), routed(new)(Xb), yb))
        version = None
        if decision.accepted:  # the version the saved bundle will report after a restart
            saved = self.bundle.with_codes(bits, best)
            version = engine.swap_weights(changed, version=saved.model_version)
        flips = int(sum((best[i] != current[i]).sum() for i in changed)) if version else 0
        result = RoundResult(
            decision, flips, iterations, loss_before, best_loss, time.thread_time() - t0, version
        )
        log.info(  # the round's one verdict (the gate's own steps are not logged)
            "flip round: %d flips, loss %.4f -> %.4f, %s, %.3f s CPU; gate %s",
            flips,
            loss_before,
            best_loss,
            "kept" if version else "rolled back",
            result.cpu_seconds,
            gate.describe(decision),
        )
        return result
