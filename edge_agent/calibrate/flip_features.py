"""Forward-only features for bit flipping (QCore's general form, docs/method.md section 5).

One forward pass of the integer model over the calibration samples (the engine's kernels,
recording every weighted layer's input codes) gives every conv/linear layer's centred
input patches.
From them, per weight element ``(o, k)`` of a layer with scale ``s_o``:

- ``residual``: ``W/s - q0`` of the QAT latent weight against the deployed integer ``q0``
  (stored in the bundle), i.e. how close the weight sat to a rounding boundary;
- ``offset``: ``q - q0``, how far earlier rounds moved it;
- ``rec_step``: the integer step that best reduces the layer's local reconstruction error
  ``x (W - s q)^T`` on the current inputs, ``((q0 + r - q) C)_ok / C_kk`` with ``C`` the
  input second-moment matrix (re-rounding for the inputs the device now sees);
- ``task_step``: at the last layer, the damped diagonal-Newton integer step of the
  cross-entropy on the (pseudo-)labels (output error times input); at a hidden layer, the
  diagonal least-squares integer step that moves every sample's per-channel mean output
  towards its class's *prototype*: the mean output of the pre-drift anchor samples (the
  bundle's QCore) of that class under the current weights. Drifted samples are pulled
  towards what their class looked like before the drift, anchors stay near it: a task
  signal at every layer from one forward pass, no back-propagation;
- ``at_min`` / ``at_max``: the weight sits on the edge of its integer range;
- ``step_size``: ``2^-(b-1)``, the relative size of one step at this bit-width.

Nothing is propagated backwards through the network: every quantity is local to a layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.bundle import WEIGHTED_OPS, Bundle, QuantModel
from edge_agent.engine.reference import conv_geometry, padded, window
from kernels.plan.packing import qrange

FEATURES = (
    "residual",
    "offset",
    "rec_step",
    "task_step",
    "is_last",
    "at_min",
    "at_max",
    "step_size",
)
STEP_CLIP = 4.0
COV_ROWS = 4096  # patch rows a convolution's input second moments are estimated from


@dataclass(frozen=True)
class LayerTrace:
    """What one forward pass tells about one weighted layer."""

    patches: np.ndarray  # (M, K) float32 centred input codes / sums, torch column order:
    # every sample's for a layer with one position per sample, else at most COV_ROWS
    # evenly spaced (sample, position) rows (the second moments need no more)
    mean_patch: np.ndarray  # (N, K) float64 per-sample mean of the patches (codes)
    out_mean: np.ndarray  # (N, O) float64 per-sample, per-channel mean accumulator (real)


def layer_traces(
    bundle: Bundle, bits: int, codes: list[np.ndarray], inputs: list[np.ndarray]
) -> list[LayerTrace]:
    """Every weighted layer's :func:`layer_trace`."""
    pairs = enumerate(zip(codes, inputs, strict=True))
    return [layer_trace(bundle, bits, i, q, x) for i, (q, x) in pairs]


def layer_trace(bundle: Bundle, bits: int, i: int, q: np.ndarray, x: np.ndarray) -> LayerTrace:
    """Weighted layer ``i``'s patches and mean accumulators, from its input codes ``x``
    as :meth:`Engine.trace` records them for the ``bits`` model, its integer weights ``q``."""
    lq = bundle.quant[bits].layers[i]
    op = [op for op in bundle.arch["layers"] if op["op"] in WEIGHTED_OPS][i]
    if op["op"] == "linear":
        rows = x.astype(np.float32)
        mean_patch = rows.astype(np.float64)
    else:
        mean_patch, rows = conv_patch_stats(x.astype(np.float32), *conv_geometry(op))
    acc_mean = mean_patch @ q.T.astype(np.float64) + lq.bias_q
    real = lq.w_scale.astype(np.float64) * (lq.in_scale / input_divisors(bundle)[i])
    return LayerTrace(rows, mean_patch, acc_mean * real)


