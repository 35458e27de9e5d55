"""``edge-agent keys``: CURVE key pairs for the remote status socket.

``keys client`` creates this machine's client key pair; ``keys allow`` puts a client's
public key into an agent's allow-list; ``keys server`` prints an agent's public key (the
agent creates its pair in its state directory at first start).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import zmq.auth

from edge_agent.container import atomic_write_bytes
from edge_agent.curve_keys import (
    CLIENT_KEY_ENV,
    SERVER_DIR,
    SERVER_NAME,
    KeyFileError,
    create_pair,
    default_client_key,
    load_public,
)
from edge_agent.service.config import ConfigError, load_config

DEFAULT_CONFIG = "/etc/edge-agent/agent.toml"


def add_keys_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent keys``."""
    sub = parser.add_subparsers(dest="keys_cmd", required=True, metavar="ACTION")
    p = sub.add_parser(
        "client",
        help="create this client's key pair (for status, collect, rollout over CURVE)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.key_secret",
        help=(
            "where to write the secret file; NAME.key beside it (default "
            f"${CLIENT_KEY_ENV} or ~/.config/edge-agent/client.key_secret)"
        ),
    )
    p = sub.add_parser("allow", help="allow a client's public key on this agent")
    p.add_argument("key", type=Path, help="the client's public certificate (NAME.key)")
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"agent.toml (default {DEFAULT_CONFIG})"
    )
    p = sub.add_parser("server", help="print this agent's public key (the agents file's column)")
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"agent.toml (default {DEFAULT_CONFIG})"
    )


def _client(out: Path | None) -> int:
    secret = out or default_client_key()
    name = secret.name.removesuffix(".key_secret")
    if secret.name == name:
        raise KeyFileError(f"{secret}: the secret file's name must end in .key_secret")
    public, secret = create_pair(secret.parent, name)
    print(f"wrote {secret} (secret, 0600) and {public} (public)")
    print(f"public key: {load_public(public).decode()}")
    print(f"allow it on an agent: copy {public.name} there, then `edge-agent keys allow FILE`")
    return 0


def _allow(key: Path, config: str) -> int:
    cfg = load_config(config)
    target = cfg.status.curve.authorized_keys
    if not target:
        raise KeyFileError(f"{config}: [status.curve] authorized_keys is not set")
    public = load_public(key)  # a bad file is refused here, not skipped by the agent later
    name = key.name if key.name.endswith(".key") else f"{key.stem}.key"
    if zmq.auth.load_certificate(key)[1]:  # it would be copied world-readable to the board
        raise KeyFileError(f"{key} holds the client's secret key: allow the public {name} instead")
    dest = Path(target) / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest, key.read_bytes(), 0o644)
    print(f"allowed {public.decode()} as {dest}; it applies at the agent's next reload")
    print("(systemctl reload edge-agent, or SIGHUP)")
    return 0


def _server(config: str) -> int:
    cfg = load_config(config)
    path = (
        Path(cfg.status.curve.server_key).with_suffix(".key")
        if cfg.status.curve.server_key
        else cfg.state_dir / SERVER_DIR / f"{SERVER_NAME}.key"
    )
    if not path.exists():
        raise KeyFileError(
            f"no server key at {path}: the agent creates it at its first start with "
            "[status.curve] endpoint set (as another user: sudo)"
        )
    print(f"{load_public(path).decode()}  ({path})")
    return 0


def keys_main(args: argparse.Namespace) -> int:
    """``edge-agent keys``."""
    try:
        if args.keys_cmd == "client":
            return _client(args.out)
        if args.keys_cmd == "allow":
            return _allow(args.key, args.config)
        return _server(args.config)
    except (KeyFileError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
