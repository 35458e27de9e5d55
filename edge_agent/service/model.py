"""The model the agent runs: its bundle, engine and input preparation."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_agent.bundle import SERIES_NORM, Bundle, BundleError
from edge_agent.bundle_io import load_bundle
from edge_agent.engine.engine import Engine
from edge_agent.service.state import StateStore

log = logging.getLogger("edge_agent.agent")


@dataclass
class Model:
    """The running model: its engine and what the agent reports about it."""

    engine: Engine
    path: str
    mtime: float
    label_names: list[str]
    bundle: Bundle

    @classmethod
    def load(cls, path: str) -> Model:
        """Load a bundle, build the engine and run it once so the JIT is warm."""
        bundle = load_bundle(path)
        engine = Engine(bundle)
        engine.warmup()
        if bundle.meta.get(SERIES_NORM):
            log.info("the model takes samples z-normalized per series: the agent does it")
        return cls(engine, path, os.stat(path).st_mtime, list(bundle.label_names), bundle)


def load_running_model(
    store: StateStore,
    base: Path,
    payload: dict[str, Any] | None,
    save: Callable[[bytes], object] | None = None,
) -> tuple[Model, str, dict[str, Any] | None]:
    """The model to run, the configured bundle's sha256, and what replaced a damaged one.

    The state directory's model if it derives from the configured bundle (it holds the
    calibrated weights); when it is damaged, the newest intact model it replaced (kept by
    the store), restored as ``model.eab``; else the configured bundle, copied there.
    ``save`` writes ``model.eab`` (default ``store.save_model``; the agent's own counts a
    refused write and retries it, so a full or read-only card does not stop the start).
    """
    save = save or store.save_model
    try:
        base_sha = hashlib.sha256(base.read_bytes()).hexdigest()
    except OSError as exc:
        raise BundleError(f"{base}: cannot read bundle: {exc.strerror or exc}") from None
    fallback: dict[str, Any] | None = None
    if payload is not None and payload.get("base_sha256") == base_sha:
        damaged: list[str] = []
        for path in store.model_candidates():
            try:
                model = Model.load(str(path))
            except BundleError as exc:
                store.set_aside(path, str(exc))
                damaged.append(str(exc))
                continue
            if damaged:  # the newest good calibrated model becomes model.eab again
                log.warning(
                    "the state's model was damaged: running the previous calibrated model %s",
                    path.name,
                )
                save(path.read_bytes())
                model = replace(model, path=str(store.model_path))
                fallback = {"damaged": damaged, "used": path.name, "time": time.time()}
            return model, base_sha, fallback
        if damaged:
            fallback = {"damaged": damaged, "used": str(base), "time": time.time()}
            log.warning(
                "no intact calibrated model in the state directory: starting from the "
                "configured bundle %s",
                base,
            )
    elif payload is not None:
        log.info(
            "the bundle to run (configured or pushed) changed since the last checkpoint: "
            "starting from it"
        )
        try:
            store.forget_models()
        except OSError as exc:  # a read-only card: they stay until it is writable
            log.error("cannot remove the previous bundle's models: %s", exc)
    model = Model.load(str(base))
    save(base.read_bytes())
    return model, base_sha, fallback
