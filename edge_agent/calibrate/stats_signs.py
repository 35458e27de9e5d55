"""Channel sign flips for the statistics rung: a sensor worn the other way round.

A watch on the other wrist mirrors the body: some axes of its accelerometer and gyroscope
change sign (``bench/real_drift.py``'s watch_side: acceleration x, rotation y and z).
Per-channel means and spreads cannot undo that; a negative scale in the input
normalization can, in float before the input quantizer (exact, as the rest of the rung).

The evidence is label-free: the correlation of two channels changes sign when exactly one
of them flipped. When the stream's channel correlations disagree with training's on
balance (the sum over channel pairs of their products is below ``-MIN_DISAGREEMENT``:
channels that are not correlated at all give a sum near 0 either way), the sign pattern that
makes them agree most is adopted (every pattern up to ``MAX_EXHAUSTIVE`` channels, else
a greedy search, one channel at a time: it can stop at a local best); of a pattern
and its mirror image, which give the same correlations, the one whose channel means agree
with training's. Otherwise no channel flips: a gain, offset, noise or dead channel leaves
the signs of the correlations, and an injected rotation mixes rather than mirrors.
"""

from __future__ import annotations

import numpy as np

EXTRA_CORR = "stats/input_corr"  # (C, C) float64: training input channel correlations
MAX_EXHAUSTIVE = 12  # channels up to which every sign pattern is tried (2^11 patterns)
# the disagreement (sum of correlation products) that counts as evidence: independent
# slow AR(1) channels (phi 0.98) reach -0.06 at worst over 300 draws of 64 samples,
# watch_side's mirror -0.14 to -0.28 (``tests/test_stats_signs.py``); random walks, which
# are not stationary, reach -0.12
MIN_DISAGREEMENT = 0.1


def channel_rows(X: np.ndarray) -> np.ndarray:
    """Each channel's values over samples and positions: (C, N x positions) float64."""
    a = np.asarray(X, np.float64)
    return np.moveaxis(a.reshape(a.shape[0], a.shape[1], -1), 1, 0).reshape(a.shape[1], -1)


def input_corr(X: np.ndarray) -> np.ndarray:
    """Channel correlations (C, C) over samples and positions; 0 for a constant channel."""
    return _corr(channel_rows(X))


def _corr(rows: np.ndarray) -> np.ndarray:
    """:func:`input_corr` of :func:`channel_rows`' rows."""
    r = rows - rows.mean(axis=1, keepdims=True)
    sd = np.sqrt((r * r).mean(axis=1))
    live = sd > 1e-12 * max(float(sd.max(initial=0.0)), 1e-30)
    z = np.where(live[:, None], r / np.where(live, sd, 1.0)[:, None], 0.0)
    return (z @ z.T) / max(r.shape[1], 1)


def _agreement(a: np.ndarray, s: np.ndarray) -> float:
    """Sum over channel pairs i < j of ``s_i s_j a_ij`` (``a``: products of correlations)."""
    return float((s @ a @ s - np.trace(a)) / 2.0)


def channel_signs(
    train_corr: np.ndarray, train_mean: np.ndarray, train_std: np.ndarray, X: np.ndarray
) -> np.ndarray:
    """Per-channel signs (C,) float64 of +-1 that map stream samples ``X`` back to the
    training orientation (see module); all ones when the evidence is not there."""
    c = len(train_mean)
    signs = np.ones(c)
    r = channel_rows(X)
    a = _corr(r) * np.asarray(train_corr, np.float64)
    if c < 2 or _agreement(a, signs) > -MIN_DISAGREEMENT:
        return signs
    if c <= MAX_EXHAUSTIVE:  # every pattern with channel 0 kept (the mirror images: below)
        codes = np.arange(1 << (c - 1))[:, None] >> np.arange(c - 1)[None] & 1
        every = np.hstack([np.ones((len(codes), 1)), 1.0 - 2.0 * codes])
        signs = every[int(np.argmax(np.einsum("pi,ij,pj->p", every, a, every)))]
    else:  # one channel at a time, the one that raises the agreement most
        best = _agreement(a, signs)
        while True:
            flipped = [signs * np.where(np.arange(c) == i, -1.0, 1.0) for i in range(c)]
            gains = [_agreement(a, f) for f in flipped]
            i = int(np.argmax(gains))
            if gains[i] <= best + 1e-12:
                break
            signs, best = flipped[i], gains[i]
    z_stream = r.mean(axis=1) / np.maximum(r.std(axis=1), 1e-12)
    z_train = np.asarray(train_mean, np.float64) / np.maximum(train_std, 1e-12)
    return signs if float(np.sum(signs * z_stream * z_train)) >= 0 else -signs
