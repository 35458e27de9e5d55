"""The numpy reference against direct loops written from docs/quantization.md."""

from __future__ import annotations

import numpy as np

from edge_agent.engine import reference


def _conv1d_loops(
    xq: np.ndarray, q: np.ndarray, bias: np.ndarray, zp: int, stride: int, pad: int
) -> np.ndarray:
    c, t = xq.shape
    o, _, k = q.shape
    t_out = (t + 2 * pad - k) // stride + 1
    acc = np.zeros((o, t_out), np.int64)
    for oc in range(o):
        for j in range(t_out):
            s = int(bias[oc])
            for ci in range(c):
                for kk in range(k):
                    pos = j * stride + kk - pad
                    if 0 <= pos < t:  # padding positions hold code z: they add nothing
                        s += int(q[oc, ci, kk]) * (int(xq[ci, pos]) - zp)
            acc[oc, j] = s
    return acc


def test_conv1d_matches_loops() -> None:
    rng = np.random.default_rng(0)
    xq = rng.integers(0, 256, (3, 11)).astype(np.uint8)
    q = rng.integers(-8, 8, (4, 3, 3)).astype(np.int8)
    bias = rng.integers(-100, 100, 4).astype(np.int32)
    got = reference.conv(xq[None], q, bias, 17, (2,), (1,))[0]
    np.testing.assert_array_equal(got, _conv1d_loops(xq, q, bias, 17, 2, 1))


def test_conv2d_matches_two_conv1d() -> None:
    rng = np.random.default_rng(1)
    xq = rng.integers(0, 256, (1, 2, 5, 6)).astype(np.uint8)
    q = rng.integers(-2, 2, (3, 2, 1, 3)).astype(np.int8)  # kernel height 1: rows independent
    bias = np.zeros(3, np.int32)
    got = reference.conv(xq, q, bias, 5, (1, 1), (0, 1))
    for row in range(5):
        want = _conv1d_loops(xq[0, :, row], q[:, :, 0], bias, 5, 1, 1)
        np.testing.assert_array_equal(got[0, :, row], want)


def test_requantize_ties_and_clamp() -> None:
    acc = np.array([[1, -1, 3, -3, 1000, -1000]], np.int32)
    m0 = np.full(6, 1 << 30, np.int32)
    shift = np.full(6, 31, np.int32)
    got = reference.requantize(acc, m0, shift, out_zp=10, relu=False, act_bits=8)
    np.testing.assert_array_equal(got, [[10, 10, 12, 8, 255, 0]])  # 0.5 and -0.5 go to 0
    got = reference.requantize(acc, m0, shift, out_zp=10, relu=True, act_bits=4)
    np.testing.assert_array_equal(got, [[10, 10, 12, 10, 15, 10]])


def test_pooling_and_gap() -> None:
    x = np.array([[[1, 2, 4, 4, 7]]], np.uint8)
    np.testing.assert_array_equal(reference.pool(x, (2,), (2,), "max"), [[[2, 4]]])
    np.testing.assert_array_equal(reference.pool(x, (2,), (2,), "avg"), [[[2, 4]]])  # 1.5 -> 2
    np.testing.assert_array_equal(reference.pool(x, (3,), (1,), "avg"), [[[2, 3, 5]]])
    np.testing.assert_array_equal(reference.gap(x, 3), [[18 - 15]])


def test_float_accumulation_is_exact_at_the_int32_and_int8_extremes() -> None:
    """Sums below 2^15 terms go through float64 BLAS; larger ones through int64: both must
    equal the int64 sum bit for bit, also where they wrap modulo 2^32."""
    rng = np.random.default_rng(7)
    for k in (100, 1 << 15):
        x = rng.integers(-(1 << 31), 1 << 31, (3, k), dtype=np.int64)
        x[0] = (1 << 31) - 1
        q = rng.integers(-128, 128, (2, k)).astype(np.int8)
        q[0] = 127
        want = (x @ q.astype(np.int64).T + 5).astype(np.int32)
        got = reference.linear(x, q, np.array([5, 5], np.int32), 0)
        np.testing.assert_array_equal(got, want)
