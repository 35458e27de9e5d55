"""``edge-agent run --check``: what ``run`` would refuse at start that the configuration
parser cannot see, checked without opening a socket: the bundle loads and every bit-width
builds an engine (a layer that does not fit its input passes the bundle's checksum), and
the CURVE key files the configuration names are readable certificates."""

from __future__ import annotations

from collections.abc import Callable

from edge_agent.bundle import BundleError
from edge_agent.bundle_io import load_bundle
from edge_agent.curve_keys import KeyFileError, load_allowed, load_public, load_secret
from edge_agent.engine.engine import Engine
from edge_agent.service.config import AgentConfig


def problems(cfg: AgentConfig) -> list[str]:
    """One message per problem found (none: ``run`` gets past these at start)."""
    found: list[str] = []
    try:
        bundle = load_bundle(cfg.model.bundle)
        for bits in bundle.quant:
            Engine(bundle, bits=bits, scratch=True)
    except (BundleError, ValueError) as exc:
        found.append(f"model.bundle: {cfg.model.bundle}: {exc}")
    found += [f"{key}: {exc}" for key, exc in _key_problems(cfg)]
    return found


def _key_problems(cfg: AgentConfig) -> list[tuple[str, KeyFileError]]:
    checks: list[tuple[str, Callable[[], object]]] = []
    ing = cfg.ingest.curve
    if ing.enabled:
        checks.append(("ingest.curve.secret_key", lambda: load_secret(ing.secret_key)))
        if cfg.ingest.mode == "bind":
            checks.append(
                ("ingest.curve.authorized_keys", lambda: load_allowed(ing.authorized_keys))
            )
        else:
            checks.append(
                ("ingest.curve.server_public_key", lambda: load_public(ing.server_public_key))
            )
    st = cfg.status.curve
    if st.endpoint:
        checks.append(("status.curve.authorized_keys", lambda: load_allowed(st.authorized_keys)))
        if st.server_key:
            checks.append(("status.curve.server_key", lambda: load_secret(st.server_key)))
    out: list[tuple[str, KeyFileError]] = []
    for key, check in checks:
        try:
            check()
        except KeyFileError as exc:
            out.append((key, exc))
    return out
