"""Pushed bundles: the state directory's ``deploy/`` files (what runs, what a rollback
returns to, a replaced configured bundle winning), and one real agent taking a push over
its status socket, keeping it across a restart, rolling it back, and running a newer
configured bundle instead of a pushed one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_service_support import (
    AgentProcess,
    changed_bundle,
    cleanup,
    make_bundle,
    short_dir,
    write_config,
)

from edge_agent.bundle_io import load_bundle, save_bundle, to_bytes
from edge_agent.client import StatusClient
from edge_agent.service.deploy import Deployments


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Two valid bundles to push (a pushed one must load, or the configured one runs)."""
    path = make_bundle(tmp_path_factory.mktemp("pushed") / "one.eab")
    return {"one": path.read_bytes(), "two": to_bytes(changed_bundle(load_bundle(path), "bias"))}


def _files(tmp: Path) -> tuple[Deployments, Path]:
    configured = tmp / "model.eab"
    configured.write_bytes(b"configured")
    return Deployments(tmp / "state"), configured


def test_the_configured_bundle_runs_until_something_is_pushed(
    tmp_path: Path, pushed: dict[str, bytes]
) -> None:
    dep, configured = _files(tmp_path)
    assert dep.bundle_path(configured) == configured
    dep.incoming(pushed["one"])
    current = dep.install(configured, configured)
    assert dep.bundle_path(configured) == current and current.read_bytes() == pushed["one"]
    assert not (dep.dir / "incoming.eab").exists()
    assert dep.status(configured)["previous"] == "configured"
    # a second push keeps the first as the previous one
    dep.incoming(pushed["two"])
    dep.install(current, configured)
    assert current.read_bytes() == pushed["two"]
    assert (dep.dir / "previous.eab").read_bytes() == pushed["one"]
    assert json.loads((dep.dir / "deploy.json").read_text())["previous"] == "file"
    # rollback: to the first push; no further (one step is kept)
    assert dep.rollback(configured) == current and current.read_bytes() == pushed["one"]
    with pytest.raises(ValueError, match="rolled back once already"):
        dep.rollback(configured)


def test_a_rollback_of_the_first_push_runs_the_configured_bundle(
    tmp_path: Path, pushed: dict[str, bytes]
) -> None:
    dep, configured = _files(tmp_path)
    with pytest.raises(ValueError, match="no pushed bundle"):
        dep.rollback(configured)
    dep.incoming(pushed["one"])
    dep.install(configured, configured)
    assert dep.rollback(configured) == configured
    assert dep.bundle_path(configured) == configured
    assert not dep.status(configured)["pushed"]


def test_a_replaced_configured_bundle_wins_over_a_push(
    tmp_path: Path, pushed: dict[str, bytes]
) -> None:
    dep, configured = _files(tmp_path)
    dep.incoming(pushed["one"])
    current = dep.install(configured, configured)
    assert dep.bundle_path(configured) == current
    configured.write_bytes(b"the administrator's new one")
    assert dep.bundle_path(configured) == configured
    assert not current.exists() and not (dep.dir / "deploy.json").exists()


def test_a_damaged_record_falls_back_to_the_configured_bundle(
    tmp_path: Path, pushed: dict[str, bytes]
) -> None:
    dep, configured = _files(tmp_path)
    dep.incoming(pushed["one"])
    dep.install(configured, configured)
    (dep.dir / "deploy.json").write_text("{not json")
    assert dep.bundle_path(configured) == configured


@pytest.fixture()
def agent(tmp_path: Path) -> Iterator[tuple[AgentProcess, Path]]:
    d = short_dir()
    bundle = make_bundle(d / "model.eab")
    ag = AgentProcess(write_config(d, bundle, extra="[calibration]\nenabled = false\n"))
    try:
        ag.wait_ready()
        yield ag, d
    finally:
        ag.stop()
        cleanup(d)


def test_a_pushed_bundle_runs_survives_a_restart_and_rolls_back(
    agent: tuple[AgentProcess, Path],
) -> None:
    ag, d = agent
    configured = d / "model.eab"
    original = load_bundle(configured)
    new = changed_bundle(original, "bias")
    with StatusClient(ag.status_ep, 60) as c:
        res = c.request("push", to_bytes(new))
    assert res == {
        "error": None,
        "model_version": new.model_version,
        "previous_version": original.model_version,
        "changed": True,
    }
    st = ag.status()
    assert st["model"]["version"] == new.model_version
    assert st["model"]["deploy"]["pushed"] and st["fleet"]["pushes"] == 1
    assert load_bundle(configured).model_version == original.model_version  # untouched
    # a restart runs the pushed bundle, not the configured one
    assert ag.terminate()[0] == 0
    ag = AgentProcess(d / "agent.toml")
    try:
        ag.wait_ready()
        assert ag.status()["model"]["version"] == new.model_version
        res = ag.request("rollback", timeout=60)
        assert res == {"error": None, "model_version": original.model_version}
        st = ag.status()
        assert st["model"]["version"] == original.model_version
        assert not st["model"]["deploy"]["pushed"] and st["fleet"]["rollbacks"] == 1
        # push again; then the administrator replaces the configured bundle: it wins
        with StatusClient(ag.status_ep, 60) as c:
            assert c.request("push", to_bytes(new))["changed"]
        third = changed_bundle(changed_bundle(original, "bias"), "bias")
        save_bundle(third, configured)
        assert ag.request("reload", timeout=60)["error"] is None
        st = ag.status()
        assert st["model"]["version"] == third.model_version
        assert not st["model"]["deploy"]["pushed"]
    finally:
        ag.stop()
