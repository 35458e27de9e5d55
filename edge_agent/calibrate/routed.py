"""Routed inference: each sample runs on the statistics correction of the domain its
inputs look like (:mod:`edge_agent.calibrate.domains`).

A batch's per-sample features are scored under every domain's signature; the samples of
one domain run together with that domain's parameters, on the engine's latest weights
for the live domain and on its own weights for the others
(:meth:`edge_agent.engine.engine.Engine.variant`; each domain's model state is built once
per change of the live model or of the domain and cached). With one
domain (nothing adapted yet) it is the engine itself. The agent's predictions, the
statistics round's gate, the QCore buffer's forward passes and the real-drift bench's
scoring all go through :class:`RoutedPredictor`.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from edge_agent.calibrate.domains import Domain, DomainBank
from edge_agent.calibrate.drift_reference import sample_features
from edge_agent.engine.engine import Engine, ModelKey
from edge_agent.engine.logits import top_and_confidence
from edge_agent.engine.state import EngineState

# marks the version in the key of logits from several domains' models: no engine's key
# equals it (the output drift score then runs its own pass), the live version follows it
ROUTED = "routed:"


def model_version(key: ModelKey) -> str:
    """The live model's version in ``key`` (what predictions report)."""
    return key[1].removeprefix(ROUTED)


@dataclass
class Tally:
    """Samples routed to each domain and the tick of each one's latest (the bank's LRU)."""

    samples: Counter[str] = field(default_factory=Counter)
    last: dict[str, int] = field(default_factory=dict)
    tick: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, names: list[str], counts: np.ndarray) -> None:
        """Count a routed batch (``counts[j]`` samples went to ``names[j]``)."""
        with self.lock:
            self.tick += 1
            for name, n in zip(names, counts.tolist(), strict=True):
                if n:
                    self.samples[name] += n
                    self.last[name] = self.tick


class RoutedPredictor:
    """Engine-like predictions of ``engine`` through ``bank`` (see the module)."""

    def __init__(self, engine: Engine, bank: DomainBank, tally: Tally | None = None) -> None:
        self.engine = engine
        self.bank = bank
        self.tally = tally  # counted only when given (the agent's predictions)
        self.input_shape = engine.input_shape
        self.num_classes = engine.num_classes
        self._states: dict[str, tuple[EngineState, Domain, bool, EngineState]] = {}

    @property
    def bits(self) -> int:
        """The engine's active bit-width."""
        return self.engine.bits

    def _state(self, domain: Domain, live: EngineState, is_live: bool) -> EngineState:
        """``domain``'s model (on the live weights if it is the live domain, else on its
        own), rebuilt when the live model or the domain changed."""
        hit = self._states.get(domain.name)
        if hit is not None and hit[0] is live and hit[1] is domain and hit[2] == is_live:
            return hit[3]
        st = domain.params.variant(self.engine, live, own_weights=not is_live)
        self._states[domain.name] = (live, domain, is_live, st)
        return st

    def route(self, x: np.ndarray) -> np.ndarray:
        """The domain index (N,) of each prepared sample of a batch."""
        return self.bank.route(sample_features(x))

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Float logits (N, classes) of prepared samples, each on its domain's model."""
        return self.predict_logits_keyed(x)[0]

    def predict_logits_keyed(self, x: np.ndarray) -> tuple[np.ndarray, ModelKey]:
        """:meth:`predict_logits` and the key of the model that computed them: the
        engine's while nothing is adapted, else one that names no single model (so the
        output drift score runs its own pass)."""
        bank = self.bank  # one read: another thread may swap in a new bank
        domains = bank.domains
        if len(domains) == 1:  # nothing adapted: the engine alone
            out, key = self.engine.predict_logits_keyed(x)
            if self.tally is not None:
                self.tally.add([domains[0].name], np.array([len(out)]))
            return out, key
        a = np.asarray(x, np.float32)
        a = a[None] if a.shape == self.input_shape else a
        idx = bank.route(sample_features(a))
        counts = np.bincount(idx, minlength=len(domains))
        if self.tally is not None:
            self.tally.add([d.name for d in domains], counts)
        live = self.engine.state()  # one read: every group's model is built from the same
        used = np.flatnonzero(counts)
        key = (live.bits, ROUTED + live.version)
        if len(used) == 1:  # one domain (a single sample, a batch from one sensor): no split
            d = domains[used[0]]
            return self.engine.predict_logits_with(
                self._state(d, live, d.name == bank.live), a
            ), key
        out = np.empty((len(a), self.num_classes), np.float32)
        for j in used:
            rows = np.flatnonzero(idx == j)
            st = self._state(domains[j], live, domains[j].name == bank.live)
            out[rows] = self.engine.predict_logits_with(st, a[rows])
        return out, key

    def predict_classes(self, x: np.ndarray) -> np.ndarray:
        """Class indices (int64) of prepared samples."""
        return self.predict_logits(x).argmax(axis=1).astype(np.int64)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Samples as the model takes them (:meth:`Engine.prepare`)."""
        return self.engine.prepare(x)

    def predict(self, x: np.ndarray, *, prepared: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Class indices and softmax confidences, as :meth:`Engine.predict` gives them."""
        return top_and_confidence(self.predict_logits(x if prepared else self.prepare(x)))
