"""FP training and QAT: sane accuracy in a short run, determinism, BN folding, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_agent.bundle import SERIES_NORM
from edge_agent.bundle_io import load_bundle
from edge_agent.data import load_dataset
from edge_agent.data.datasets import save_npz
from edge_agent.engine.engine import Engine
from edge_agent.training.arch import FPNet, default_spec, fold_batchnorm
from edge_agent.training.fit import TrainConfig, accuracy, normalize, train_fp


def test_short_training_reaches_sane_accuracy(basicmotions_bundle: Path) -> None:
    bundle = load_bundle(basicmotions_bundle)
    metrics = bundle.meta["metrics"]
    assert metrics["fp_test_accuracy"] >= 0.85
    ds = load_dataset("basicmotions")
    for bits in (8, 4, 3, 2):  # every width, as training reports it and as the engine runs it
        assert metrics[f"q{bits}_test_accuracy"] >= 0.85, (bits, metrics)
        pred = Engine(bundle, bits=bits).predict(ds.X_test)[0]
        assert np.mean(pred == ds.y_test) >= 0.85, bits


def test_training_is_deterministic() -> None:
    ds = load_dataset("gunpoint")
    mean, std = ds.normalization()
    x, y = normalize(ds.X_train, mean, std), torch.from_numpy(ds.y_train)
    cfg = TrainConfig(fp_steps=15, progress=False)
    spec = default_spec(ds.input_shape, ds.num_classes)
    a, b = train_fp(spec, x, y, 3, cfg), train_fp(spec, x, y, 3, cfg)
    for la, lb in zip(a.weighted_layers(), b.weighted_layers(), strict=True):
        assert torch.equal(la.weight, lb.weight)
    c = train_fp(spec, x, y, 4, cfg)
    assert not torch.equal(a.weighted_layers()[0].weight, c.weighted_layers()[0].weight)


def test_batchnorm_folding_preserves_outputs() -> None:
    torch.manual_seed(0)
    spec = default_spec((6, 100), 4)
    net = FPNet(spec)
    net.train()
    for _ in range(3):  # give BN non-trivial running statistics
        net(torch.randn(16, 6, 100) * 2 + 1)
    net.eval()
    x = torch.randn(8, 6, 100)
    folded = fold_batchnorm(net)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)


def test_accuracy_helper() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x[:, 0], -x[:, 0]], dim=1)

    x = torch.tensor([[1.0], [-1.0], [2.0], [3.0]])
    assert accuracy(Fixed(), x, torch.tensor([0, 1, 1, 0])) == 0.75


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_train_writes_a_bundle_that_remembers_its_data(tmp_path: Path) -> None:
    own = tmp_path / "mydigits.npz"
    save_npz(load_dataset("digits"), own)
    out = tmp_path / "m.eab"
    res = _cli(
        "train",
        "--data",
        str(own),
        "--bits",
        "4,2",
        "--fp-steps",
        "20",
        "--qat-steps",
        "10",
        "--normalize-series",
        "--quiet",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and "2-bit test accuracy" in res.stdout
    phases = res.stdout.split("time per phase")[1].splitlines()[1:]  # one line per phase
    names = [ln.split(" s CPU")[0].rsplit(None, 1)[0].strip() for ln in phases]
    assert names == [
        "FP training",
        "QCore snapshots",
        "QAT 4-bit",
        "QAT 2-bit",
        "export",
        "flipper episodes",
        "flipper network",
        "total",
    ], res.stdout
    b = load_bundle(out)
    assert sorted(b.quant) == [2, 4] and b.default_bits == 4
    assert b.input_shape == (1, 8, 8)
    assert np.all(b.norm_std > 0)
    assert b.meta["data_source"] == str(own) and b.meta[SERIES_NORM] is True
    np.testing.assert_allclose(b.norm_mean, 0, atol=1e-5)  # normalized per series first
    res = _cli("evaluate", str(out))  # no --data: the file it was trained on
    assert res.returncode == 0, res.stderr
    assert "on mydigits test split" in res.stdout and "2-bit integer engine accuracy" in res.stdout
    own.unlink()
    res = _cli("evaluate", str(out))
    assert res.returncode == 1 and "which is not here: give the data set with --data" in res.stderr


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "train",
            "--bits",
            "5",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "must be 2, 3, 4 or 8" in res.stderr
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "train",
            "--data",
            "nope",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "not one of" in res.stderr


@pytest.mark.parametrize(("env", "expected"), [({}, "3"), ({"OPENBLAS_NUM_THREADS": "2"}, "2")])
def test_train_gives_blas_the_torch_thread_count(env: dict[str, str], expected: str) -> None:
    # a fresh interpreter: numpy must not be loaded yet, as in the edge-agent command
    code = (
        "import os, sys; from edge_agent import cli; cli._blas_threads(3); "
        "import numpy; print(os.environ['OPENBLAS_NUM_THREADS'], 'numpy' in sys.modules)"
    )
    blas_vars = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    base = {k: v for k, v in os.environ.items() if k not in blas_vars}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [expected, "True"]
