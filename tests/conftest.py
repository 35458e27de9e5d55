"""Shared fixtures: the raw public data (when given), small trained bundles (trained once
per run) and ahead-of-time compiled kernels (built once per run)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernels.exec import backend

REPO = Path(__file__).resolve().parents[1]
# The raw public files the vendored sets were converted from (uea/*.ts, digits.csv.gz; see
# edge_agent/data/vendored/PROVENANCE.md): optional, only the parser-on-real-files tests use them.
RAW_DATA_ENV = "EDGE_AGENT_RAW_DATA"
# Engines (here and in child processes) JIT-compile unless a test asks for AOT kernels:
# what a test checks must not depend on what the developer's kernel cache holds.
os.environ.setdefault("EDGE_AGENT_KERNELS", "jit")


@pytest.fixture(scope="session")
def raw_data() -> Path:
    """The raw public data files, from ``$EDGE_AGENT_RAW_DATA`` (skips the test when unset)."""
    where = os.environ.get(RAW_DATA_ENV)
    if not where:
        pytest.skip(f"raw public data files not given (set {RAW_DATA_ENV} to their directory)")
    path = Path(where)
    if not path.is_dir():
        pytest.fail(f"{RAW_DATA_ENV}={where} is not a directory")
    return path


def _train_bundle(tmp_dir: Path, data: str, bits: list[int], name: str) -> Path:
    from edge_agent.bundle_io import save_bundle
    from edge_agent.data import load_dataset
    from edge_agent.training.fit import TrainConfig
    from edge_agent.training.flip_train import FlipTrainConfig
    from edge_agent.training.pipeline import train_bundle
    from edge_agent.training.qcore_build import QCoreConfig

    cfg = TrainConfig(fp_steps=200, qat_steps=80, progress=False)
    qcore_cfg = QCoreConfig(bits=(2, 4, 8), snapshots=4, per_class=3)
    flip_cfg = FlipTrainConfig(episodes=4, steps=60)
    bundle, _ = train_bundle(load_dataset(data), bits, 0, cfg, qcore_cfg, flip_cfg)
    path = tmp_dir / name
    save_bundle(bundle, path)
    return path


@pytest.fixture(scope="session")
def basicmotions_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BasicMotions bundle with 8-, 4-, 3- and 2-bit models (short training)."""
    return _train_bundle(tmp_path_factory.mktemp("bundles"), "basicmotions", [8, 4, 3, 2], "bm.eab")


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small digits (8x8 image) bundle with 8- and 4-bit models (short training)."""
    return _train_bundle(tmp_path_factory.mktemp("bundles"), "digits", [8, 4], "digits.eab")


@pytest.fixture(scope="session")
def gunpoint_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GunPoint bundle with a 4-bit model (short training)."""
    return _train_bundle(tmp_path_factory.mktemp("bundles"), "gunpoint", [4], "gunpoint.eab")


@pytest.fixture(scope="session")
def aot_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel cache root whose ``aot/`` holds kernels built by ``edge-agent compile-kernels``.

    ``EDGE_AGENT_TEST_AOT=0`` skips the AOT tests, saying so (tests/arm64/run.sh sets it:
    the emulated board has no C compiler); everywhere else a failed build fails them.
    """
    if os.environ.get("EDGE_AGENT_TEST_AOT") == "0":
        pytest.skip("AOT kernels not tested here (EDGE_AGENT_TEST_AOT=0)")
    root = tmp_path_factory.mktemp("kernel-cache")
    env = {**os.environ, "EDGE_AGENT_JIT_CACHE": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "compile-kernels"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "compiled the" in done.stdout, done.stdout
    return root


@pytest.fixture(scope="session")
def aot_kernels(aot_cache: Path) -> backend.Kernels:
    """The AOT kernels of :func:`aot_cache`, loaded in this process."""
    return backend.load("aot", aot_dir=aot_cache / "aot")


@pytest.fixture(scope="session")
def agent_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid BasicMotions-shaped bundle with random weights, for tests of the agent
    process (no training needed)."""
    from test_service_support import make_bundle

    return make_bundle(tmp_path_factory.mktemp("bundle") / "t.eab")


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A fresh short directory for an agent's sockets and state, removed afterwards."""
    from test_service_support import cleanup, short_dir

    d = short_dir()
    yield d
    cleanup(d)
