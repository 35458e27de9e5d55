"""Shared fixtures: paths to the real data and small trained bundles (trained once per run)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The raw public data sets beside the checkout (tests may use them; the product may not)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: tests need ../shared/data beside the checkout")
    return SHARED_DATA


def _train_bundle(tmp_dir: Path, data: str, bits: list[int], name: str) -> Path:
    from edge_agent.bundle import save_bundle
    from edge_agent.calibrate.flip_train import FlipTrainConfig
    from edge_agent.data import load_dataset
    from edge_agent.model.pipeline import train_bundle
    from edge_agent.model.qcore_build import QCoreConfig
    from edge_agent.model.train import TrainConfig

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
