"""``edge-agent collect`` and ``edge-agent rollout``: arguments and entry points."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge_agent.client import AgentAddress
from edge_agent.curve_keys import KeyFileError, load_client_key
from edge_agent.fleet.collect import collect, save
from edge_agent.fleet.rollout import Report, Rollout


class UsageError(ValueError):
    """Bad agents, agents file or key: printed, exit status 2."""


def _agents(args: argparse.Namespace) -> tuple[list[AgentAddress], tuple[bytes, bytes] | None]:
    """The agents (``--agent``, ``--agents-file`` lines: ``ENDPOINT [SERVER_KEY]``) and,
    when any of them is given with a server key, this client's CURVE key pair."""
    lines = [(f"--agent {a!r}", a) for a in args.agent or []]
    if args.agents_file:
        try:
            text = Path(args.agents_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.agents_file}: cannot read: {exc}") from None
        except UnicodeDecodeError:
            raise UsageError(
                f"{args.agents_file}: not a text file of lines 'ENDPOINT [SERVER_KEY]'"
            ) from None
        for n, ln in enumerate(text.splitlines(), 1):
            if ln.split("#")[0].strip():
                lines.append((f"{args.agents_file}:{n}", ln.split("#")[0]))
    if not lines:
        raise UsageError("give --agent or --agents-file")
    agents = []
    for where, line in lines:
        try:
            agents.append(AgentAddress.parse(line))
        except ValueError as exc:
            raise UsageError(f"{where}: {exc}") from None
    if not any(a.server_key for a in agents):
        return agents, None
    try:
        return agents, load_client_key(args.client_key)
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None


def _add_agent_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--agent",
        action="append",
        metavar="'ENDPOINT [SERVER_KEY]'",
        help="an agent's status socket, e.g. ipc:///run/edge-agent/status.sock, or its "
        "CURVE endpoint with its public key (file or Z85): 'tcp://board-7:5559 "
        "board-7.key' (repeatable)",
    )
    p.add_argument(
        "--agents-file",
        metavar="FILE",
        help="a file listing agents, one 'ENDPOINT [SERVER_KEY]' per line (# comments)",
    )
    p.add_argument(
        "--client-key",
        metavar="FILE.key_secret",
        help="this client's CURVE key pair for agents given with a server key (default "
        "$EDGE_AGENT_CLIENT_KEY or ~/.config/edge-agent/client.key_secret)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    p.add_argument(
        "--textfile",
        default="",
        metavar="FILE.prom",
        help="also write the outcome as Prometheus metrics (node_exporter textfile collector form)",
    )


def add_collect_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent collect``."""
    _add_agent_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="the .npz to write")


def add_rollout_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent rollout``."""
    p.add_argument("bundle", type=Path, help="the new model bundle")
    _add_agent_arguments(p)
    p.add_argument(
        "--canary-share",
        type=float,
        default=0.2,
        help="share of agents that get it first (default 0.2, at least one)",
    )
    p.add_argument(
        "--min-labelled",
        type=int,
        default=50,
        help="labelled predictions of the new model the gate waits for (default 50)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="accuracy the new model may lose against before the push (default 0)",
    )
    p.add_argument(
        "--gate-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for those labelled predictions (default 300)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _write_metrics(path: str, gauges: dict[str, tuple[str, float]]) -> None:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    for name, (doc, value) in gauges.items():
        Gauge(name, doc, registry=reg).set(value)
    write_to_textfile(path, reg)


def collect_main(args: argparse.Namespace) -> int:
    """Pull field samples from the agents into one .npz."""
    try:
        eps, client_key = _agents(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    got = collect(eps, args.timeout, client_key)
    for ep, err in got.errors.items():
        print(f"error: {ep}: {err}", file=sys.stderr)
    if got.parts:
        save(got, args.out)
        print(f"wrote {args.out}: {got.samples} samples from {len(got.parts)} of {len(eps)} agents")
    if args.textfile:
        _write_metrics(
            args.textfile,
            {
                "edge_agent_fleet_collect_agents": (
                    "Agents that answered the last collect.",
                    len(got.parts),
                ),
                "edge_agent_fleet_collect_failures": ("Agents that did not.", len(got.errors)),
                "edge_agent_fleet_collect_samples": ("Samples collected.", got.samples),
                "edge_agent_fleet_collect_timestamp_seconds": ("When.", time.time()),
            },
        )
    return 0 if got.parts and not got.errors else 1


def _print(report: Report, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
        return
    for t in report.targets:
        after = "n/a" if t.after is None else f"{t.after:.3f}"
        before = "n/a" if t.before is None else f"{t.before:.3f}"
        print(
            f"{'canary' if t.canary else 'agent ':6} {t.endpoint}: {t.state} (accuracy "
            f"{before} -> {after}) {t.reason}"
        )
    print(f"rollout of {report.new_version}: {'ok' if report.ok else 'NOT complete'}")


def rollout_main(args: argparse.Namespace) -> int:
    """Canary, gate, the rest; roll back on failure."""
    try:
        eps, client_key = _agents(args)
        ro = Rollout(
            args.bundle,
            eps,
            args.canary_share,
            args.min_labelled,
            args.tolerance,
            args.gate_timeout,
            args.timeout,
            on_event=lambda m: print(m, file=sys.stderr, flush=True),
            client_key=client_key,
        )
    except (OSError, ValueError) as exc:  # UsageError too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = ro.run()
    _print(report, args.json)
    if args.textfile:
        states = [t.state for t in report.targets]
        gauges = {
            f"edge_agent_fleet_rollout_agents_{s}": (
                f"Agents {s} in the last rollout.",
                float(states.count(s)),
            )
            for s in ("passed", "failed", "rolled_back", "rollback_failed")
        }
        gauges["edge_agent_fleet_rollout_ok"] = (
            "1 when the last rollout completed.",
            float(report.ok),
        )
        gauges["edge_agent_fleet_rollout_timestamp_seconds"] = ("When.", time.time())
        _write_metrics(args.textfile, gauges)
    return 0 if report.ok else 1


def add_fleet_commands(sub: Any) -> None:
    """Register ``proxy``, ``collect`` and ``rollout`` on the CLI's subparsers."""
    from edge_agent.fleet.proxy_main import add_proxy_arguments, proxy_main

    p = sub.add_parser(
        "proxy",
        help="one ZeroMQ fan-in: many publishers to many agents, by topic",
        description="Forward publishers (connecting to --frontend) to agents (connecting "
        'to --backend with [ingest] mode = "connect") (XSUB/XPUB sockets, '
        "forwarded by a loop of its own that counts what it forwards); agents subscribe by "
        "topic ([ingest] topics). See docs/fleet.md.",
    )
    add_proxy_arguments(p)
    p.set_defaults(func=proxy_main)
    p = sub.add_parser(
        "collect",
        help="pull field samples (labelled log, QCore buffer) from agents",
        description="Ask each agent's status socket for its labelled-sample log and QCore "
        "buffer and write them into one .npz with provenance (board, time, model version) "
        "for `edge-agent train --extra`.",
    )
    add_collect_arguments(p)
    p.set_defaults(func=collect_main)
    p = sub.add_parser(
        "rollout",
        help="push a bundle to a canary share of agents, gate, then the rest",
        description="Push the bundle to each agent over its status socket (the agent "
        "keeps the bundle it replaces): canaries first; once their labelled accuracy is "
        "not lower than before, the rest; canaries that fail are all rolled back.",
    )
    add_rollout_arguments(p)
    p.set_defaults(func=rollout_main)
