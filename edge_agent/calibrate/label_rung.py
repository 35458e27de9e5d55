"""The label rung: per-class offsets of the last layer's integer bias, learnt from the
labelled stream samples, for a drift that only labels reveal.

When the drift is in the labels (the classes' frequencies change, or the same inputs
are now named differently: a recording convention changed), no label-free rung can see
it: the inputs look as before. What the labelled stream samples show is which classes
the model now over- and under-calls. This rung fits one logit offset per class (a
maximum a posteriori fit of the offsets alone, everything else fixed: a prior-shift
correction learnt from labels; docs/method.md section 5, the label rung) and puts it on the engine's
grid exactly: class ``c``'s int32 last-layer bias moves by ``rint(offset_c / out_mult_c)``
steps, so its logit moves by that many steps of its output scale. The last layer's
accumulators are computed once (one traced pass); every candidate's logits are those
accumulators plus the integer steps times the output scale, bit-exact with what the
engine gives after the swap (:func:`logits_of`).

The gate is leave-one-out on the labelled samples themselves (there are few: ten or so
on a small stream): for each one, the offsets are fitted on the others and it is
predicted with them; the correction is kept when it wins at least ``margin`` more of
these held-out predictions than it loses against the live model, and at least
``sqrt(wins + losses)`` more (one standard deviation of wins minus losses if the
correction changed nothing but chance). The kept correction is
then fitted on all of them. The rung refits from the model without its label correction
each time (the correction is a state, not a sum of steps), and the bundle the agent saves
carries both the moved bias and the steps (extras ``label/steps/<bits>``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.engine.engine import Engine

STEPS_KEY = "label/steps/{bits}"  # bundle extras: the label correction in bias steps
_NEWTON_STEPS = 25
_INT32 = 2**31 - 1


@dataclass(frozen=True)
class LabelConfig:
    """The rung's knobs."""

    sigma: float = 2.0  # prior standard deviation of a class offset, in nats
    min_labelled: int = 8  # distinct labelled samples a round needs
    margin: int = 2  # held-out (leave-one-out) wins over losses a correction needs


@dataclass(frozen=True)
class LabelFix:
    """A label correction: the fitted logit offsets and their bias steps per bit-width."""

    offsets: np.ndarray  # (K,) float64, nats
    steps: dict[int, np.ndarray]  # bits -> (K,) int64 steps on the uncorrected bias


def last_layer(bundle: Bundle) -> int:
    """Index of the weighted layer that gives the logits."""
    return len(bundle.weighted_ops()) - 1


def out_mult(bundle: Bundle, bits: int) -> np.ndarray:
    """The last layer's float32 output scale (K,) at ``bits`` (no rung changes it)."""
    m = bundle.quant[bits].layers[last_layer(bundle)].out_mult
    assert m is not None  # the bundle's loader checks the last layer has one
    return np.asarray(m, np.float32)


def steps_of(bundle: Bundle) -> dict[int, np.ndarray]:
    """The label correction ``bundle`` carries (zero steps where it carries none)."""
    k = bundle.num_classes
    out = {}
    for bits in bundle.quant:
        s = bundle.extras.get(STEPS_KEY.format(bits=bits))
        ok = s is not None and np.shape(s) == (k,)
        out[bits] = np.asarray(s, np.int64) if ok else np.zeros(k, np.int64)
    return out


def accumulators(engine: Engine, X: np.ndarray) -> np.ndarray:
    """The last layer's int64 accumulators (N, K) of the active model, bias included,
    from one traced pass (exact: int32 sums in float64 would be too, int64 is simpler)."""
    last = len(engine.codes()) - 1
    _, inputs = engine.trace(X)
    h = inputs[last].reshape(len(X), -1).astype(np.int64)
    q = engine.layer_codes(last).astype(np.int64)
    return h @ q.T + engine.layer_bias(last).astype(np.int64)


def logits_of(acc: np.ndarray, steps: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """The float32 logits the engine gives with ``steps`` added to the last bias, as the
    integer reference computes them (accumulator to float32, times the output scale)."""
    return (acc + steps).astype(np.float32) * mult


def _objective(z: np.ndarray, onehot: np.ndarray, b: np.ndarray, reg: float) -> tuple:
    """The MAP objective of :func:`fit_offsets` at ``b``, its gradient and Hessian."""
    s = z + b
    m = s.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(s - m).sum(axis=1))
    p = np.exp(s - lse[:, None])
    f = float((lse - (s * onehot).sum(axis=1)).sum() + 0.5 * reg * (b @ b))
    grad = (p - onehot).sum(axis=0) + reg * b
    hess = np.diag(p.sum(axis=0)) - p.T @ p + reg * np.eye(len(b))
    return f, grad, hess


