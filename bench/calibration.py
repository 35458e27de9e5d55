"""Drift benchmark: QCore + bit-flipping recalibration against baselines, side by side.

For each data set, seed and bit-width a bundle is trained (FP, QAT at 8/4/2 bits, QCore,
flipping network). The test split is cut in two halves: the *stream* half is replayed
with an injected drift and a fraction of labels (the rest get FP pseudo-labels), the
*evaluation* half measures accuracy before the drift (clean), right after (drifted), after
calibration (drifted) and the forgetting (clean, after calibration). Every method starts
from the same deployed model and sees the same data:

- ``none``: no calibration;
- ``random`` / ``greedy`` / ``flipper``: bit-flip rounds (same budget) with random flips,
  greedy local flips without a network, and the flipping network; on the QCore buffer;
- ``flipper/randbuf``: the flipping network on a buffer drawn at random (not by difficulty);
- ``replay`` / ``replay/randbuf``: back-propagation fine-tuning of the fake-quant model on the
  buffer (experience replay), then re-export to integers;
- ``camel``: back-propagation on the buffer plus the whole new chunk.

CPU seconds are thread CPU time of the calibration itself (the buffer's update included),
the least of REPEATS identical runs (the machine is shared and noisy),
with BLAS and torch on one thread so that thread time is all of it. Back-propagation's cost
to reach the flipper's accuracy is given twice: with torch already running (steps only),
and as a device pays it, adding a fresh process that imports torch and builds the
fake-quant model from the bundle (the agent never imports torch). The flip methods'
accuracy is also reported after every round. Peak memory
of a QCore update + flip round is measured in fresh processes without torch: with the
ahead-of-time compiled kernels the service uses, with numba's JIT on a warm cache, and
once on a cold cache (the JIT compiling in that process).

    python -m bench.calibration                    # full run (3 data sets x 3 seeds x 8/4/2)
    python -m bench.calibration --datasets basicmotions --bits 4 --seeds 0
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from edge_agent.bundle import Bundle  # noqa: E402
from edge_agent.bundle_io import save_bundle  # noqa: E402
from edge_agent.calibrate.flip_net import FlipNet  # noqa: E402
from edge_agent.calibrate.flip_round import (  # noqa: E402
    BitFlipCalibrator,
    FlipConfig,
    Proposer,
    greedy_proposer,
    network_proposer,
    random_proposer,
)
from edge_agent.calibrate.qcore import BufferConfig, QCoreBuffer  # noqa: E402
from edge_agent.calibrate.qcore_miss import EXTRA_X, EXTRA_Y  # noqa: E402
from edge_agent.data.datasets import Dataset, load_dataset  # noqa: E402
from edge_agent.data.drift import Drift  # noqa: E402
from edge_agent.engine.engine import Engine  # noqa: E402
from edge_agent.engine.fp_model import fp_predict_fn  # noqa: E402
from edge_agent.training.arch import default_spec  # noqa: E402
from edge_agent.training.export import build_bundle, quant_model  # noqa: E402
from edge_agent.training.fit import TrainConfig, fit, normalize  # noqa: E402
from edge_agent.training.flip_train import FlipTrainConfig, train_flipper, with_flipper  # noqa: E402
from edge_agent.training.qcore_build import MissTracker, QCoreConfig, qcore_extras  # noqa: E402
from edge_agent.training.qnet import QuantNet  # noqa: E402

log = logging.getLogger("bench.calibration")

DRIFTS = {
    "basicmotions": ["rotation", "offset", "gain:4.0", "dropout"],
    "gunpoint": ["offset", "gain:3.0", "noise:1.5", "timewarp"],
    "digits": ["shift", "rotate", "contrast"],
}
FLIP = FlipConfig()
ROUNDS = 8  # flip rounds per calibration (the agent runs one per 32 stream samples)
BACKPROP_STEPS = 80
REPEATS = 2  # every calibration runs this often (identically); its CPU time is the least


def train(ds: Dataset, seed: int, bits: list[int]) -> tuple[Bundle, dict[int, QuantNet]]:
    """A bundle with QCore and flipper, and the QAT models (for the back-prop baselines)."""
    bundle, qnets = train_base(ds, seed, bits)
    return with_flipper(bundle, train_flipper(bundle, qnets, ds, seed, FlipTrainConfig())), qnets


def train_base(ds: Dataset, seed: int, bits: list[int]) -> tuple[Bundle, dict[int, QuantNet]]:
    """A bundle with QCore (no flipper yet) and the QAT models."""
    cfg = TrainConfig(progress=False)
    qcfg = QCoreConfig()
    tracker = MissTracker.for_dataset(ds, qcfg, cfg.act_bits)
    spec = default_spec(ds.input_shape, ds.num_classes)
    fp, qnets, _ = fit(ds, spec, bits, seed, cfg, tracker, qcfg.snapshot_steps(cfg.fp_steps))
    bundle = build_bundle(
        ds, spec, fp, qnets, {"seed": seed}, qcore_extras(ds, tracker, qcfg, seed)
    )
    return bundle, qnets


def random_buffer_bundle(bundle: Bundle, ds: Dataset, seed: int) -> Bundle:
    """The bundle with its QCore replaced by as many training samples drawn at random."""
    n = len(bundle.extras[EXTRA_Y])
    idx = np.random.default_rng(seed).choice(len(ds.X_train), size=n, replace=False)
    extras = {
        **bundle.extras,
        EXTRA_X: ds.X_train[idx],
        EXTRA_Y: ds.y_train[idx],
        "qcore_difficulty": np.ones(n, np.float32),
        "qcore_train_index": idx,
    }
    return dataclasses.replace(bundle, extras=extras)


def accuracy(engine: Engine, X: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the integer engine."""
    return float(np.mean(engine.predict(X)[0] == y))


