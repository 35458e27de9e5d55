"""The accept-or-rollback gate every weight change must pass (bit flips and QAT bursts).

A candidate model is scored on a held-out part of the calibration data: accuracy where
labels exist, agreement with the full-precision model's predictions (pseudo-labels)
where they do not. It is kept only if its score is not below the current model's and,
with :func:`guard`, if it does not lose accuracy on pre-drift anchor samples (the
bundle's QCore): after a drift the held-out data is mostly drifted, and a candidate that
fits it at the cost of what the model knew before must not pass; and, with
:func:`guard_recent`, if it does not lose accuracy on the latest labelled stream samples;
and, with :func:`guard_unseen` (after a drift episode's statistics correction was kept), if
it wins more labelled stream samples it was not fitted to than it loses (with too few of
them to judge on: loses none while the drift's labelled samples gain); and, with
:func:`guard_base` (domain routing on), if it loses no more of the training domain's own
samples, routed as the agent routes them, than it wins.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from edge_agent.contracts import Predict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    """The outcome of one gate check."""

    accepted: bool
    metric: str  # "accuracy" (labels) or "fp_agreement" (pseudo-labels)
    before: float
    after: float
    n: int
    reason: str


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (calibration, held-out) of ``n`` samples; at least one of each when n >= 2."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = min(max(1, round(n * fraction)), n - 1) if n >= 2 else 0
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])


def hits(logits: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of rows of ``logits`` whose top class equals ``targets`` (nan for none)."""
    if len(logits) == 0:
        return float("nan")
    return float(np.mean(logits.argmax(axis=1) == targets))


