"""Run the agent as a process: configuration, signals, start, loop, shutdown."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from edge_agent.bundle import BundleError
from edge_agent.service import preflight
from edge_agent.service.agent import EX_CONFIG, Agent
from edge_agent.service.config import ConfigError, load_config
from edge_agent.service.runtime import tune_for_latency

log = logging.getLogger("edge_agent.agent")


def run_agent(config_path: Path, check_only: bool = False) -> int:
    """Run the agent until SIGTERM; return the process exit status."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        log.error("%s", exc)
        return EX_CONFIG
    logging.getLogger().setLevel(cfg.log.level.upper())
    if check_only:
        found = preflight.problems(cfg)
        for problem in found:
            log.error("%s", problem)
        if found:
            return EX_CONFIG
        print(f"{config_path}: configuration, model bundle and key files are valid")
        return 0
    agent = Agent(cfg, config_path)
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    signal.signal(signal.SIGHUP, agent.request_reload)
    try:
        agent.start()
    except (BundleError, ConfigError, RuntimeError, OSError) as exc:
        log.error("cannot start: %s", exc)
        agent.notifier.status(f"failed: {exc}")
        return EX_CONFIG if isinstance(exc, BundleError | ConfigError) else 1
    tune_for_latency()
    try:
        agent.run()
    finally:
        agent.shutdown()
    return 0