def flip_method(
    bundle: Bundle,
    bits: int,
    proposer: Callable[[], Proposer],
    chunk: tuple[np.ndarray, ...],
    random_buf: bool,
    seed: int,
    evaluation: tuple[np.ndarray, np.ndarray],
) -> tuple[Engine, float, list[float]]:
    """Update a QCore buffer with the chunk, then ROUNDS gated flip rounds; also returns
    the accuracy on ``evaluation`` after every round (not counted in the CPU time). The
    calibration runs REPEATS times from the start (``proposer()`` makes a fresh proposer
    each time; the runs are identical): the CPU time is the least of them."""
    X, y, labelled = chunk
    cpu_runs, curve = [], []
    for attempt in range(REPEATS):
        engine = Engine(bundle, bits=bits)
        cpu, t0 = 0.0, time.thread_time()
        buf = QCoreBuffer.from_bundle(bundle, BufferConfig(random=random_buf), seed=seed)
        labels = {bits: lambda a, e=engine: e.predict(a)[0]}
        buf.update(X, y, labelled, labels, fp_predict_fn(bundle))
        calib = BitFlipCalibrator(bundle, proposer(), FLIP)
        for r in range(ROUNDS):
            calib.run_round(engine, buf.X, buf.y, seed=r, labelled=buf.labelled)
            cpu += time.thread_time() - t0
            if attempt == 0:
                curve.append(accuracy(engine, *evaluation))
            t0 = time.thread_time()
        cpu_runs.append(cpu)
    return engine, min(cpu_runs), curve


def backprop_method(
    bundle: Bundle,
    qnet: QuantNet,
    X: np.ndarray,
    y: np.ndarray,
    seed: int,
    checkpoints: bool = False,
) -> tuple[Engine, float, list[tuple[float, Engine]]]:
    """Fine-tune the fake-quant model on (X, y) with back-propagation; re-export. Runs
    REPEATS times (seeded: identical runs); CPU times are the least of them.

    With ``checkpoints`` also returns (CPU seconds so far, engine) after every 5 steps: the
    cost at which back-propagation first reaches a given accuracy (each export counted
    once, in its own checkpoint)."""
    runs = [_backprop_run(bundle, qnet, X, y, seed, checkpoints) for _ in range(REPEATS)]
    curve = [(min(run[i][0] for run in runs), runs[0][i][1]) for i in range(len(runs[0]))]
    return curve[-1][1], curve[-1][0], curve


