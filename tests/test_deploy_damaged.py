"""A pushed bundle damaged on the card (after a rollout, ``state/deploy/current.eab``
overwritten) must not keep the agent down: the unit does not restart an agent that exits
for a bad bundle (``RestartPreventExitStatus=78``), so the agent sets the damaged file
aside, says so in ``status`` and runs the configured bundle, which is intact."""

from __future__ import annotations

from pathlib import Path

from test_service_support import AgentProcess, changed_bundle, write_config

from edge_agent.bundle_io import load_bundle, save_bundle, to_bytes
from edge_agent.client import StatusClient


def test_a_damaged_pushed_bundle_falls_back_to_the_configured_one(
    agent_bundle: Path, workdir: Path
) -> None:
    configured = load_bundle(agent_bundle)
    pushed = changed_bundle(configured, "bias")
    save_bundle(configured, workdir / "model.eab")
    cfg = write_config(workdir, workdir / "model.eab", extra="[calibration]\nenabled = false\n")
    agent = AgentProcess(cfg)
    try:
        agent.wait_ready()
        with StatusClient(agent.status_ep, timeout_s=60) as client:
            client.request("push", to_bytes(pushed))
        st = agent.wait_for(lambda s: s["model"]["deploy"]["pushed"])
        assert st["model"]["version"] == pushed.model_version
    finally:
        agent.stop()
    current = workdir / "state" / "deploy" / "current.eab"
    current.write_bytes(bytes(range(256)) * 4)  # the card damaged it

    agent = AgentProcess(cfg)
    try:
        agent.wait_ready()
        st = agent.status()
        deploy = st["model"]["deploy"]
        assert st["model"]["version"] == configured.model_version
        assert deploy["pushed"] is False and "bundle" in deploy["damaged"]["error"]
        assert (workdir / "state" / "deploy" / "damaged.eab").exists() and not current.exists()
        assert "the pushed bundle is damaged" in agent.log()
    finally:
        agent.stop()
