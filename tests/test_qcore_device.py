"""QCore on the device path: numpy FP forward vs torch, the buffer with the Engine, no torch;
and QCore construction during FP training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.qcore import calibration_split
from test_engine import ARCHS, SENSOR, random_bundle

from edge_agent.bundle import Bundle
from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.calibrate import qcore, qcore_miss
from edge_agent.data import load_dataset
from edge_agent.engine.fp_model import fp_logits, fp_predict_fn
from edge_agent.training.arch import FPNet, default_spec, exported_spec
from edge_agent.training.fit import TrainConfig, normalize, train_fp
from edge_agent.training.qcore_build import MissTracker, QCoreConfig, qcore_extras

ROOT = Path(__file__).resolve().parents[1]


def _torch_logits(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    net = FPNet(bundle.arch, folded=True).eval()
    with torch.no_grad():
        for layer, (w, b) in zip(net.weighted_layers(), bundle.fp_weights, strict=True):
            layer.weight.copy_(torch.from_numpy(w))
            layer.bias.copy_(torch.from_numpy(b))  # type: ignore[union-attr]
        return net(normalize(x, bundle.norm_mean, bundle.norm_std)).numpy()


def _with_fp_weights(bundle: Bundle, seed: int) -> Bundle:
    rng = np.random.default_rng(seed)
    bundle.fp_weights = [
        (
            rng.normal(0, 0.3, w.shape).astype(np.float32),
            rng.normal(0, 0.1, b.shape).astype(np.float32),
        )
        for w, b in bundle.fp_weights
    ]
    return bundle


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_fp_forward_matches_torch_on_every_layer_kind(arch: str) -> None:
    bundle = _with_fp_weights(random_bundle(ARCHS[arch], bits=(8,)), 0)
    x = np.random.default_rng(1).normal(0, 2, (16, *bundle.input_shape)).astype(np.float32)
    np.testing.assert_allclose(fp_logits(bundle, x), _torch_logits(bundle, x), rtol=1e-4, atol=1e-4)


def test_fp_forward_matches_torch_on_real_data(basicmotions_bundle: Path) -> None:
    bundle = load_bundle(basicmotions_bundle)
    ds = load_dataset("basicmotions")
    ref = _torch_logits(bundle, ds.X_test)
    np.testing.assert_allclose(fp_logits(bundle, ds.X_test), ref, rtol=1e-4, atol=1e-4)
    assert np.array_equal(fp_predict_fn(bundle, batch=7)(ds.X_test), ref.argmax(1))
    # digits (conv2d) with an untrained folded network on the real images
    digits = load_dataset("digits")
    spec = exported_spec(default_spec(digits.input_shape, digits.num_classes))
    mean, std = digits.normalization()
    img = Bundle(spec, [], digits.label_names, mean, std, {}, 8)
    net = FPNet(spec, folded=True)
    img.fp_weights = [
        (m.weight.detach().numpy(), m.bias.detach().numpy()) for m in net.weighted_layers()
    ]  # type: ignore[union-attr]
    x = digits.X_test[:200]
    np.testing.assert_allclose(fp_logits(img, x), _torch_logits(img, x), rtol=1e-4, atol=1e-5)


def _bundle_with_qcore(path: Path) -> Bundle:
    bundle = _with_fp_weights(random_bundle(SENSOR, bits=(8, 4, 2)), 2)
    rng = np.random.default_rng(3)
    n = 12
    bundle.extras = {
        qcore_miss.EXTRA_X: rng.normal(0, 2, (n, *bundle.input_shape)).astype(np.float32),
        qcore_miss.EXTRA_Y: rng.integers(0, bundle.num_classes, n).astype(np.int64),
        qcore_miss.EXTRA_DIFFICULTY: rng.integers(0, 5, n).astype(np.float32),
        qcore_miss.EXTRA_TRAIN_INDEX: np.arange(n, dtype=np.int64),
        qcore_miss.EXTRA_BITS: np.array([2, 4, 8], dtype=np.int64),
    }
    save_bundle(bundle, path)
    return bundle


def test_from_bundle_seeds_the_buffer(tmp_path: Path) -> None:
    bundle = _bundle_with_qcore(tmp_path / "b.eab")
    loaded = load_bundle(tmp_path / "b.eab")
    buf = qcore.QCoreBuffer.from_bundle(loaded, qcore.BufferConfig(max_samples=100), now=5.0)
    assert len(buf) == 12 and buf.bits == (2, 4, 8)
    order = np.argsort(buf.train_index)
    assert np.array_equal(buf.X[order], bundle.extras[qcore_miss.EXTRA_X])
    assert np.array_equal(buf.y[order], bundle.extras[qcore_miss.EXTRA_Y])
    assert (
        buf.labelled.all() and (buf.source == qcore.SOURCE_TRAIN).all() and (buf.time == 5.0).all()
    )
    assert (buf.last_correct == qcore.UNKNOWN).all()
    small = qcore.QCoreBuffer.from_bundle(
        loaded, qcore.BufferConfig(max_samples=4, class_balance=False)
    )
    assert len(small) == 4 and (small.misses > 0).all()
    bare = random_bundle(SENSOR, bits=(8,))
    assert len(qcore.QCoreBuffer.from_bundle(bare)) == 0


def test_device_path_runs_the_engine_without_torch(tmp_path: Path) -> None:
    _bundle_with_qcore(tmp_path / "b.eab")
    code = f"""