def _backprop_run(
    bundle: Bundle, qnet: QuantNet, X: np.ndarray, y: np.ndarray, seed: int, checkpoints: bool
) -> list[tuple[float, Engine]]:
    """One back-propagation fine-tuning: (CPU seconds so far, engine) per checkpoint. The
    set-up (a copy of the deployed model to train, the batch, the optimizer) counts."""
    torch.manual_seed(seed)
    t0 = time.thread_time()
    net = copy.deepcopy(qnet)
    x = normalize(X, bundle.norm_mean, bundle.norm_std)
    t = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    cpu = time.thread_time() - t0
    curve: list[tuple[float, Engine]] = []
    for step in range(1, BACKPROP_STEPS + 1):
        t0 = time.thread_time()
        net.train()
        idx = torch.randint(0, len(x), (min(32, len(x)),))
        loss = F.cross_entropy(net(x[idx]), t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        cpu += time.thread_time() - t0
        if step == BACKPROP_STEPS or (checkpoints and step % 5 == 0):
            net.eval()
            t0 = time.thread_time()
            quant = quant_model(net)
            cpu_export = time.thread_time() - t0
            tuned = dataclasses.replace(
                bundle, quant={qnet.weight_bits: quant}, default_bits=qnet.weight_bits
            )
            curve.append((cpu + cpu_export, Engine(tuned)))
    return curve


Chunk = tuple[np.ndarray, np.ndarray, np.ndarray]  # stream inputs, labels, labelled mask


def case_data(
    ds: Dataset, drift: str, seed: int, label_fraction: float
) -> tuple[Chunk, tuple[np.ndarray, np.ndarray], np.ndarray]:
    """One case's data: the drifted stream half (inputs, labels, which are labelled), the
    drifted evaluation half (inputs, labels) and its clean inputs."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ds.X_test))
    s_idx, e_idx = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    d = Drift.parse(f"{drift}@0")
    Xs = d.apply_stream(ds.X_test[s_idx], seed=seed)
    Xe_clean, ye = ds.X_test[e_idx], ds.y_test[e_idx]
    Xe = d.apply_stream(Xe_clean, seed=seed + 1)
    ys = ds.y_test[s_idx]
    labelled = rng.random(len(ys)) < label_fraction
    return (Xs, ys, labelled), (Xe, ye), Xe_clean


def run_case(
    ds: Dataset,
    bundle: Bundle,
    qnets: dict[int, QuantNet],
    bits: int,
    drift: str,
    seed: int,
    label_fraction: float,
) -> dict[str, dict[str, Any]]:
    """Every method on one (data set, seed, bits, drift) case."""
    (Xs, ys, labelled), (Xe, ye), Xe_clean = case_data(ds, drift, seed, label_fraction)
    fp_pred = fp_predict_fn(bundle)(Xs)
    targets = np.where(labelled, ys, fp_pred)  # what the device knows about the chunk
    base = Engine(bundle, bits=bits)
    pre, post = accuracy(base, Xe_clean, ye), accuracy(base, Xe, ye)
    net = FlipNet.from_extras(bundle.extras)
    assert net is not None
    randbuf = random_buffer_bundle(bundle, ds, seed)
    chunk, ev = (Xs, ys, labelled), (Xe, ye)
    network = functools.partial(network_proposer, net, FLIP.threshold)
    flips = {
        "random": flip_method(
            bundle, bits, functools.partial(random_proposer, seed), chunk, False, seed, ev
        ),
        "greedy": flip_method(bundle, bits, greedy_proposer, chunk, False, seed, ev),
        "flipper": flip_method(bundle, bits, network, chunk, False, seed, ev),
        "flipper/randbuf": flip_method(randbuf, bits, network, chunk, True, seed, ev),
    }
    runs: dict[str, tuple[Engine, float]] = {"none": (base, 0.0)}
    runs.update({name: (eng, cpu) for name, (eng, cpu, _) in flips.items()})
    for name, b in (("replay", bundle), ("replay/randbuf", randbuf)):
        cpu_buffer = float("inf")  # the buffer update counts for replay as for the flipper
        for _ in range(REPEATS):
            t0 = time.thread_time()
            buf = QCoreBuffer.from_bundle(
                b, BufferConfig(random=name.endswith("randbuf")), seed=seed
            )
            buf.update(Xs, ys, labelled, {bits: lambda a: base.predict(a)[0]}, fp_predict_fn(b))
            cpu_buffer = min(cpu_buffer, time.thread_time() - t0)
        eng, cpu, curve = backprop_method(
            bundle, qnets[bits], buf.X, buf.y, seed, checkpoints=name == "replay"
        )
        runs[name] = (eng, cpu_buffer + cpu)
        if name == "replay":
            replay_curve = [(cpu_buffer + c, e) for c, e in curve]
    qx, qy = bundle.extras[EXTRA_X], bundle.extras[EXTRA_Y]
    eng, cpu, _ = backprop_method(
        bundle, qnets[bits], np.concatenate([qx, Xs]), np.concatenate([qy, targets]), seed
    )
    runs["camel"] = (eng, cpu)
    flip_acc = accuracy(runs["flipper"][0], Xe, ye)
    # CPU back-propagation needs to first reach the flipper's accuracy (None: not within
    # BACKPROP_STEPS)
    match = next((c for c, e in replay_curve if accuracy(e, Xe, ye) >= flip_acc), None)
    return {
        name: {
            "pre": pre,
            "post": post,
            "calibrated": accuracy(eng, Xe, ye),
            "clean_after": accuracy(eng, Xe_clean, ye),
            **({"cpu_s_to_match_flipper": match} if name == "replay" else {}),
            **({"curve": flips[name][2]} if name in flips else {}),
            "cpu_s": cpu,
        }
        for name, (eng, cpu) in runs.items()
    }


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent's memory
_MEMORY_PROBE = """
import json, sys
from pathlib import Path
steps = {{}}
def mark(name):
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    steps[name] = int(status.split()[0]) / 1024
from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.flip_net import FlipNet
from edge_agent.calibrate.flip_round import BitFlipCalibrator, network_proposer
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine
from edge_agent.engine.fp_model import fp_predict_fn
from edge_agent.calibrate.qcore import QCoreBuffer
b = load_bundle({path!r}); ds = load_dataset({data!r})
mark("imports, bundle, data")
e = Engine(b, bits={bits}); e.warmup()
mark("engine")
X = Drift.parse("offset@0").apply_stream(ds.X_test[:32])
buf = QCoreBuffer.from_bundle(b)
buf.update(X, ds.y_test[:32], None, {{{bits}: lambda a: e.predict(a)[0]}}, fp_predict_fn(b))
mark("QCore update")
net = FlipNet.from_extras(b.extras)
BitFlipCalibrator(b, network_proposer(net, 0.5)).run_round(e, buf.X, buf.y)
mark("flip round")
assert "torch" not in sys.modules
steps["numba imported"] = "numba" in sys.modules
print(json.dumps(steps))
"""


def flip_round_memory(bundle_path: Path, data: str, bits: int, kernels: str, cache: Path) -> dict:
    """Peak RSS (MB) after each step of a fresh process (no torch) doing one QCore update
    and one flip round, with ``kernels`` ("aot" or "jit") from the kernel cache ``cache``."""
    code = _MEMORY_PROBE.format(path=str(bundle_path), data=data, bits=bits)
    env = {**os.environ, "EDGE_AGENT_KERNELS": kernels, "EDGE_AGENT_JIT_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if out.returncode != 0:  # e.g. no AOT module for these kernel sources: say so, go on
        log.warning("memory probe (%s) failed: %s", kernels, out.stderr.strip()[-300:])
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "?"}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def memory_of(path: Path, data: str, cache: Path, cold: bool) -> dict[str, dict]:
    """Flip-round memory of the bundle at ``path`` with AOT kernels and with the JIT on a
    warm cache (first, with ``cold``, on the cache as it is: the JIT compiles there)."""
    out = {}
    if cold:
        out["jit, cold cache"] = flip_round_memory(path, data, 4, "jit", cache)
    out["jit, warm cache"] = flip_round_memory(path, data, 4, "jit", cache)
    out["aot"] = flip_round_memory(path, data, 4, "aot", cache)
    path.unlink()
    return out


_TORCH_START = """
import time
import torch
from edge_agent.bundle_io import load_bundle
from edge_agent.training.burst import models_from_bundle
torch.set_num_threads(1)
models_from_bundle(load_bundle({path!r}), {bits})
print(time.process_time())
"""


def backprop_startup_cpu(bundle_path: Path, bits: int, repeats: int = 3) -> float:
    """CPU seconds a device spends before its first back-prop step: a fresh process that
    imports torch and builds the fake-quant model from the bundle (as a QAT burst does;
    the agent itself never imports torch). The least of ``repeats`` runs."""
    code = _TORCH_START.format(path=str(bundle_path), bits=bits)
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], check=True, capture_output=True, text=True
            ).stdout.split()[-1]
        )
        for _ in range(repeats)
    ]
    return min(runs)


def build_aot_kernels(cache: Path) -> None:
    """Compile the kernels ahead of time into ``cache`` (what deploy/install.sh does)."""
    env = {**os.environ, "EDGE_AGENT_JIT_CACHE": str(cache)}
    code = "import sys; from edge_agent.cli import main; sys.exit(main(['compile-kernels']))"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)


def bit_switch(ds: Dataset, bundle: Bundle, drift: str, seed: int) -> dict[str, float]:
    """8-bit model under drift, switched to 4 bits at run time, then recalibrated there."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ds.X_test))
    s_idx, e_idx = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    d = Drift.parse(f"{drift}@0")
    Xs, Xe = d.apply_stream(ds.X_test[s_idx], seed=seed), d.apply_stream(ds.X_test[e_idx], seed)
    ye = ds.y_test[e_idx]
    engine = Engine(bundle, bits=8)
    at8 = accuracy(engine, Xe, ye)
    engine.set_bits(4)
    at4 = accuracy(engine, Xe, ye)
    net = FlipNet.from_extras(bundle.extras)
    assert net is not None
    buf = QCoreBuffer.from_bundle(bundle, seed=seed)
    buf.update(
        Xs, ds.y_test[s_idx], None, {4: lambda a: engine.predict(a)[0]}, fp_predict_fn(bundle)
    )
    calib = BitFlipCalibrator(bundle, network_proposer(net, FLIP.threshold), FLIP)
    for r in range(ROUNDS):
        calib.run_round(engine, buf.X, buf.y, seed=r, labelled=buf.labelled)
    return {
        "8bit_drifted": at8,
        "after_switch_to_4": at4,
        "after_recalibration": accuracy(engine, Xe, ye),
    }


def summarize(results: list[dict[str, Any]]) -> str:
    """Markdown table: mean over seeds and drifts per data set, bits and method."""
    groups: dict[tuple[str, int, str], list[dict[str, float]]] = defaultdict(list)
    for r in results:
        for method, m in r["methods"].items():
            groups[(r["dataset"], r["bits"], method)].append(m)
    lines = [
        "| data set | bits | method | before drift | after drift | calibrated | recovered | "
        "forgetting | CPU s/cal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, bits, method), ms in groups.items():
        keys = ("pre", "post", "calibrated", "clean_after", "cpu_s")
        mean = {k: statistics.fmean(m[k] for m in ms) for k in keys}
        lost = mean["pre"] - mean["post"]
        rec = (mean["calibrated"] - mean["post"]) / lost if lost > 1e-9 else float("nan")
        lines.append(
            f"| {name} | {bits} | {method} | {100 * mean['pre']:.1f} | {100 * mean['post']:.1f} | "
            f"{100 * mean['calibrated']:.1f} | {rec:.0%} | "
            f"{100 * (mean['pre'] - mean['clean_after']):+.1f} | {mean['cpu_s']:.2f} |"
        )
    return "\n".join(lines)


def per_drift(results: list[dict[str, Any]], name: str, bits: int) -> str:
    """Per-drift recovery of the flipper and greedy at one (data set, bits)."""
    lines = [
        "| drift | after drift | flipper | greedy | random | replay | camel |",
        "|---|---|---|---|---|---|---|",
    ]
    drifts = sorted({r["drift"] for r in results if r["dataset"] == name and r["bits"] == bits})
    for d in drifts:
        rs = [
            r["methods"]
            for r in results
            if (r["dataset"], r["bits"], r["drift"]) == (name, bits, d)
        ]

        def mean(method: str, key: str, rs: list[dict[str, Any]] = rs) -> float:
            return 100 * statistics.fmean(m[method][key] for m in rs)

        lines.append(
            f"| {d} | {mean('none', 'post'):.1f} | "
            + " | ".join(
                f"{mean(m, 'calibrated'):.1f}"
                for m in ("flipper", "greedy", "random", "replay", "camel")
            )
            + " |"
        )
    return "\n".join(lines)


def rounds_table(results: list[dict[str, Any]]) -> str:
    """Accuracy after each flip round (mean over seeds and drifts) per proposer."""
    head = " | ".join(str(r) for r in range(1, ROUNDS + 1))
    lines = [
        f"| data set | bits | method | after drift | {head} |",
        "|---|---|---|---|" + "---|" * ROUNDS,
    ]
    keys = sorted({(r["dataset"], r["bits"]) for r in results}, key=lambda k: (k[0], -k[1]))
    for name, bits in keys:
        rs = [r["methods"] for r in results if (r["dataset"], r["bits"]) == (name, bits)]
        post = 100 * statistics.fmean(m["none"]["post"] for m in rs)
        for method in ("random", "greedy", "flipper"):
            curve = 100 * np.mean([m[method]["curve"] for m in rs], axis=0)
            lines.append(
                f"| {name} | {bits} | {method} | {post:.1f} | "
                + " | ".join(f"{c:.1f}" for c in curve)
                + " |"
            )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Accuracy through the stream (before drift, drifted, calibrated) per method, 4-bit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["dataset"] for r in results})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rs = [r for r in results if r["dataset"] == name and r["bits"] == 4] or [
            r for r in results if r["dataset"] == name
        ]
        for method in rs[0]["methods"]:
            pts = [
                100 * statistics.fmean(r["methods"][method][k] for r in rs)
                for k in ("pre", "post", "calibrated")
            ]
            ax.plot(["before drift", "drift", "after calibration"], pts, marker="o", label=method)
        ax.set_title(f"{name}, {rs[0]['bits']}-bit (mean over drifts and seeds)")
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cost_to_match(results: list[dict[str, Any]], startup: dict[str, float]) -> str:
    """Per (data set, bits): flipper CPU vs back-prop CPU to reach the flipper's accuracy,
    with torch already running (steps only) and as a device runs it (``startup``: a fresh
    torch process building the model first). A case where back-propagation does not reach
    it within BACKPROP_STEPS counts with the CPU of all of them, a lower bound (marked >=)."""
    lines = [
        "| data set | bits | flipper CPU s | back-prop CPU s to match it, torch running | "
        "ratio | same in a fresh torch process | ratio | cases matched |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted({r["dataset"] for r in results}):
        for bits in sorted({r["bits"] for r in results if r["dataset"] == name}, reverse=True):
            rs = [r["methods"] for r in results if (r["dataset"], r["bits"]) == (name, bits)]
            flip = statistics.fmean(m["flipper"]["cpu_s"] for m in rs)
            match = [m["replay"]["cpu_s_to_match_flipper"] for m in rs]
            bp = statistics.fmean(
                m["replay"]["cpu_s"] if v is None else v for v, m in zip(match, rs, strict=True)
            )
            fresh = bp + startup.get(name, float("nan"))
            matched = sum(v is not None for v in match)
            at_least = "" if matched == len(match) else ">="
            lines.append(
                f"| {name} | {bits} | {flip:.3f} | {at_least}{bp:.3f} | {at_least}{bp / flip:.1f}x"
                f" | {at_least}{fresh:.2f} | {at_least}{fresh / flip:.1f}x | "
                f"{matched}/{len(match)} |"
            )
    return "\n".join(lines)


def memory_table(memory: dict[str, dict[str, dict]]) -> str:
    """Markdown: peak RSS (MB) after each step of the fresh flip-round process."""
    steps = ["imports, bundle, data", "engine", "QCore update", "flip round"]
    lines = [
        "| data set | kernels | " + " | ".join(f"after {s}" for s in steps) + " | numba imported |",
        "|---|---|" + "---|" * (len(steps) + 1),
    ]
    for name, modes in memory.items():
        for mode, m in modes.items():
            if "error" in m:
                lines.append(f"| {name} | {mode} | failed: {m['error']} |" + " |" * len(steps))
                continue
            lines.append(
                f"| {name} | {mode} | "
                + " | ".join(f"{m[s]:.0f}" for s in steps)
                + f" | {'yes' if m['numba imported'] else 'no'} |"
            )
    return "\n".join(lines)


def write_report(
    results: list[dict[str, Any]],
    switches: list[dict[str, Any]],
    memory: dict[str, dict[str, dict]],
    startup: dict[str, float],
    timings: dict[str, float],
    out: Path,
    bits_list: list[int],
    label_fraction: float,
) -> str:
    """Write calibration.md / .json / .png under ``out`` (after every data set and seed, so
    a long run leaves usable partial results); return the Markdown."""
    names = sorted({r["dataset"] for r in results})
    table = summarize(results)
    drift_tables = "\n\n".join(
        f"{n}, 4-bit, per drift (accuracy after calibration %):\n\n" + per_drift(results, n, 4)
        for n in names
        if 4 in bits_list
    )
    sw = [
        "| data set | seed | drift | 8-bit drifted | switched to 4-bit | recalibrated at 4-bit |",
        "|---|---|---|---|---|---|",
    ] + [
        f"| {s['dataset']} | {s['seed']} | {s['drift']} | {100 * s['8bit_drifted']:.1f} | "
        f"{100 * s['after_switch_to_4']:.1f} | {100 * s['after_recalibration']:.1f} |"
        for s in switches
    ]
    wall = ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    report = (
        f"{table}\n\n{drift_tables}\n\nAccuracy (%) on the drifted evaluation half after each "
        f"flip round:\n\n{rounds_table(results)}\n\nCPU cost of the flipper against "
        f"back-propagation reaching the same accuracy (a fresh torch process: CPU of starting "
        f"Python, importing torch and building the fake-quant model from the bundle, "
        + ", ".join(f"{n} {v:.2f} s" for n, v in startup.items())
        + f", plus the steps; a case where back-propagation never reaches it in "
        f"{BACKPROP_STEPS} steps counts with the CPU of all of them, a lower bound: >=):"
        f"\n\n{cost_to_match(results, startup)}"
        f"\n\nRun-time bit-width switch 8 -> 4 under drift:\n\n"
        + "\n".join(sw)
        + "\n\nPeak RSS (MB) of a fresh process (no torch) doing one QCore update and one "
        f"4-bit flip round, after each step:\n\n{memory_table(memory)}"
        f"\n\nWall time: {wall}. {ROUNDS} rounds per calibration, flip budget "
        f"{FLIP.budget_fraction:.0%} x {FLIP.iterations} steps, back-prop {BACKPROP_STEPS} Adam "
        f"steps; labels on {label_fraction:.0%} of the stream; CPU times are the least of "
        f"{REPEATS} identical runs of each calibration."
    )
    (out / "calibration.md").write_text(report + "\n")
    (out / "calibration.json").write_text(
        json.dumps(
            {
                "results": results,
                "bit_switch": switches,
                "flip_round_peak_rss_mb": memory,
                "backprop_startup_cpu_s": startup,
                "wall_s": timings,
            },
            indent=1,
        )
    )
    plot(results, out / "calibration.png")
    return report


def run_seed(
    name: str, seed: int, bits_list: list[int], label_fraction: float, keep: Path | None
) -> dict[str, Any]:
    """Train one bundle and run every case of it (one worker's job). With ``keep`` the
    bundle is saved there (for the memory probes)."""
    torch.set_num_threads(1)
    ds = load_dataset(name)
    t0 = time.time()
    bundle, qnets = train(ds, seed, sorted(set(bits_list) | {8, 4}, reverse=True))
    t_train = time.time() - t0
    if keep is not None:
        save_bundle(bundle, keep)
    results = []
    for bits in bits_list:
        for drift in DRIFTS[name]:
            methods = run_case(ds, bundle, qnets, bits, drift, seed, label_fraction)
            results.append(
                {"dataset": name, "seed": seed, "bits": bits, "drift": drift, "methods": methods}
            )
            log.info(
                "%s seed %d %d-bit %s: %s",
                name,
                seed,
                bits,
                drift,
                ", ".join(f"{m} {100 * v['calibrated']:.0f}" for m, v in methods.items()),
            )
    switch = {
        "dataset": name,
        "seed": seed,
        "drift": DRIFTS[name][0],
        **bit_switch(ds, bundle, DRIFTS[name][0], seed),
    }
    return {
        "results": results,
        "switch": switch,
        "training_s": t_train,
        "cases_s": time.time() - t0 - t_train,
    }


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", default="basicmotions,gunpoint,digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bits", default="8,4,2")
    ap.add_argument("--label-fraction", type=float, default=0.5)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (data set x seed)")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    args.out.mkdir(parents=True, exist_ok=True)
    bits_list = [int(b) for b in args.bits.split(",")]
    names = args.datasets.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    results: list[dict[str, Any]] = []
    switches: list[dict[str, Any]] = []
    memory: dict[str, dict[str, dict]] = {}
    startup: dict[str, float] = {}
    timings: dict[str, float] = defaultdict(float)
    t_start = time.time()
    order = {n: i for i, n in enumerate(names)}
    with (
        tempfile.TemporaryDirectory() as tmp,
        ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):
        cache = Path(tmp)
        jobs = {
            pool.submit(
                run_seed,
                name,
                seed,
                bits_list,
                args.label_fraction,
                cache / f"{name}.eab" if seed == seeds[0] else None,
            ): (name, seed)
            for name in names
            for seed in seeds
        }
        build_aot_kernels(cache)
        for job in as_completed(jobs):
            name, seed = jobs[job]
            done = job.result()
            results += done["results"]
            switches.append(done["switch"])
            timings["training (sum over jobs)"] += done["training_s"]
            timings["calibration cases (sum over jobs)"] += done["cases_s"]
            if seed == seeds[0]:
                t0 = time.time()
                startup[name] = backprop_startup_cpu(cache / f"{name}.eab", 4)
                memory[name] = memory_of(cache / f"{name}.eab", name, cache, cold=not memory)
                timings["memory probes"] += time.time() - t0
            results.sort(key=lambda r: (order[r["dataset"]], r["seed"], -r["bits"], r["drift"]))
            switches.sort(key=lambda r: (order[r["dataset"]], r["seed"]))
            timings["total"] = time.time() - t_start
            report = write_report(
                results,
                switches,
                memory,
                startup,
                timings,
                args.out,
                bits_list,
                args.label_fraction,
            )
    print(report)


if __name__ == "__main__":
    main()
