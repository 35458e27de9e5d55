"""The fleet learning loop against 3 real agent subprocesses: collect (provenance, the
train --extra weighting), a rollout whose canaries fail the gate (a bad bundle pushed
over the status socket: every canary rolled back, no agent without a working bundle), a
corrupt bundle refused before anything is touched, a bundle the agents cannot run refused
by them, one over the agents' push limit refused and counted, and a good rollout (canary,
then the rest). The configured bundle files are never written."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_service_support import (
    AgentProcess,
    changed_bundle,
    cleanup,
    make_bundle,
    short_dir,
    write_config,
)

from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.client import ClientError, Publisher, StatusClient
from edge_agent.data import load_dataset
from edge_agent.engine.engine import Engine
from edge_agent.fleet.collect import collect, load_field, save, with_field_samples
from edge_agent.fleet.rollout import Rollout

REPO = Path(__file__).resolve().parents[1]
BOARDS = ("b0", "b1", "b2")


class Feeder:
    """Labelled samples to every agent until stopped; the labels are the first bundle's
    own answers, so that model scores 1.0 and a bad one far less."""

    def __init__(self, dirs: list[Path], X: np.ndarray, y: np.ndarray) -> None:
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(d, X, y), daemon=True) for d in dirs
        ]
        for t in self.threads:
            t.start()

    def _run(self, d: Path, X: np.ndarray, y: np.ndarray) -> None:
        with Publisher(f"ipc://{d}/in.sock") as pub:
            i = 0
            while not self.stop.is_set():
                pub.send_sample("s", i, X[i % len(X)], label=int(y[i % len(X)]))
                i += 1
                time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[list[AgentProcess], list[Path], Path]]:
    base = tmp_path_factory.mktemp("bundles")
    a = make_bundle(base / "a.eab")
    d = short_dir()
    agents, dirs = [], []
    X = load_dataset("basicmotions").X_test
    y, _ = Engine(load_bundle(a)).predict(X)
    try:
        for board in BOARDS:
            ad = d / board
            ad.mkdir()
            (ad / "model.eab").write_bytes(a.read_bytes())
            extra = f'[calibration]\nenabled = false\n[metrics]\nboard = "{board}"\n'
            agents.append(AgentProcess(write_config(ad, ad / "model.eab", extra=extra)))
            dirs.append(ad)
        for ag in agents:
            ag.wait_ready()
        feeder = Feeder(dirs, X, y)
        for ag in agents:
            ag.wait_for(lambda s: s["accuracy"]["n"] >= 40, timeout=60)
        yield agents, dirs, base
        feeder.close()
    finally:
        for ag in agents:
            ag.stop()
        cleanup(d)


def _versions(agents: list[AgentProcess]) -> list[str]:
    return [ag.status()["model"]["version"] for ag in agents]


def test_collect_gathers_every_agent_with_provenance(
    fleet: tuple[list[AgentProcess], list[Path], Path], tmp_path: Path
) -> None:
    agents, _, _ = fleet
    got = collect([ag.status_ep for ag in agents] + ["ipc:///nonexistent/status.sock"])
    assert set(got.errors) == {"ipc:///nonexistent/status.sock"}
    save(got, tmp_path / "field.npz")
    f = load_field(tmp_path / "field.npz")
    assert sorted(set(f["board"].tolist())) == list(BOARDS)
    assert set(f["model_version"].tolist()) == set(_versions(agents))
    assert f["X"].shape[1:] == (6, 100) and f["labelled"].all()
    assert (f["collected_time"] > time.time() - 60).all()
    assert all(ag.status()["fleet"]["collects"] >= 1 for ag in agents)
    ds = load_dataset("basicmotions")
    merged, info = with_field_samples(ds, tmp_path / "field.npz", weight=3)
    assert len(merged.y_train) == len(ds.y_train) + 3 * len(f["y"])
    assert info["boards"] == list(BOARDS) and merged.X_test is ds.X_test
    with pytest.raises(ValueError, match="not a collect file"):
        np.savez(tmp_path / "other.npz", X=np.zeros(3))
        load_field(tmp_path / "other.npz")


def test_collect_command_line(
    fleet: tuple[list[AgentProcess], list[Path], Path], tmp_path: Path
) -> None:
    agents, _, _ = fleet
    (tmp_path / "agents.txt").write_text(
        "# the fleet\n"
        + "".join(f"{ag.status_ep}  # {b}\n" for ag, b in zip(agents, BOARDS, strict=True))
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "collect",
            "--agents-file",
            str(tmp_path / "agents.txt"),
            "--out",
            str(tmp_path / "f.npz"),
            "--textfile",
            str(tmp_path / "collect.prom"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "samples from 3 of 3 agents" in r.stdout
    assert "edge_agent_fleet_collect_agents 3.0" in (tmp_path / "collect.prom").read_text()
    assert sorted(set(load_field(tmp_path / "f.npz")["board"].tolist())) == list(BOARDS)


def test_failing_canaries_are_all_rolled_back(
    fleet: tuple[list[AgentProcess], list[Path], Path], tmp_path: Path
) -> None:
    agents, dirs, base = fleet
    before = _versions(agents)
    bad = tmp_path / "bad.eab"
    save_bundle(changed_bundle(load_bundle(base / "a.eab"), "roll"), bad)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "rollout",
            str(bad),
            *[a for ag in agents for a in ("--agent", ag.status_ep)],
            "--canary-share",
            "0.67",
            "--min-labelled",
            "30",
            "--gate-timeout",
            "60",
            "--json",
            "--textfile",
            str(tmp_path / "rollout.prom"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    states = [(t["canary"], t["state"]) for t in report["agents"]]
    assert states == [(True, "rolled_back"), (True, "rolled_back"), (False, "pending")], r.stderr
    assert all(t["after"] < 0.5 for t in report["agents"][:2])
    assert _versions(agents) == before, "every agent runs the old bundle again"
    for d in dirs:  # the configured bundle was never touched; nothing pushed remains
        assert load_bundle(d / "model.eab").model_version == before[0]
        assert not (d / "state" / "deploy" / "current.eab").exists()
    for ag in agents:  # and keeps predicting
        n = ag.status()["samples"]["predicted"]
        st = ag.wait_for(lambda s, n=n: s["samples"]["predicted"] > n + 10)
        assert st["fleet"]["reload_failures"] == 0
    fleet0 = agents[0].status()["fleet"]
    assert fleet0["pushes"] >= 1 and fleet0["rollbacks"] >= 1
    assert fleet0["reloads"] >= 2  # pushed, then rolled back
    assert (
        "edge_agent_fleet_rollout_agents_rolled_back 2.0" in (tmp_path / "rollout.prom").read_text()
    )


def test_a_corrupt_bundle_is_refused_before_anything_is_touched(
    fleet: tuple[list[AgentProcess], list[Path], Path], tmp_path: Path
) -> None:
    agents, dirs, base = fleet
    corrupt = tmp_path / "corrupt.eab"
    data = bytearray((base / "a.eab").read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    mtimes = [(d / "model.eab").stat().st_mtime_ns for d in dirs]
    with pytest.raises(ValueError, match="not pushing it"):
        Rollout(corrupt, [ag.status_ep for ag in agents])
    assert [(d / "model.eab").stat().st_mtime_ns for d in dirs] == mtimes


def test_a_bundle_the_agent_cannot_run_is_refused_there(
    fleet: tuple[list[AgentProcess], list[Path], Path],
) -> None:
    agents, dirs, base = fleet
    before = agents[2].status()
    data = bytearray((base / "a.eab").read_bytes())
    data[len(data) // 2] ^= 0xFF  # the checksum no longer matches
    with StatusClient(agents[2].status_ep, 30) as c:
        res = c.request("push", bytes(data))
    assert res["changed"] is False and "refused" in res["error"]
    after = agents[2].status()
    assert after["model"]["version"] == before["model"]["version"]
    assert after["fleet"]["push_failures"] == before["fleet"]["push_failures"] + 1
    assert not (dirs[2] / "state" / "deploy" / "incoming.eab").exists()
    with StatusClient(agents[2].status_ep, 30) as c:  # nothing was pushed to go back from
        assert "no pushed bundle" in c.request("rollback")["error"]


def test_a_push_over_the_limit_is_refused_and_counted(
    fleet: tuple[list[AgentProcess], list[Path], Path],
) -> None:
    agents, _, _ = fleet
    c0 = agents[1].status()["control"]["errors"].get("oversized", 0)
    limit = agents[1].request("config")["config"]["status"]["max_push_bytes"]
    with (
        StatusClient(agents[1].status_ep, 30) as c,
        pytest.raises(ClientError, match="oversized"),
    ):
        c.request("push", b"x" * (limit + 1))
    assert agents[1].status()["control"]["errors"]["oversized"] == c0 + 1


def test_a_good_bundle_goes_to_the_canary_then_the_rest(
    fleet: tuple[list[AgentProcess], list[Path], Path], tmp_path: Path
) -> None:
    agents, _, base = fleet
    good = tmp_path / "good.eab"
    new = changed_bundle(load_bundle(base / "a.eab"), "bias")
    save_bundle(new, good)
    events: list[str] = []
    report = Rollout(
        good,
        [ag.status_ep for ag in agents],
        canary_share=0.3,
        min_labelled=30,
        tolerance=0.1,
        gate_timeout_s=60,
        poll_s=0.2,
        on_event=events.append,
    ).run()
    assert report.ok, report.events
    assert [t.canary for t in report.targets] == [True, False, False]
    assert [t.state for t in report.targets] == ["passed"] * 3
    assert _versions(agents) == [new.model_version] * 3
    canary_passed = next(i for i, e in enumerate(events) if "gate passed" in e)
    first_rest = next(i for i, e in enumerate(events) if agents[1].status_ep in e)
    assert canary_passed < first_rest, events
