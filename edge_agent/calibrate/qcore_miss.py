"""QCore miss counting and sampling, shared by training and the device (numpy only).

* :func:`forgetting_events` / :func:`difficulty` count quantization misses: a miss is a
  correct -> wrong transition between consecutive checks at one bit-width; a sample never
  classified correctly at a bit-width counts ``never_correct`` there; the counts summed over
  bit-widths are the sample's difficulty.
* :func:`draw_proportional` draws without replacement with probability proportional to
  difficulty (Efraimidis-Spirakis keys: the same law as successive proportional draws);
  zero-difficulty samples are drawn only as a flagged uniform fill when too few samples have
  a nonzero difficulty (``fill``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

NEVER_CORRECT = 50.0
# Bundle.extras keys of the QCore built during training (edge_agent.training.qcore_build).
EXTRA_X = "qcore_X"  # (n, *input_shape) float32, raw (un-normalized) inputs
EXTRA_Y = "qcore_y"  # (n,) int64 labels
EXTRA_DIFFICULTY = "qcore_difficulty"  # (n,) float32; 0 marks a uniform fill sample
EXTRA_TRAIN_INDEX = "qcore_train_index"  # (n,) int64 index into the training split
EXTRA_BITS = "qcore_bits"  # (b,) int64 bit-widths the misses were tracked at
EXTRA_KEYS = (EXTRA_X, EXTRA_Y, EXTRA_DIFFICULTY, EXTRA_TRAIN_INDEX, EXTRA_BITS)


# ---------------------------------------------------------------- miss counting


def forgetting_events(correct: np.ndarray) -> np.ndarray:
    """Per-sample count of correct -> wrong transitions in a (checks, samples) bool array."""
    c = np.asarray(correct, dtype=bool)
    if c.ndim != 2:
        raise ValueError(f"expected (checks, samples) correctness, got shape {c.shape}")
    return (c[:-1] & ~c[1:]).sum(axis=0).astype(np.int64)


def difficulty(
    correct_by_bits: Mapping[int, np.ndarray], never_correct: float = NEVER_CORRECT
) -> np.ndarray:
    """Summed over bit-widths: forgetting events, or ``never_correct`` for a sample that no
    check at that bit-width classified correctly. Arrays are (checks, samples) bool."""
    total: np.ndarray | None = None
    for bits, correct in correct_by_bits.items():
        c = np.asarray(correct, dtype=bool)
        if c.ndim != 2 or c.shape[0] == 0:
            raise ValueError(
                f"{bits}-bit correctness must be (checks >= 1, samples), got {c.shape}"
            )
        counts = forgetting_events(c).astype(np.float64)
        counts[~c.any(axis=0)] = never_correct
        total = counts if total is None else total + counts
    if total is None:
        raise ValueError("no bit-width to count misses at")
    return total


def neighbour_bits(available: tuple[int, ...], deployed: int, k: int = 1) -> tuple[int, ...]:
    """The deployed bit-width and up to ``k`` available neighbours on each side (sorted):
    the bit-widths :meth:`QCoreBuffer.update` should see predictions at."""
    bits = sorted(set(available))
    if deployed not in bits:
        raise ValueError(f"deployed bit-width {deployed} is not among {bits}")
    i = bits.index(deployed)
    return tuple(bits[max(0, i - k) : i + k + 1])


# ---------------------------------------------------------------- sampling


def draw_proportional(
    weights: np.ndarray,
    size: int,
    rng: np.random.Generator,
    labels: np.ndarray | None = None,
    fill: bool = True,
) -> np.ndarray:
    """Indices of ``size`` items drawn without replacement, proportional to ``weights``.

    Zero-weight items are never drawn proportionally; with ``fill`` they complete the draw
    uniformly at random when fewer than ``size`` items have a positive weight. With
    ``labels`` the draw is class-balanced: every class present gets ``size // classes``
    slots (the remainder to random classes), drawn proportionally within the class, then
    (with ``fill``) uniformly from the class's zero-weight items; slots a class still cannot
    fill go to the proportional draw over all remaining items, then to the fill. Returns
    sorted indices.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be a 1-D array of finite non-negative values")
    n = len(w)
    size = min(max(int(size), 0), n)
    positive = w > 0
    # Exponential keys / weight: the smallest keys follow successive proportional draws.
    expo = rng.exponential(size=n)
    keys = np.full(n, np.inf)
    keys[positive] = expo[positive] / w[positive]
    fill_keys = rng.random(n)
    chosen = np.zeros(n, dtype=bool)
    if labels is not None and size > 0:
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise ValueError(f"labels shape {lab.shape} does not match weights ({n},)")
        classes = np.unique(lab)
        quota = np.full(len(classes), size // len(classes))
        quota[rng.permutation(len(classes))[: size % len(classes)]] += 1
        for cls, q in zip(classes, quota, strict=True):
            idx = np.flatnonzero((lab == cls) & positive)
            take = idx[np.argsort(keys[idx], kind="stable")[:q]]
            if fill and len(take) < q:
                zero = np.flatnonzero((lab == cls) & ~positive)
                zero = zero[np.argsort(fill_keys[zero], kind="stable")[: q - len(take)]]
                take = np.concatenate([take, zero])
            chosen[take] = True
    rest = np.flatnonzero(positive & ~chosen)
    chosen[rest[np.argsort(keys[rest], kind="stable")[: size - int(chosen.sum())]]] = True
    if fill:
        zero = np.flatnonzero(~chosen)
        chosen[zero[np.argsort(fill_keys[zero], kind="stable")[: size - int(chosen.sum())]]] = True
    return np.flatnonzero(chosen)