def score(predict: Predict, X: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of ``X`` whose predicted class equals ``targets``."""
    if len(X) == 0:
        return float("nan")
    return float(np.mean(predict(X) == targets))


def decide(
    before: float, after: float, n: int, metric: str, tolerance: float = 0.0, min_samples: int = 1
) -> GateDecision:
    """Accept when ``after >= before - tolerance`` on at least ``min_samples`` samples.

    Not logged: a flip round may still withdraw the acceptance (:func:`guard`), and the
    log must give each round one verdict; :func:`describe` words the final one.
    """
    if n < min_samples or not np.isfinite(before) or not np.isfinite(after):
        decision = GateDecision(
            False, metric, before, after, n, f"only {n} held-out samples (need {min_samples})"
        )
    elif after >= before - tolerance:
        decision = GateDecision(True, metric, before, after, n, "not worse on held-out data")
    else:
        decision = GateDecision(False, metric, before, after, n, "worse on held-out data")
    return decision


def check(
    current: Predict,
    candidate: Predict,
    X: np.ndarray,
    targets: np.ndarray,
    metric: str,
    tolerance: float = 0.0,
    min_samples: int = 1,
) -> GateDecision:
    """Score both models on the held-out ``X`` and decide (a final verdict: logged)."""
    decision = decide(
        score(current, X, targets),
        score(candidate, X, targets),
        len(X),
        metric,
        tolerance,
        min_samples,
    )
    log.info("gate %s", describe(decision))
    return decision


def describe(decision: GateDecision) -> str:
    """One line for the log: the verdict, the held-out scores and the reason."""
    d = decision
    verdict = "accepted" if d.accepted else "rolled back"
    return (
        f"{verdict}: {d.metric} {d.before:.4f} -> {d.after:.4f} on {d.n} held-out samples"
        f" ({d.reason})"
    )


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of float logits against class indices."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def soft_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax probability of the target class: accuracy as the model expects it,
    bounded like accuracy (unlike the cross-entropy of confidently wrong samples)."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return float((z[np.arange(len(y)), y] / z.sum(axis=1)).mean())


Scored = tuple[np.ndarray, np.ndarray, np.ndarray]  # current logits, candidate logits, targets


def guard(
    decision: GateDecision, held_out: Scored, anchors: Scored, tolerance: float = 0.0
) -> GateDecision:
    """Second look at an accepted candidate, on the logits of both models: withdraw the
    acceptance when its accuracy on the ``anchors`` (pre-drift samples with labels) is
    more than ``tolerance`` below the current model's, or when its soft accuracy
    (:func:`soft_accuracy`) on the held-out part plus that on the anchors is not higher: a
    tie in held-out accuracy, or a gain bought with confidence on what the model knew
    before, is not evidence enough."""
    if not decision.accepted:
        return decision
    gain = 0.0
    for name, (before, after, y) in (("held-out", held_out), ("anchor", anchors)):
        if len(y) == 0:
            continue
        acc = [hits(z, y) for z in (before, after)]
        soft = [soft_accuracy(z, y) for z in (before, after)]
        log.info(
            "%s: accuracy %.4f -> %.4f, soft accuracy %.4f -> %.4f on %d samples",
            name,
            *acc,
            *soft,
            len(y),
        )
        if name == "anchor" and acc[1] < acc[0] - tolerance:
            return dataclasses.replace(
                decision, accepted=False, reason="worse on pre-drift anchors"
            )
        gain += soft[1] - soft[0]
    if gain <= 0:
        return dataclasses.replace(
            decision, accepted=False, reason="held-out plus anchor soft accuracy not higher"
        )
    return decision


def guard_recent(decision: GateDecision, recent: Scored, tolerance: float = 0.0) -> GateDecision:
    """Last look at an accepted candidate: withdraw it when its accuracy on the most recent
    labelled stream samples is more than ``tolerance`` below the current model's. The
    buffer the round was fitted and held out on is made of misses, not of what the stream
    looks like now; this window is."""
    before, after, y = recent
    if not decision.accepted or len(y) == 0:
        return decision
    acc = [hits(z, y) for z in (before, after)]
    log.info("recent: accuracy %.4f -> %.4f on %d labelled stream samples", *acc, len(y))
    if acc[1] < acc[0] - tolerance:
        return dataclasses.replace(
            decision, accepted=False, reason="worse on recent labelled samples"
        )
    return decision


def wins_losses(scored: Scored) -> tuple[int, int]:
    """Samples the candidate gets right that the current model gets wrong, and the other
    way round."""
    before, after, y = scored
    won = int(np.sum((after.argmax(axis=1) == y) & (before.argmax(axis=1) != y)))
    lost = int(np.sum((before.argmax(axis=1) == y) & (after.argmax(axis=1) != y)))
    return won, lost


def guard_unseen(
    decision: GateDecision, unseen: Scored, recent_rose: bool = False, min_samples: int = 4
) -> GateDecision:
    """Last look at an accepted candidate after a drift's statistics correction: keep it
    only if, on labelled stream samples since the drift that it was not fitted to, it gets
    more right that the current model gets wrong than the other way round; or, when
    there are fewer than ``min_samples`` of them to judge on, it loses none and
    ``recent_rose`` (its accuracy on the labelled samples since the drift is higher, or
    as high with a higher soft accuracy). After a drift the buffer's held-out part is a
    handful of samples the round's own flips were chosen around; a change must show it
    helps where it has not looked. A short stream that comes round again soon has every
    labelled sample in the buffer and none unseen (``gunpoint`` time warp: every flip
    round refused); with enough unseen samples, a gain on the buffer's own is not
    evidence (``japanese_vowels`` noise: 0 won, 0 lost of 46, 2 of 36 held-out lost)."""
    if not decision.accepted:
        return decision
    won, lost = wins_losses(unseen)
    log.info("unseen: wins %d, loses %d of %d labelled stream samples", won, lost, len(unseen[2]))
    few = len(unseen[2]) < min_samples and lost == 0 and recent_rose
    if won <= lost and not few:
        return dataclasses.replace(
            decision,
            accepted=False,
            reason=f"wins {won}, loses {lost} unseen labelled samples since the drift",
        )
    return decision


def guard_base(decision: GateDecision, base: Scored) -> GateDecision:
    """Last look at an accepted flip round with domain routing on: ``base`` scores the
    training domain's own labelled samples (the bundle's QCore anchors) routed as the
    agent routes them, on the current and the candidate weights. The weights are shared
    by every domain, so a round fitted to the live (drifted) domain can cost the domains
    it never saw; the training domain's must not lose on net (more lost than won)."""
    if not decision.accepted or len(base[2]) == 0:
        return decision
    won, lost = wins_losses(base)
    log.info("training domain: wins %d, loses %d of %d anchors", won, lost, len(base[2]))
    if lost > won:
        return dataclasses.replace(
            decision,
            accepted=False,
            reason=f"wins {won}, loses {lost} training-domain anchors (routed)",
        )
    return decision


def unseen(
    labelled: tuple[np.ndarray, np.ndarray] | None, fitted: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The labelled samples whose inputs are not among ``fitted`` (a flip round's buffer):
    what a round can be checked on without having been fitted to it."""
    if labelled is None or len(fitted) == 0:
        return labelled
    X, y = labelled
    seen = {row.tobytes() for row in np.ascontiguousarray(fitted, np.float32)}
    keep = np.array([row.tobytes() not in seen for row in np.ascontiguousarray(X, np.float32)])
    return X[keep], y[keep]