import sys
import numpy as np
from edge_agent.bundle_io import load_bundle
from edge_agent.engine.engine import Engine
from edge_agent.engine.fp_model import fp_predict_fn
from edge_agent.calibrate.qcore import BufferConfig, QCoreBuffer
b = load_bundle({str(tmp_path / "b.eab")!r})
engines = {{bits: Engine(b, bits=bits) for bits in (8, 4)}}
preds = {{bits: (lambda x, e=e: e.predict(x)[0]) for bits, e in engines.items()}}
buf = QCoreBuffer.from_bundle(b, BufferConfig(max_samples=16))
rng = np.random.default_rng(0)
for r in range(3):
    x = rng.normal(0, 2, (10, *b.input_shape)).astype(np.float32)
    y = rng.integers(0, b.num_classes, 10)
    lab = rng.random(10) < 0.5
    buf.update(x, y, lab, preds, fp_predict_fn(b), now=r, seqs=10 * r + np.arange(10))
buf.set_label(int(buf.seq.max()), 0)
again = QCoreBuffer.from_state(buf.to_state(), BufferConfig(max_samples=16))
assert len(again) == len(buf) == 16, len(buf)
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_qcore_built_during_fp_training() -> None:
    ds = load_dataset("basicmotions")
    spec = default_spec(ds.input_shape, ds.num_classes)
    cfg = TrainConfig(fp_steps=12, progress=False)
    qcfg = QCoreConfig(bits=(2, 4, 8), snapshots=3, per_class=3)
    tracker = MissTracker.for_dataset(ds, qcfg, cfg.act_bits)
    mean, std = ds.normalization()
    x = normalize(ds.X_train, mean, std)
    train_fp(
        spec, x, torch.from_numpy(ds.y_train), 0, cfg, tracker, qcfg.snapshot_steps(cfg.fp_steps)
    )
    assert tracker.steps == [4, 8, 12]
    correct = tracker.correct()
    assert set(correct) == {2, 4, 8} and all(
        c.shape == (3, len(ds.y_train)) for c in correct.values()
    )
    diff = tracker.difficulty()
    assert np.array_equal(diff, qcore_miss.difficulty(correct, qcfg.never_correct))
    ex = qcore_extras(ds, tracker, qcfg, seed=0)
    assert set(ex) == set(qcore_miss.EXTRA_KEYS)
    idx = ex[qcore_miss.EXTRA_TRAIN_INDEX]
    assert len(idx) == 3 * ds.num_classes == len(set(idx.tolist()))
    assert (
        np.bincount(ex[qcore_miss.EXTRA_Y], minlength=ds.num_classes).tolist()
        == [3] * ds.num_classes
    )
    assert np.array_equal(ex[qcore_miss.EXTRA_X], ds.X_train[idx])
    assert np.array_equal(ex[qcore_miss.EXTRA_DIFFICULTY], diff[idx].astype(np.float32))
    assert ex[qcore_miss.EXTRA_X].dtype == np.float32 and ex[qcore_miss.EXTRA_Y].dtype == np.int64
    # per class: nonzero-difficulty samples first, then the flagged zero-difficulty fill
    for c in range(ds.num_classes):
        in_class = ex[qcore_miss.EXTRA_Y] == c
        hard = int(((ds.y_train == c) & (diff > 0)).sum())
        assert (ex[qcore_miss.EXTRA_DIFFICULTY][in_class] > 0).sum() == min(3, hard)
    accs = tracker.accuracies()
    assert set(accs) == {"fp", "q2", "q4", "q8"} and all(len(v) == 3 for v in accs.values())


def test_buffer_on_a_trained_bundle_and_a_drifted_stream(basicmotions_bundle: Path) -> None:
    from edge_agent.data.drift import gain
    from edge_agent.engine.engine import Engine

    bundle = load_bundle(basicmotions_bundle)
    assert set(qcore_miss.EXTRA_KEYS) <= set(bundle.extras)
    buf = qcore.QCoreBuffer.from_bundle(bundle, qcore.BufferConfig(max_samples=16))
    seeded = len(buf)
    assert seeded == len(bundle.extras[qcore_miss.EXTRA_Y]) and buf.labelled.all()
    engines = {b: Engine(bundle, bits=b) for b in (8, 4, 3)}
    preds = {b: (lambda x, e=e: e.predict(x)[0]) for b, e in engines.items()}
    ds = load_dataset("basicmotions")
    x = np.stack([gain(s, 3.0) for s in ds.X_test])  # drifted stream, half labelled
    lab = np.arange(len(x)) % 2 == 0
    fp = fp_predict_fn(bundle)
    for r, i in enumerate(range(0, len(x), 10)):
        res = buf.update(
            x[i : i + 10],
            ds.y_test[i : i + 10],
            lab[i : i + 10],
            preds,
            fp,
            now=float(r),
            seqs=np.arange(i, i + 10),
        )
        assert len(buf) == 16 and buf.nbytes <= buf.config.max_bytes and res.new == 10
    st = buf.stats()
    assert st["size"] == 16 and 0.0 < st["stream_fraction"] <= 1.0
    cal, hold = calibration_split(buf, 0.25, seed=0)
    assert len(hold) == 4 and len(cal) == 12
