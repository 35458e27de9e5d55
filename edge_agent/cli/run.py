"""``edge-agent run`` and ``python -m edge_agent.service``: run the agent."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent run``."""
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("/etc/edge-agent/agent.toml"),
        help="TOML configuration file (default /etc/edge-agent/agent.toml)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=(
            "validate the configuration, the model bundle (every bit-width builds an engine) "
            "and the CURVE key files it names, then exit"
        ),
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Run the agent (the systemd service's ExecStart)."""
    from edge_agent.service.run import run_agent

    return run_agent(args.config, args.check)


def service_main(argv: list[str] | None = None) -> int:
    """``python -m edge_agent.service``: the agent without the rest of the CLI."""
    from edge_agent.service.run import run_agent

    parser = argparse.ArgumentParser(prog="edge-agent run", description="Run the agent.")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    return run_agent(args.config, args.check)
