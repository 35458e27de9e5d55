"""QAT bursts: exact rebuild from a bundle, a short burst, pre-emption of a running burst
process, wall-clock bound, and the gate refusing a worse candidate."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import Bundle
from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.calibrate.burst_config import BurstConfig
from edge_agent.calibrate.burst_runner import BurstLimits, BurstRunner, gate_candidate
from edge_agent.data import load_dataset
from edge_agent.engine.engine import Engine
from kernels.plan.packing import pack_rows

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "edge_agent/defaults/basicmotions.eab"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle(DEFAULT_BUNDLE)


@pytest.fixture(scope="module")
def data():
    return load_dataset("basicmotions")


def test_runner_and_energy_modules_do_not_import_torch() -> None:
    code = (
        "import sys, edge_agent.calibrate.burst_runner, edge_agent.energy, "
        "edge_agent.calibrate.res, edge_agent.calibrate.burst_config; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fake_quant_model_is_rebuilt_exactly_from_the_bundle(bundle: Bundle) -> None:
    from edge_agent.training.burst import models_from_bundle
    from edge_agent.training.export import quant_model

    for bits, stored in bundle.quant.items():
        _, qnet = models_from_bundle(bundle, bits)
        rebuilt = quant_model(qnet)
        assert (rebuilt.input_scale, rebuilt.input_zp) == (stored.input_scale, stored.input_zp)
        for a, b in zip(rebuilt.layers, stored.layers, strict=True):
            assert np.array_equal(a.packed, b.packed)
            assert np.array_equal(a.bias_q, b.bias_q)
            assert (a.out_zp, a.out_scale) == (b.out_zp, b.out_scale)


def test_short_burst_returns_a_valid_bundle(bundle: Bundle, data) -> None:
    from edge_agent.training.burst import BurstInterrupted, run_burst

    y = data.y_train.copy()
    y[::2] = -1  # half unlabelled
    cfg = BurstConfig(bits=2, steps=6, coreset_fraction=0.25, clc="cascaded", cr_weight=1.0)
    result = run_burst(bundle, data.X_train, y, cfg)
    assert result.stats["coreset_size"] == 10 and result.stats["steps"] == 6
    new = result.bundle
    assert new.quant[4] is bundle.quant[4] and new.quant[8] is bundle.quant[8]
    assert new.fp_weights is bundle.fp_weights and "last_burst" in new.meta
    Engine(new, bits=2).predict(data.X_test[:3])
    with pytest.raises(BurstInterrupted):
        run_burst(bundle, data.X_train, y, cfg, should_stop=lambda: True)


def _runner(tmp_path: Path, **limits: float) -> BurstRunner:
    return BurstRunner(tmp_path / "burst", BurstLimits(**limits))  # type: ignore[arg-type]


def test_runner_finishes_a_burst(bundle: Bundle, data, tmp_path: Path) -> None:
    runner = _runner(tmp_path, wall_s=120.0, cpu_s=60.0, grace_s=2.0)
    runner.start(bundle, data.X_train, data.y_train, BurstConfig(bits=2, steps=4, clc="none"))
    outcome = runner.wait(timeout=150)
    assert outcome is not None and outcome.state == "done", outcome
    assert outcome.bundle_path is not None and outcome.cpu_s > 0
    assert outcome.stats["steps"] == 4
    assert load_bundle(outcome.bundle_path).quant[2].weight_bits == 2
    assert not runner.running


def test_running_burst_is_preempted(bundle: Bundle, data, tmp_path: Path) -> None:
    runner = _runner(tmp_path, wall_s=300.0, cpu_s=300.0, grace_s=3.0)
    runner.start(bundle, data.X_train, data.y_train, BurstConfig(bits=2, steps=1_000_000))
    with pytest.raises(RuntimeError):
        runner.start(bundle, data.X_train, data.y_train, BurstConfig())
    assert runner.wait(timeout=2.0) is None  # still running
    runner.preempt("energy: battery low")
    outcome = runner.wait(timeout=60)
    assert outcome is not None
    assert outcome.state == "preempted" and outcome.reason == "energy: battery low"
    assert outcome.bundle_path is None
    assert not (tmp_path / "burst" / "result.eab").exists()


def test_wall_clock_bound(bundle: Bundle, data, tmp_path: Path) -> None:
    runner = _runner(tmp_path, wall_s=1.0, cpu_s=300.0, grace_s=1.0)
    runner.start(bundle, data.X_train, data.y_train, BurstConfig(bits=2, steps=1_000_000))
    outcome = runner.wait(timeout=60)
    assert outcome is not None and outcome.state == "timeout"


def _worse(bundle: Bundle, bits: int) -> Bundle:
    quant = bundle.quant[bits]
    last = quant.layers[-1]
    zeros = np.zeros((last.out_features, last.k), dtype=np.int8)
    broken = dataclasses.replace(last, packed=pack_rows(zeros, bits))
    new_quant = dataclasses.replace(quant, layers=[*quant.layers[:-1], broken])
    return dataclasses.replace(bundle, quant={**bundle.quant, bits: new_quant})


def test_gate_refuses_a_worse_model_and_accepts_an_equal_one(
    bundle: Bundle, data, tmp_path: Path
) -> None:
    current = Engine(bundle, bits=4)
    predict = lambda x: current.predict(x)[0]  # noqa: E731
    worse_path, same_path = tmp_path / "worse.eab", tmp_path / "same.eab"
    save_bundle(_worse(bundle, 4), worse_path)
    save_bundle(bundle, same_path)
    refused = gate_candidate(predict, worse_path, data.X_test, data.y_test, "accuracy", bits=4)
    assert not refused.decision.accepted and refused.engine is None
    assert refused.decision.after < refused.decision.before
    kept = gate_candidate(predict, same_path, data.X_test, data.y_test, "accuracy", bits=4)
    assert kept.decision.accepted and kept.engine is not None
    assert kept.engine.model_version == current.model_version
    (tmp_path / "corrupt.eab").write_bytes(b"not a bundle")
    bad = gate_candidate(
        predict, tmp_path / "corrupt.eab", data.X_test, data.y_test, "accuracy", bits=4
    )
    assert not bad.decision.accepted and "bad candidate" in bad.decision.reason
