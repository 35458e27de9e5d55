"""The model the agent runs: its bundle, engine and input preparation."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from edge_agent.bundle import SERIES_NORM, Bundle
from edge_agent.bundle_io import load_bundle
from edge_agent.data.datasets import normalize_series
from edge_agent.engine.engine import Engine

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

    def prepare(self, X: np.ndarray) -> np.ndarray:
        """Accepted samples as the model takes them (z-normalized per series if it was
        trained so); everything after ingest sees only these."""
        return normalize_series(X) if self.bundle.meta.get(SERIES_NORM) else X