def fit_offsets(z: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    """Class offsets ``b`` (K,) minimizing the cross-entropy of ``softmax(z + b)`` on labels
    ``y`` plus ``|b|^2 / (2 sigma^2)`` (a Gaussian prior): Newton's method from b = 0 with
    a backtracking line search (a full step can overshoot where a class has no labels)."""
    z = np.asarray(z, np.float64)
    k = z.shape[1]
    onehot = np.eye(k)[np.asarray(y, np.int64)]
    b, reg = np.zeros(k), 1.0 / sigma**2
    for _ in range(_NEWTON_STEPS):
        f, grad, hess = _objective(z, onehot, b, reg)
        step = np.linalg.solve(hess, grad)
        t = 1.0  # halve until the objective drops enough (Armijo)
        while _objective(z, onehot, b - t * step, reg)[0] > f - 1e-4 * t * (grad @ step):
            t *= 0.5
            if t < 1e-6:
                return b
        b = b - t * step
        if np.abs(t * step).max() < 1e-9:
            break
    return b


def to_steps(offsets: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """Offsets (nats) as int64 bias steps of an output scale (a positive scale: the
    export gives one per class, weight scale times input scale)."""
    return np.rint(offsets / mult.astype(np.float64)).astype(np.int64)


@dataclass(frozen=True)
class Verdict:
    """The leave-one-out gate's counts."""

    n: int
    won: int  # held-out predictions the correction gets right and the live model wrong
    lost: int
    live_hits: int
    loo_hits: int


def leave_one_out(
    acc0: np.ndarray, live: np.ndarray, y: np.ndarray, mult: np.ndarray, sigma: float
) -> Verdict:
    """Each labelled sample predicted with the offsets fitted on the others (from the
    uncorrected accumulators ``acc0``), against the live model's logits ``live``."""
    z0 = logits_of(acc0, np.zeros(acc0.shape[1], np.int64), mult)
    n = len(y)
    loo = np.empty(n, np.int64)
    for i in range(n):
        rest = np.arange(n) != i
        steps = to_steps(fit_offsets(z0[rest], y[rest], sigma), mult)
        loo[i] = int(np.argmax(logits_of(acc0[i : i + 1], steps, mult)[0]))
    live_ok, loo_ok = live.argmax(axis=1) == y, loo == y
    won, lost = int(np.sum(loo_ok & ~live_ok)), int(np.sum(live_ok & ~loo_ok))
    return Verdict(n, won, lost, int(live_ok.sum()), int(loo_ok.sum()))


def propose(
    engine: Engine,
    bundle: Bundle,
    current: dict[int, np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    cfg: LabelConfig,
) -> tuple[Verdict, LabelFix]:
    """The gate's verdict and the correction fitted on every labelled sample ``(X, y)``
    (distinct stream samples) at the engine's active bit-width; ``current``: the label
    correction the engine runs now (bias steps per bit-width), taken out before fitting."""
    bits = engine.bits
    mult = out_mult(bundle, bits)
    acc = accumulators(engine, X)
    acc0 = acc - current[bits]
    live = logits_of(acc, np.zeros_like(current[bits]), mult)
    verdict = leave_one_out(acc0, live, y, mult, cfg.sigma)
    offsets = fit_offsets(logits_of(acc0, np.zeros_like(current[bits]), mult), y, cfg.sigma)
    steps = {b: to_steps(offsets, out_mult(bundle, b)) for b in bundle.quant}
    return verdict, LabelFix(offsets, steps)


def accepted(v: Verdict, cfg: LabelConfig) -> tuple[bool, str]:
    """Whether the gate keeps a correction, and why."""
    if v.n < cfg.min_labelled:
        return False, f"only {v.n} labelled samples (need {cfg.min_labelled})"
    # the net wins must also exceed their spread under no effect (sqrt of the discordant)
    need = max(cfg.margin, int(np.ceil(np.sqrt(v.won + v.lost))))
    if v.won - v.lost < need:
        return False, f"held out one at a time it wins {v.won}, loses {v.lost} (need +{need})"
    return True, f"held out one at a time it wins {v.won}, loses {v.lost}"


def biases(engine: Engine, current: dict[int, np.ndarray], fix: LabelFix) -> dict[int, np.ndarray]:
    """bits -> the last layer's new int32 bias: the live one, its current label steps
    replaced by ``fix``'s (clipped to int32)."""
    last = len(engine.codes()) - 1
    out = {}
    for bits, steps in fix.steps.items():
        b = engine.layer_bias(last, bits).astype(np.int64) - current[bits] + steps
        out[bits] = np.clip(b, -_INT32, _INT32).astype(np.int32)
    return out


def apply(engine: Engine, new: dict[int, np.ndarray], version: str | None = None) -> str:
    """Put the new last-layer biases into every bit-width of ``engine`` (the active one
    last); the active model's new version."""
    last = len(engine.codes()) - 1
    out = ""
    for bits in [*(b for b in new if b != engine.bits), engine.bits]:
        out = engine.swap_params(biases={last: new[bits]}, bits=bits, version=version)
    return out


def labelled_bundle(bundle: Bundle, new: dict[int, np.ndarray], fix: LabelFix) -> Bundle:
    """``bundle`` with the new last-layer biases and the correction's steps (saved)."""
    last = last_layer(bundle)
    quant = dict(bundle.quant)
    for bits, b in new.items():
        q = quant[bits]
        layers = list(q.layers)
        layers[last] = dataclasses.replace(layers[last], bias_q=b)
        quant[bits] = dataclasses.replace(q, layers=layers)
    extras = {**bundle.extras}
    extras.update({STEPS_KEY.format(bits=b): s.astype(np.int64) for b, s in fix.steps.items()})
    return dataclasses.replace(bundle, quant=quant, extras=extras)