def conv_patch_stats(
    x: np.ndarray,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    max_rows: int = COV_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Of a convolution's centred input ``x`` (N, C, *S): every sample's mean im2col patch
    (N, K) float64, and the patches (R, K) at every ``step``-th output position along the
    last spatial axis of every sample, ``step`` the smallest that keeps R <= ``max_rows``
    where the axis allows, in (sample, position) order; columns in torch order, as
    :func:`edge_agent.engine.reference.patches`, which builds every patch."""
    nd = len(kernel)
    xp, out = padded(x, kernel, stride, padding)
    n, c = xp.shape[:2]
    lines = n * int(np.prod(out[:-1]))  # rows are lines of positions along the last axis
    step = 1
    while step < out[-1] and lines * -(-out[-1] // step) > max_rows:
        step += 1
    kept = [*out[:-1], -(-out[-1] // step)]
    steps = [*stride[:-1], stride[-1] * step]
    channels_last = np.ascontiguousarray(np.moveaxis(xp, 1, -1))  # (N, *S, C)
    rows = np.empty((n, *kept, c, *kernel), x.dtype)
    # the patch sums are one product: inputs (N * C, padded positions) times which
    # positions each kernel position meets (exact in float32 for integer codes)
    meets = np.zeros((int(np.prod(kernel)), *xp.shape[2:]), x.dtype)
    for k, offset in enumerate(np.ndindex(*kernel)):  # strided views, one per kernel position
        meets[k][window(offset, stride, out)] = 1
        some = channels_last[(slice(None), *window(offset, steps, kept))]
        rows[(slice(None),) * (2 + nd) + offset] = some
    sums = xp.reshape(n * c, -1) @ meets.reshape(len(meets), -1).T
    mean = sums.astype(np.float64) / np.prod(out)
    return mean.reshape(n, -1), rows.reshape(-1, c * int(np.prod(kernel)))


def input_divisors(bundle: Bundle) -> list[int]:
    """Per weighted layer, the number of positions a preceding GAP averaged (else 1)."""
    out: list[int] = []
    positions = int(np.prod(bundle.input_shape[1:]))
    divisor = 1
    for op in bundle.arch["layers"]:
        kind = op["op"]
        if kind in WEIGHTED_OPS:
            out.append(divisor)
            divisor = 1
        elif kind == "gap":
            divisor = positions
        if kind != "gap":
            positions = _positions_after(op, positions, bundle)
    return out


def _positions_after(op: dict[str, Any], positions: int, bundle: Bundle) -> int:
    """Spatial size after ``op`` (only its product matters for GAP's divisor)."""
    kind = op["op"]
    if kind in ("linear", "flatten"):
        return 1
    nd = 1 if kind.endswith("1d") else 2
    side = round(positions ** (1 / nd))
    k = np.atleast_1d(op["kernel"])[0]
    s = np.atleast_1d(op.get("stride", k))[0]
    p = np.atleast_1d(op.get("padding", 0))[0]
    side = (side + 2 * p - k) // s + 1
    return int(side**nd)


def layer_features(
    bundle: Bundle,
    quant: QuantModel,
    codes: list[np.ndarray],
    deployed: list[np.ndarray],
    residuals: list[np.ndarray],
    traces: list[LayerTrace],
    logits: np.ndarray,
    labels: np.ndarray,
    anchors: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Per weighted layer an (O, K, len(FEATURES)) float32 feature array
    (:func:`layer_feature` of every layer)."""
    return [
        layer_feature(bundle, quant, i, (q, q0, r), tr, logits, labels, anchors)
        for i, (q, q0, r, tr) in enumerate(zip(codes, deployed, residuals, traces, strict=True))
    ]


def layer_feature(
    bundle: Bundle,
    quant: QuantModel,
    i: int,
    weights: tuple[np.ndarray, np.ndarray, np.ndarray],
    tr: LayerTrace,
    logits: np.ndarray,
    labels: np.ndarray,
    anchors: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted layer ``i``'s (O, K, len(FEATURES)) float32 features.

    ``weights``: its current integer weights (O, K), the bundle's, and the float rounding
    residuals in [-0.5, 0.5] (zeros where the bundle has none); ``tr``: its trace;
    ``logits``, ``labels``: of the calibration samples; ``anchors``: which of them are
    pre-drift references for the hidden layers' class prototypes (none: hidden
    ``task_step`` is 0). A hidden layer's features depend on its own weights and inputs
    alone, the last layer's on the logits too.
    """
    q, q0, r = weights
    qmin, qmax = qrange(quant.weight_bits)
    last = len(quant.layers) - 1
    lq = quant.layers[i]
    s_w = lq.w_scale.astype(np.float64)[:, None]
    scale = float(lq.in_scale) / input_divisors(bundle)[i]  # patch codes -> real inputs
    cols = tr.patches  # (M, K) float32
    moments = np.einsum("mk,mk->k", cols, cols, dtype=np.float64)  # C_kk, C = cols.T cols
    diag = moments * (scale * scale / len(cols)) + 1e-12  # real inputs' second moments
    target = q0.astype(np.float64) + r - q  # latent minus current, in steps
    rec_step = _times_moments(target.astype(np.float32), cols) / (moments + 1e-12)[None, :]
    if i == last:
        x = cols.astype(np.float64) * scale  # (N, K): one position per sample
        p = _softmax(logits)
        err = -p
        err[np.arange(len(labels)), labels] += 1.0
        curv = (p * (1 - p)).T @ (x * x) / len(x) + 0.1 * diag[None, :]
        task_step = (err.T @ x / len(x)) / (s_w * curv)
    else:
        xbar = tr.mean_patch * scale
        task_step = _prototype_step(tr.out_mean, xbar, labels, anchors) / s_w
    feats = np.empty((*q.shape, len(FEATURES)), np.float32)
    for f, value in enumerate(
        (
            r,
            np.clip(q - q0, -2, 2),
            np.clip(rec_step, -STEP_CLIP, STEP_CLIP),
            np.clip(task_step, -STEP_CLIP, STEP_CLIP),
            float(i == last),
            q <= qmin,
            q >= qmax,
            2.0 ** -(quant.weight_bits - 1),
        )
    ):
        feats[..., f] = value
    return feats


def _times_moments(a: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``a @ (cols.T @ cols)`` (float64), multiplied in the cheaper order."""
    if 2 * a.shape[0] < a.shape[1]:  # O (M K) + (O M) K operations beat K K M + O K K
        return ((a @ cols.T) @ cols).astype(np.float64)
    return (a @ (cols.T @ cols)).astype(np.float64)


def _prototype_step(
    out_mean: np.ndarray, xbar: np.ndarray, labels: np.ndarray, anchors: np.ndarray | None
) -> np.ndarray:
    """(O, K) real weight step moving per-sample mean outputs towards class prototypes
    (``xbar``: (N, K) mean real input per sample)."""
    n, o = out_mean.shape
    if anchors is None or not anchors.any():
        return np.zeros((o, xbar.shape[1]))
    protos = np.zeros((int(labels.max()) + 1, o))
    known = np.zeros(len(protos), bool)
    for c in np.unique(labels[anchors]):
        protos[c] = out_mean[anchors & (labels == c)].mean(axis=0)
        known[c] = True
    err = np.where(known[labels][:, None], protos[labels] - out_mean, 0.0)  # (N, O)
    curv = (xbar * xbar).mean(axis=0)
    # diagonal Newton step, shared out over the K inputs that all move the same output
    return (err.T @ xbar / n) / (xbar.shape[1] * (curv + 0.1 * curv.mean() + 1e-12))[None, :]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
