"""``edge-agent status``: query a running agent and print its status."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import zmq

from edge_agent.cli.args import endpoint_arg
from edge_agent.client import DEFAULT_STATUS, ClientError, StatusClient
from edge_agent.curve_keys import KeyFileError, load_client_key, parse_public


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent status``."""
    parser.add_argument(
        "--endpoint",
        type=endpoint_arg,
        default=DEFAULT_STATUS,
        help=f"status socket (default {DEFAULT_STATUS})",
    )
    parser.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    parser.add_argument(
        "--command",
        default="status",
        choices=("status", "metrics", "config", "checkpoint", "ping", "reload", "rollback"),
        help="request to send (default status)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument(
        "--server-key",
        default="",
        metavar="KEY",
        help="the agent's public key (its server.key file, or the 40 Z85 characters): "
        "connect to its CURVE endpoint",
    )
    parser.add_argument(
        "--client-key",
        default=None,
        metavar="FILE.key_secret",
        help="this client's key pair with --server-key (default $EDGE_AGENT_CLIENT_KEY or "
        "~/.config/edge-agent/client.key_secret)",
    )


def status_main(args: argparse.Namespace) -> int:
    """``edge-agent status``: query a running agent."""
    try:
        server_key = parse_public(args.server_key) if args.server_key else None
        client_key = load_client_key(args.client_key) if server_key else None
        with StatusClient(args.endpoint, args.timeout, server_key, client_key) as client:
            result = client.request(args.command)
    except (ClientError, KeyFileError, zmq.ZMQError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json or args.command != "status":
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_status(result))
    return 0


def _dur(s: float) -> str:
    s = int(s)
    return (
        f"{s // 86400}d {s % 86400 // 3600:02d}h {s % 3600 // 60:02d}m {s % 60:02d}s"
        if s >= 86400
        else f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"
    )


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def _qcore(cal: dict[str, Any]) -> str:
    b = cal.get("buffer")
    if not b:
        return "n/a (calibration disabled)"
    return (
        f"{b['size']} / {b['capacity']} samples, {b['labelled']} labelled, "
        f"{100 * b['stream_fraction']:.0f}% from the stream, {cal.get('pending', 0)} pending"
    )


def _domains(cal: dict[str, Any]) -> str:
    r = cal.get("routing")
    if not r:
        return "n/a (calibration disabled)"
    if not r["enabled"]:
        return r["reason"]
    return ", ".join(
        f"{d['name']} {d['samples']} samples"
        + (f" (made at sample {d['made_at_sample']})" if d["made_at_sample"] >= 0 else "")
        for d in r["domains"]
    )


def _energy(e: dict[str, Any]) -> str:
    if not e:
        return "n/a (not read yet)"
    why = "; ".join(e["reasons"]) or "no limit reached"
    return (
        f"bursts {'allowed' if e['burst_allowed'] else 'refused'}, run at {e['bits']} bits"
        f"{' (pressure)' if e['pressure'] else ''}: {why}"
    )


def _bursts(b: dict[str, Any]) -> str:
    if not b or b.get("enabled") is False:
        return "disabled"
    return (
        f"{b['state']}; {b['started']} started, {b['accepted']} accepted, "
        f"{b['rolled_back']} rolled back, {b['preempted']} pre-empted, {b['failed']} failed"
    )


def _storage(st: dict[str, Any]) -> str:
    if not st:
        return "n/a"
    failing = "; ".join(f"{k}: {v}" for k, v in st["failing"].items())
    return (
        f"{st['checkpoint_errors']} failed checkpoints, {st['model_save_errors']} failed "
        f"model saves, {st['labelled_unlogged']} labelled samples not logged"
        + (f"; FAILING: {failing}" if failing else "")
    )


def _fallback(fb: dict[str, Any] | None) -> list[str]:
    if not fb:
        return []
    return [f"             damaged, replaced by {fb['used']}: " + "; ".join(fb["damaged"])]


def _losses(loss: dict[str, int] | None) -> list[str]:
    if not loss:
        return []
    return [
        f"lost         {loss['missing_in_transport']} missing in transport (sequence gaps), "
        f"{loss['rejected']} rejected, {loss['dropped_from_queue']} dropped from the queue; "
        f"{loss['transport_disconnects']} publisher connections closed"
    ]


def format_status(r: dict[str, Any]) -> str:
    """A human summary of a ``status`` reply."""
    a, m, s, acc = r["agent"], r["model"], r["samples"], r["accuracy"]
    cal, lat, buf, q = r["calibration"], r["latency_ms"], r["buffer"], r["queue"]
    ck = r.get("checkpoint") or {}
    shape = "x".join(str(v) for v in m["input_shape"])
    rolling = "n/a" if acc["rolling"] is None else f"{acc['rolling']:.3f}"
    energy = r.get("energy") or {}
    lines = [
        f"edge-agent {a['version']}, pid {a['pid']}, up {_dur(a['uptime_s'])}",
        f"model        {m['version']} ({m['path']}; {shape} input, {m['num_classes']} classes)",
        *_fallback(m.get("fallback")),
        f"samples      received {s['received']}, accepted {s['accepted']} "
        f"(labelled {s['accepted_labelled']}), labels {s['feedback']} "
        f"(unmatched {s['feedback_unmatched']})",
        f"rejected     {s['rejected_total']}: {_counts(s['rejected'])}",
        f"dropped      {sum(s['dropped'].values())}: {_counts(s['dropped'])}",
        f"sequence     {s['seq_gaps']} gaps, {s['seq_missing']} samples missing, "
        f"{s.get('seq_restarts', 0)} restarts",
        *_losses(r.get("losses")),
        f"predictions  {s['predicted']} at {r['prediction_rate_per_s']:.1f}/s, latency "
        f"p50 {_ms(lat['p50'])}, p99 {_ms(lat['p99'])}",
        f"accuracy     {rolling} rolling over {acc['n']} labelled ({acc['labelled_total']} total)",
        f"labelled     {buf['labelled']} / {buf['capacity']} samples kept on disk",
        f"QCore        {_qcore(cal)}",
        f"calibration  {cal['done']} done, {cal['accepted']} accepted, "
        f"{cal['rolled_back']} rolled back ({cal.get('method', 'disabled')})",
        f"domains      {_domains(cal)}",
        f"energy       {_energy(energy)}",
        f"QAT bursts   {_bursts(r.get('bursts') or {})}",
        f"queue        {q['depth']} / {q['capacity']}",
        "checkpoint   "
        + (
            f"generation {ck['generation']}, {ck.get('age_s', time.time() - ck['time']):.0f} s ago"
            if ck
            else "none yet"
        ),
        f"storage      {_storage(r.get('storage') or {})}",
        f"memory       RSS {r['rss_bytes'] / 2**20:.1f} MiB",
    ]
    ser = r.get("serial")
    if ser:
        lines.append(
            f"serial       {ser['port']} {'connected' if ser['connected'] else 'ABSENT'}, "
            f"{ser['disconnects']} disconnects, {ser['reconnects']} reconnects"
        )
    return "\n".join(lines)
