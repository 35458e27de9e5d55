"""Calibration methods of ``bench/real_drift.py``, each from the same deployed bundle.

Agent methods replay the stream sample by sample through the real
:class:`~edge_agent.calibrate.controller.CalibrationController` (as the agent's
inference thread does: observe every sample, run a round whenever one is due). The
others are references: AdaBN-style statistics re-estimation and TENT-style entropy
minimization (test-time-adaptation anchors, torch on the QAT model, then exported to
the integer grid), back-propagation replay (torch), and the torch-free back-propagation a
board could run (numpy, last layer, rounded back onto the integer grid). CPU is thread
CPU time of the calibration work; memory is the tracemalloc peak of one round (numpy and
Python allocations: what the agent's round and the numpy back-propagation allocate).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from bench.real_drift_data import StreamData
from edge_agent.bundle import Bundle
from edge_agent.calibrate.calibration_config import CalibrationConfig
from edge_agent.calibrate.controller import CalibrationController
from edge_agent.calibrate.flip_round import RoundResult
from edge_agent.calibrate.qcore import QCoreBuffer
from edge_agent.calibrate.qcore_miss import EXTRA_X, EXTRA_Y
from edge_agent.calibrate.routed import RoutedPredictor
from edge_agent.engine.engine import Engine
from edge_agent.training.export import quant_model
from edge_agent.training.fit import normalize
from edge_agent.training.qnet import QuantNet
from kernels.plan.packing import qrange

BACKPROP_STEPS = 80  # torch replay, as bench/calibration.py
NUMPY_STEPS = 120  # numpy last-layer fine-tuning
CHECK_EVERY = 5  # back-prop checkpoints (held-out accuracy; not counted in CPU)
TENT_STEPS = 10


@dataclass
class Outcome:
    """A calibrated engine and what it cost."""

    engine: Engine | RoutedPredictor
    cpu_s: float = 0.0
    rounds: int = 0
    kept: int = 0
    cpu_per_round: float = 0.0  # the jobs' CPU (buffer updates and rounds) per round
    stream_cpu_s: float = 0.0  # of cpu_s: the per-sample stream side (prescore, observe)
    curve: list[tuple[float, Checkpoint]] = field(default_factory=list)  # back-prop checkpoints
    note: str = ""
    returned: Engine | RoutedPredictor | None = (
        None  # after the stream went back to the train domain
    )
    alarms: tuple[int, int, int] = (0, 0, 0)


Checkpoint = Callable[[], Engine]  # builds a back-prop checkpoint's engine (not counted)


def accuracy(engine: Engine | RoutedPredictor, X: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the integer engine."""
    return float(np.mean(engine.predict(X)[0] == y)) if len(y) else float("nan")


# ---------------------------------------------------------------------- agent side


