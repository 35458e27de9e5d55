"""State files: permissions that hold user data, and the previous calibrated model kept
as the fallback for a damaged ``model.eab``."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from test_service_support import AgentProcess, cleanup, make_bundle, short_dir, write_config

from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.container import atomic_write_bytes
from edge_agent.service.state import LabelledSample, StateStore


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask_unless_told(tmp_path: Path) -> None:
    with _umask(0o027):
        atomic_write_bytes(tmp_path / "a", b"x")
        assert _mode(tmp_path / "a") == 0o640  # 0666 & ~027, not a fixed 0644
    with _umask(0o077):
        atomic_write_bytes(tmp_path / "b", b"x")
        assert _mode(tmp_path / "b") == 0o600
    with _umask(0o022):
        atomic_write_bytes(tmp_path / "c", b"x", 0o600)
        assert _mode(tmp_path / "c") == 0o600
        bundle = make_bundle(tmp_path / "m.eab")  # what `edge-agent train --out` writes
        assert _mode(bundle) == 0o644


def test_state_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    with _umask(0o022):
        store = StateStore(tmp_path, keep=2)
        store.restore()
        ckpt = store.checkpoint({"n": 1})
        store.save_model(b"model one")
        store.save_model(b"model two")  # keeps model one as model-000000000001.eab
        store.append_labelled([LabelledSample("s", 1, 0.0, 0, -1, np.zeros((2, 2), np.float32))])
        store.close()
    files = [
        ckpt,
        store.model_path,
        tmp_path / "model-000000000001.eab",
        *tmp_path.glob("labelled-*.log"),
    ]
    assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}


def test_previous_models_are_kept_like_checkpoints(tmp_path: Path) -> None:
    store = StateStore(tmp_path, keep=2)
    store.restore()
    for i in range(5):
        store.save_model(f"model {i}".encode())
    store.save_model(b"model 4")  # the same bytes again: nothing to keep
    names = [p.name for p in store.model_candidates()]
    assert names == ["model.eab", "model-000000000004.eab", "model-000000000003.eab"]
    assert [p.read_bytes() for p in store.model_candidates()] == [
        b"model 4",
        b"model 3",
        b"model 2",
    ]


def test_a_damaged_model_falls_back_to_the_previous_calibrated_one() -> None:
    d = short_dir()
    procs: list[AgentProcess] = []
    try:
        config = write_config(d, make_bundle(d / "base.eab", seed=0))
        a = AgentProcess(config)
        procs.append(a)
        a.wait_ready()
        base_version = a.status()["model"]["version"]
        assert a.status()["model"]["fallback"] is None
        assert a.terminate()[0] == 0
        # two calibrated models in turn (as accepted rounds save them), then damage
        calibrated = [load_bundle(make_bundle(d / f"cal{i}.eab", seed=i)) for i in (1, 2)]
        store = StateStore(d / "state")
        for i, bundle in enumerate(calibrated):
            save_bundle(bundle, d / f"c{i}.eab")
            store.save_model((d / f"c{i}.eab").read_bytes())
        data = store.model_path.read_bytes()
        store.model_path.write_bytes(data[: len(data) // 2])  # a torn write / bad sector

        b = AgentProcess(config)
        procs.append(b)
        b.wait_ready()
        st = b.status()
        assert st["model"]["version"] == calibrated[0].model_version != base_version
        fb = st["model"]["fallback"]
        assert fb["used"] == "model-000000000002.eab" and "truncated" in fb["damaged"][0]
        assert st["model"]["path"] == str(d / "state" / "model.eab")
        assert "previous calibrated model" in b.log()
        assert b.terminate()[0] == 0
        # model.eab is whole again: the next start needs no fallback
        c = AgentProcess(config)
        procs.append(c)
        c.wait_ready()
        st = c.status()
        assert st["model"]["version"] == calibrated[0].model_version
        assert st["model"]["fallback"] is None
        c.terminate()
    finally:
        for p in procs:
            p.stop()
        cleanup(d)
