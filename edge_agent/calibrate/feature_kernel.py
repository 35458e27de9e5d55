"""The per-channel statistics under :func:`edge_agent.calibrate.drift_reference.sample_features`
in one compiled pass, with numpy's exact arithmetic.

numpy computed them in six passes over float64 copies of the batch (``mean``, ``std``,
``diff``, ``abs``, ``mean``, each reduction casting float32 to float64 through a buffer):
3.2-3.4 us per BasicMotions sample on the agent's inference thread, for every sample.
This kernel reads each channel once and gives the same bits: every sum is numpy's
pairwise summation as its ``add.reduce`` does it on a row of up to 128 values (eight
accumulators, combined pairwise, then the tail in order), the mean and variance are
divided as numpy divides them, and the differences are float32, as ``np.diff`` of float32
data is. The logs stay with numpy (its SIMD log is not the C library's).
"""

from __future__ import annotations

import numpy as np

from kernels.codegen.jit import inline_kernel, kernel

# numpy's pairwise summation adds rows longer than this in halves, recursively; the
# kernel reproduces the unrolled block only, so longer rows go to numpy
MAX_ROW = 128


@inline_kernel
def _pairwise(buf: np.ndarray, n: int) -> float:
    """numpy's ``pairwise_sum`` of ``buf[:n]`` for ``n <= MAX_ROW``, plus its identity 0."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += buf[i]
        return 0.0 + res
    r0, r1, r2, r3 = buf[0], buf[1], buf[2], buf[3]
    r4, r5, r6, r7 = buf[4], buf[5], buf[6], buf[7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 += buf[i]
        r1 += buf[i + 1]
        r2 += buf[i + 2]
        r3 += buf[i + 3]
        r4 += buf[i + 4]
        r5 += buf[i + 5]
        r6 += buf[i + 6]
        r7 += buf[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += buf[i]
        i += 1
    return 0.0 + res


@kernel
def channel_stats(a: np.ndarray, out: np.ndarray) -> None:
    """For ``a`` (N, C, T) float32, C-contiguous, ``T <= MAX_ROW``: ``out`` (3, N, C)
    float64 gets each channel's mean, standard deviation and mean absolute first
    difference (``out[2]`` left alone when T is 1)."""
    n, c, t = a.shape
    buf = np.empty(t)
    for i in range(n):
        for j in range(c):
            row = a[i, j]
            for k in range(t):
                buf[k] = np.float64(row[k])
            mean = _pairwise(buf, t) / t
            for k in range(t):
                d = buf[k] - mean
                buf[k] = d * d
            out[0, i, j] = mean
            out[1, i, j] = np.sqrt(_pairwise(buf, t) / t)
            if t > 1:
                for k in range(t - 1):
                    buf[k] = np.float64(abs(np.float32(row[k + 1] - row[k])))
                out[2, i, j] = _pairwise(buf, t - 1) / (t - 1)