class RecentBuffer(QCoreBuffer):
    """Baseline buffer: keeps the most recent samples (no difficulty, no class balance)."""

    def _draw(self, weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
        n = len(weights)
        return np.arange(max(0, n - self.capacity), n)


def stats_rung() -> tuple[dict[str, Any] | None, str]:
    """CalibrationConfig overrides that run the label-free statistics rung alone, and
    those that turn it off (flips alone), if this build of the agent has it; else why not.

    The rung is built on another branch (issue 17 item 3); its module name is fixed there,
    its switches are looked up by name so that this benchmark needs no change when it lands.
    """
    try:
        importlib.import_module("edge_agent.calibrate.stats_rung")
    except ImportError:
        return None, "not available: edge_agent.calibrate.stats_rung is not in this build"
    names = {f.name for f in dataclasses.fields(CalibrationConfig)}
    if "stats_rung" not in names:
        return None, "not available: CalibrationConfig has no stats_rung switch"
    off = {"stats_rung": False, **no_label()}
    # flip rounds off: the rung alone (the controller's episode of flip rounds has 0)
    if "episode_rounds" not in names:
        return {"off": off}, "statistics rung alone: no switch for the flip rounds"
    return {"alone": {"stats_rung": True, "episode_rounds": 0, **no_label()}, "off": off}, ""


CONFIG: dict[str, Any] = {}  # CalibrationConfig overrides of every replay (a worker's)


def no_routing() -> dict[str, Any]:
    """CalibrationConfig overrides without domain routing (if this build has it)."""
    names = {f.name for f in dataclasses.fields(CalibrationConfig)}
    return {"route": False} if "route" in names else {}


def no_label() -> dict[str, Any]:
    """CalibrationConfig overrides without label-rung rounds (if this build has them): the
    other rungs' methods stay what they were, and ``no_label`` is the default path
    without the label rung."""
    names = {f.name for f in dataclasses.fields(CalibrationConfig)}
    return {"label_every": 0} if "label_every" in names else {}


def every_chunk() -> dict[str, Any]:
    """CalibrationConfig overrides for flip rounds on every chunk, without the drift signal
    and the statistics rung (the agent's path before they came): the reference a flip
    round's cost and the buffer policies are measured on, since with the drift trigger a
    stream may give no round at all."""
    names = {f.name for f in dataclasses.fields(CalibrationConfig)}
    out = {k: v for k, v in (("trigger", "samples"), ("stats_rung", False)) if k in names}
    return {**out, **no_label()}


def replay(
    bundle: Bundle,
    bits: int,
    data: StreamData,
    overrides: dict[str, Any] | None = None,
    buffer: str = "config",
    seed: int = 0,
    then: tuple[StreamData, StreamData] | None = None,
) -> Outcome:
    """Stream ``data`` through a fresh controller and engine, sample by sample. With
    ``then`` = (more drifted samples, train-domain samples): the outcome's engine is the
    model after ``data`` as a restart from the saved bundle gives it, and the stream goes
    on with both parts (the drift lasts, then goes away): ``returned`` is the model at
    the end, ``alarms`` the alarm counts after ``data``, after the drift, at the end.
    ``buffer``: "config" (the agent's configured draw), "qcore", "random", "recent" or
    "fp_wrong_as_miss"."""
    cfg = dataclasses.replace(CalibrationConfig(), **{**CONFIG, **(overrides or {})})
    controller = CalibrationController(bundle, cfg)
    if buffer in ("qcore", "random"):  # this draw whatever the agent's default ("config")
        controller.buffer = QCoreBuffer.from_bundle(
            bundle, dataclasses.replace(cfg.buffer_config(), random=buffer == "random"), seed=seed
        )
    elif buffer == "recent":
        controller.buffer = RecentBuffer.from_bundle(bundle, cfg.buffer_config(), seed=seed)
    elif buffer == "fp_wrong_as_miss":  # QCore without the favour for FP-wrong labels
        bc = dataclasses.replace(cfg.buffer_config(), random=False)
        bc = dataclasses.replace(bc, fp_wrong_count=bc.miss_count)
        controller.buffer = QCoreBuffer.from_bundle(bundle, bc, seed=seed)
    engine = Engine(bundle, bits=bits)
    cpu, jobs, rounds, kept = _stream(controller, engine, data, 0)
    # scored as the agent predicts: each sample on its domain's correction (with routing)
    out = Outcome(
        controller.predictor(engine), cpu, rounds, kept, jobs / max(rounds, 1), cpu - jobs
    )
    if then is not None:  # the model as a restart gives it (the bundle the agent saves)
        saved = controller.bundle.with_codes(engine.bits, engine.codes())
        out.engine = CalibrationController(saved, cfg).predictor(Engine(saved, bits=bits))
        alarms = controller.counts["drift_alarms"]
        drift_more, back = then
        _stream(controller, engine, drift_more, len(data.y))
        alarms_drift = controller.counts["drift_alarms"]
        _stream(controller, engine, back, len(data.y) + len(drift_more.y))
        out.returned = controller.predictor(engine)
        out.alarms = (alarms, alarms_drift, controller.counts["drift_alarms"])
    return out


def _stream(
    controller: CalibrationController, engine: Engine, data: StreamData, first: int
) -> tuple[float, float, int, int]:
    """Offer ``data`` sample by sample (stream indices from ``first``), running every due
    job as the agent's calibration thread would; (thread CPU s, of which the jobs' (buffer
    updates and rounds), rounds, kept rounds)."""
    cpu, jobs, rounds, kept = 0.0, 0.0, 0, 0
    t0 = time.thread_time()
    controller.prescore(data.X)  # the agent scores each batch it gets ahead, in one call
    cpu += time.thread_time() - t0
    for i in range(len(data.y)):
        x = data.X[i]
        # the agent predicts (routed, counted) before it offers the sample
        controller.predictor(engine, count=True).predict(x[None])
        t0 = time.thread_time()
        controller.observe(x, int(data.y[i]) if data.labelled[i] else None, first + i)
        t1 = time.thread_time()
        while controller.due():
            result = controller.run(engine)  # seeded as the agent seeds it
            if result is not None:  # None: a buffer update without a round
                rounds += 1
                kept += result.version is not None  # the controller's own rule
        t2 = time.thread_time()
        cpu += t2 - t0
        jobs += t2 - t1
    return cpu, jobs, rounds, kept


def rounds_of(
    controller: CalibrationController, engine: Engine, data: StreamData, first: int = 0
) -> Iterator[tuple[int, RoundResult]]:
    """Offer ``data`` as :func:`_stream` does (stream indices from ``first``), untimed;
    yields (stream index, result) after each round, for the round-by-round diagnoses."""
    controller.prescore(data.X)
    for i in range(len(data.y)):
        x = data.X[i]
        controller.predictor(engine, count=True).predict(x[None])
        controller.observe(x, int(data.y[i]) if data.labelled[i] else None, first + i)
        while controller.due():
            result = controller.run(engine)
            if result is not None:
                yield first + i, result


def round_peak_memory(
    bundle: Bundle, bits: int, data: StreamData, overrides: dict[str, Any] | None = None
) -> tuple[float, float]:
    """tracemalloc peaks (MB) of the controller's rounds (buffer update + round) on
    ``data``, above what was allocated before each: (the first round's, the largest of the
    others'). The first one also builds what the controller keeps for later rounds (the
    neighbour widths' engines); NaN where the stream gives no such round."""
    cfg = dataclasses.replace(CalibrationConfig(), **(overrides or {}))
    controller = CalibrationController(bundle, cfg)
    engine = Engine(bundle, bits=bits)
    peaks: list[float] = []
    tracemalloc.start()
    for i in range(len(data.y)):
        controller.observe(data.X[i], int(data.y[i]) if data.labelled[i] else None, i)
        while controller.due():
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            result = controller.run(engine)
            if result is not None:  # a job that was a buffer update alone does not count
                peaks.append((tracemalloc.get_traced_memory()[1] - base) / 2**20)
    tracemalloc.stop()
    nan = float("nan")
    return (peaks[0] if peaks else nan), max(peaks[1:], default=nan)


# ---------------------------------------------------------------------- torch anchors


def _with_quant(
    bundle: Bundle, qnet: QuantNet, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> Bundle:
    b = dataclasses.replace(
        bundle, quant={qnet.weight_bits: quant_model(qnet)}, default_bits=qnet.weight_bits
    )
    if mean is not None and std is not None:
        b = dataclasses.replace(
            b, norm_mean=mean.astype(np.float32), norm_std=std.astype(np.float32)
        )
    return b


def _channel_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axes = (0, *range(2, X.ndim))
    return X.mean(axis=axes), np.maximum(X.std(axis=axes), 1e-6)


@torch.no_grad()
def _pre_activations(net: QuantNet, x: torch.Tensor, layer: int) -> torch.Tensor:
    out: list[torch.Tensor] = []
    h = net.qlayers[layer].register_forward_hook(lambda _m, _i, o: out.append(o))
    net(x)
    h.remove()
    o = out[0]
    return o.transpose(0, 1).reshape(o.shape[1], -1)  # (channels, everything else)


@torch.no_grad()
def _adabn_net(
    bundle: Bundle, qnet: QuantNet, X_src: np.ndarray, X_tgt: np.ndarray
) -> tuple[QuantNet, np.ndarray, np.ndarray]:
    """AdaBN on a BN-folded model: the input normalization re-estimated on the target, and
    every hidden layer's pre-activation per-channel mean and std moved back to what they
    were on the source (weights and their per-channel LSQ scale scaled together, so the
    integer codes stay; the bias absorbs the shift)."""
    net = copy.deepcopy(qnet).eval()
    mean, std = _channel_stats(X_tgt)
    xs = normalize(X_src, bundle.norm_mean, bundle.norm_std)
    xt = normalize(X_tgt, mean, std)
    for i in range(len(net.qlayers) - 1):
        src = _pre_activations(qnet, xs, i)
        tgt = _pre_activations(net, xt, i)
        ms, ss = src.mean(1), src.std(1) + 1e-6
        mt, st = tgt.mean(1), tgt.std(1) + 1e-6
        a = (ss / st).clamp(0.25, 4.0)
        ql = net.quant_layers()[i]
        shape = (-1, *([1] * (ql.layer.weight.ndim - 1)))
        ql.layer.weight.mul_(a.reshape(shape))
        ql.wq.scale.mul_(a)
        bias = cast(torch.Tensor, ql.layer.bias)
        bias.copy_(a * bias + ms - a * mt)
    return net, mean, std


def adabn(bundle: Bundle, qnet: QuantNet, X_src: np.ndarray, data: StreamData) -> Outcome:
    """AdaBN-style statistics re-estimation on the unlabelled stream (anchor)."""
    t0 = time.thread_time()
    net, mean, std = _adabn_net(bundle, qnet, X_src, data.distinct())
    b = _with_quant(bundle, net, mean, std)
    return Outcome(Engine(b), time.thread_time() - t0)


def tent(bundle: Bundle, qnet: QuantNet, X_src: np.ndarray, data: StreamData, seed: int) -> Outcome:
    """TENT-style: AdaBN, then entropy minimization of the predictions on the unlabelled
    stream, updating only the per-channel affine parameters (biases and LSQ weight scales:
    BatchNorm's shift and scale once folded) (anchor)."""
    torch.manual_seed(seed)
    t0 = time.thread_time()
    X_tgt = data.distinct()
    net, mean, std = _adabn_net(bundle, qnet, X_src, X_tgt)
    x = normalize(X_tgt, mean, std)
    params: list[torch.Tensor] = []
    for ql in net.quant_layers():
        params += [cast(torch.Tensor, ql.layer.bias), ql.wq.scale]
    for w in net.parameters():
        w.requires_grad_(False)
    for t in params:
        t.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-3)
    net.eval()  # quantizer ranges fixed; no BN left to put in train mode
    for _ in range(TENT_STEPS):
        idx = torch.randint(0, len(x), (min(64, len(x)),))
        prob = F.softmax(net(x[idx]), 1)
        loss = -(prob * torch.log(prob + 1e-8)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    b = _with_quant(bundle, net, mean, std)
    return Outcome(Engine(b), time.thread_time() - t0)


def _replay_set(bundle: Bundle, data: StreamData) -> tuple[np.ndarray, np.ndarray]:
    """Labelled stream samples plus the bundle's QCore (pre-drift anchors against forgetting)."""
    Xl, yl = data.labelled_set()
    qx, qy = bundle.extras.get(EXTRA_X), bundle.extras.get(EXTRA_Y)
    if qx is None or qy is None:
        return Xl, yl
    return np.concatenate([Xl, qx]).astype(np.float32), np.concatenate([yl, qy])


def torch_replay(bundle: Bundle, qnet: QuantNet, data: StreamData, seed: int) -> Outcome:
    """Back-propagation replay (torch): Adam on the fake-quant model over the labelled
    stream samples and the QCore, exported to integers; a checkpoint every CHECK_EVERY."""
    torch.manual_seed(seed)
    X, y = _replay_set(bundle, data)
    t0 = time.thread_time()
    net = copy.deepcopy(qnet)
    x, t = normalize(X, bundle.norm_mean, bundle.norm_std), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    cpu = time.thread_time() - t0
    curve: list[tuple[float, Checkpoint]] = []
    for step in range(1, BACKPROP_STEPS + 1):
        t0 = time.thread_time()
        net.train()
        idx = torch.randint(0, len(x), (min(32, len(x)),))
        loss = F.cross_entropy(net(x[idx]), t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        cpu += time.thread_time() - t0
        if step % CHECK_EVERY == 0 or step == BACKPROP_STEPS:
            net.eval()
            t0 = time.thread_time()
            b = _with_quant(bundle, net)
            cpu += time.thread_time() - t0
            curve.append((cpu, functools.partial(Engine, b)))
    return Outcome(curve[-1][1](), cpu, curve=curve)


# ---------------------------------------------------------------------- torch-free back-prop


def numpy_last_layer(
    bundle: Bundle, bits: int, data: StreamData, seed: int, peak_memory: bool = False
) -> Outcome:
    """Back-propagation a board can run without torch: the last layer's integer weights get
    a float shadow, Adam on the cross-entropy of the labelled stream samples plus the
    QCore (features from one engine pass that records the last layer's inputs), and are
    rounded back onto the integer grid (same scales and biases) and swapped into the
    engine at every checkpoint (counted, as a board does it; the checkpoint's own engine
    for scoring is built afterwards, not counted). With ``peak_memory`` the note holds the
    tracemalloc peak (MB) of the run above what the engine held before it."""
    X, y = _replay_set(bundle, data)
    engine = Engine(bundle, bits=bits)
    last = len(bundle.quant[bits].layers) - 1
    lq = bundle.quant[bits].layers[last]
    lo, hi = qrange(bits)
    if peak_memory:
        tracemalloc.start()
    t0 = time.thread_time()
    logits0, inputs = engine.trace(X)
    h = inputs[last].astype(np.float64)
    inputs_codes = engine.layer_codes(last)
    W = inputs_codes.astype(np.float64)
    b = lq.bias_q.astype(np.float64)
    mult = np.asarray(lq.out_mult, dtype=np.float64)
    onehot = np.eye(W.shape[0])[y]
    m, v = np.zeros_like(W), np.zeros_like(W)
    lr, b1, b2 = 0.05, 0.9, 0.999
    cpu = time.thread_time() - t0
    curve: list[tuple[float, Checkpoint]] = []
    for step in range(1, NUMPY_STEPS + 1):
        t0 = time.thread_time()
        z = (h @ W.T + b) * mult
        z -= z.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        g = ((p - onehot) * mult / len(y)).T @ h
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        W -= lr * (m / (1 - b1**step)) / (np.sqrt(v / (1 - b2**step)) + 1e-12)
        cpu += time.thread_time() - t0
        if step % CHECK_EVERY == 0 or step == NUMPY_STEPS:
            t0 = time.thread_time()
            q = np.clip(np.rint(W), lo, hi).astype(np.int8)
            engine.swap_weights({last: q})
            cpu += time.thread_time() - t0
            curve.append((cpu, functools.partial(_checkpoint, bundle, bits, last, q)))
    note = ""
    if peak_memory:
        note = f"{tracemalloc.get_traced_memory()[1] / 2**20:.3f}"
        tracemalloc.stop()
    # the float model above must be the engine's own last layer (checked once per run)
    z0 = (h @ inputs_codes.astype(np.float64).T + b) * mult
    if not np.allclose(z0, logits0, rtol=1e-3, atol=1e-3 * float(np.abs(logits0).max() + 1)):
        note += " (float last layer does not match the engine's logits)"
    return Outcome(curve[-1][1](), cpu, curve=curve, note=note)


def _checkpoint(bundle: Bundle, bits: int, last: int, q: np.ndarray) -> Engine:
    e = Engine(bundle, bits=bits)
    e.swap_weights({last: q})
    return e


def first_reaching(
    curve: list[tuple[float, Checkpoint]], target: float, score: Callable[[Engine], float]
) -> float | None:
    """CPU seconds at which a back-prop run first reaches ``target`` held-out accuracy."""
    for cpu, make in curve:
        if score(make()) >= target - 1e-9:
            return cpu
    return None
