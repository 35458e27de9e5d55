"""Bundles pushed over the status socket (``edge-agent rollout``), kept in the state
directory: the configured bundle (``[model] bundle``, read-only to the agent under
systemd) stays as it is, and a pushed bundle takes its place until it is rolled back or
the configured file changes.

``<state>/deploy/``: ``current.eab`` (the pushed bundle the agent runs), ``previous.eab``
(the bundle it ran before, when that was a pushed one too) and ``deploy.json`` (the
configured bundle's sha256 at the push, and whether the previous one is a file here or
the configured bundle). Every file is written to a temporary name, fsynced and renamed;
the renames between them are atomic, so a crash leaves either bundle whole. A pushed
bundle that no longer loads (a damaged card) is moved to ``damaged.eab`` and the
configured bundle runs: the unit does not restart an agent that exits for a bad bundle,
and the configured one is the board's known-good choice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from edge_agent.bundle import BundleError
from edge_agent.bundle_io import load_bundle
from edge_agent.container import atomic_write_bytes

log = logging.getLogger("edge_agent.agent")

CURRENT, PREVIOUS, INCOMING, RECORD = "current.eab", "previous.eab", "incoming.eab", "deploy.json"
DAMAGED = "damaged.eab"  # the last pushed bundle found damaged, kept to look at
FILE_MODE = 0o600  # as the state directory's other files


def sha256_file(path: Path) -> str:
    """The file's sha256 (hex)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Deployments:
    """The pushed bundles of one agent (see the module docstring)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "deploy"
        self.damaged: dict[str, Any] | None = None  # the last damaged pushed bundle found

    def _record(self) -> dict[str, Any] | None:
        try:
            rec = json.loads((self.dir / RECORD).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("%s unreadable (%s): running the configured bundle", RECORD, exc)
            return None
        return rec if isinstance(rec, dict) else None

    def bundle_path(self, configured: Path) -> Path:
        """The bundle to run: the pushed one, unless none is or the configured bundle was
        replaced since the push (then that newer, explicit choice wins)."""
        rec = self._record()
        current = self.dir / CURRENT
        if rec is None or not current.exists():
            return configured
        try:
            same = sha256_file(configured) == rec.get("configured_sha256")
        except OSError:
            same = True  # an unreadable configured bundle: the pushed one still runs
        if not same:
            log.warning(
                "%s changed since the last push: running it instead of the pushed bundle",
                configured,
            )
            self.clear()
            return configured
        try:
            load_bundle(current)
        except (BundleError, OSError) as exc:
            self._set_aside_damaged(current, str(exc))
            log.error(
                "the pushed bundle is damaged (%s): running the configured bundle %s",
                exc,
                configured,
            )
            return configured
        return current

    def _set_aside_damaged(self, current: Path, why: str) -> None:
        """Keep a damaged pushed bundle as :data:`DAMAGED` and forget the push."""
        self.damaged = {"error": why, "time": time.time()}
        try:
            os.replace(current, self.dir / DAMAGED)
        except OSError as exc:  # a read-only card: the record goes below all the same
            log.error("cannot move the damaged pushed bundle aside: %s", exc)
        self.clear()

    def incoming(self, data: bytes) -> Path:
        """Write a pushed bundle beside the others, not yet in use (to be loaded and checked)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / INCOMING
        atomic_write_bytes(path, data, FILE_MODE)
        return path

    def discard_incoming(self) -> None:
        """Remove a pushed bundle that was refused."""
        (self.dir / INCOMING).unlink(missing_ok=True)

    def install(self, running: Path, configured: Path) -> Path:
        """Make the incoming bundle the current one, keeping ``running`` (the bundle it
        replaces) as the previous one; return the current bundle's path."""
        current, previous = self.dir / CURRENT, self.dir / PREVIOUS
        from_configured = running == configured
        rec = {
            "configured_sha256": sha256_file(configured),
            "previous": "configured" if from_configured else "file",
        }
        if from_configured:
            previous.unlink(missing_ok=True)
        else:  # a copy: the current file stays whole until the rename below replaces it
            atomic_write_bytes(previous, current.read_bytes(), FILE_MODE)
        os.replace(self.dir / INCOMING, current)
        atomic_write_bytes(self.dir / RECORD, json.dumps(rec).encode(), FILE_MODE)
        return current

    def rollback_source(self, configured: Path) -> Path:
        """Where the bundle the last push replaced is now (nothing changes). Raises
        ValueError when there is nothing to go back to."""
        rec = self._record()
        if rec is None or not (self.dir / CURRENT).exists():
            raise ValueError("no pushed bundle to roll back")
        if rec.get("previous") == "configured":
            return configured
        if rec.get("previous") == "none":
            raise ValueError("rolled back once already: only the last push's previous is kept")
        if not (self.dir / PREVIOUS).exists():
            raise ValueError("the bundle before the last push is gone")
        return self.dir / PREVIOUS

    def rollback(self, configured: Path) -> Path:
        """Return to the bundle the last push replaced; return the path it now has.
        Raises ValueError when there is nothing to go back to."""
        source = self.rollback_source(configured)
        if source == configured:
            self.clear()
            return configured
        rec = self._record() or {}
        current = self.dir / CURRENT
        os.replace(source, current)
        atomic_write_bytes(
            self.dir / RECORD, json.dumps({**rec, "previous": "none"}).encode(), FILE_MODE
        )
        return current

    def clear(self) -> None:
        """Forget every pushed bundle (the configured one runs)."""
        for name in (RECORD, CURRENT, PREVIOUS):
            (self.dir / name).unlink(missing_ok=True)

    def status(self, configured: Path) -> dict[str, Any]:
        """What ``status`` shows under ``model.deploy``."""
        rec = self._record()
        pushed = rec is not None and (self.dir / CURRENT).exists()
        return {
            "pushed": pushed,
            "previous": rec.get("previous") if pushed and rec else None,
            "configured": str(configured),
            "damaged": self.damaged,
        }
