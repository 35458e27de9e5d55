"""The classes a model gave the rows it saw last, so a QCore buffer update predicts only
what is new to that model.

Every buffer update classifies the whole buffer and the new chunk at each tracked
bit-width. Between two updates most of the buffer stays and the models usually do too, so
most of those forward passes would repeat the last ones. :class:`ClassMemo` keeps, per
bit-width, the model's key and the classes of the rows of its last call (by a 128-bit
digest of each row), and runs the model only on rows it has not classified with that key.
Two models with the same key give the same classes for the same inputs
(:data:`edge_agent.engine.engine.ModelKey`), so the update's result is unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable

import numpy as np

from edge_agent.calibrate.routed import RoutedPredictor
from edge_agent.contracts import Predict
from edge_agent.engine.engine import Engine, ModelKey

Keyed = Callable[[np.ndarray], tuple[np.ndarray, ModelKey]]  # predict_logits_keyed


def memo_key(predictor: Engine | RoutedPredictor) -> Hashable | None:
    """What names ``predictor``'s model: the engine's key, routed or not while nothing is
    adapted (the engine alone predicts); None (no memory) for several domains' models."""
    if isinstance(predictor, Engine):
        return predictor.model_key
    return predictor.engine.model_key if len(predictor.bank.domains) == 1 else None


class ClassMemo:
    """Per bit-width: the model key and the classes of the rows of its last call."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[Hashable, dict[bytes, int]]] = {}
        self.rows_asked = 0  # rows the wrapped predictions were asked for
        self.rows_predicted = 0  # of which the model ran on

    def wrap(self, bits: int, key: Hashable | None, keyed: Keyed) -> Predict:
        """The classes of ``keyed`` (logits and the key of the model that made them, read
        in one step) for the model ``key`` at ``bits``, run only on rows it has not
        classified last time; ``key`` None: run on every row, and nothing kept."""
        if key is None:
            self._last.pop(bits, None)
            return lambda X: _classes(keyed(X)[0])

        def classes(X: np.ndarray) -> np.ndarray:
            rows = np.ascontiguousarray(X, np.float32).reshape(len(X), -1)
            digests = [hashlib.blake2b(r.data, digest_size=16).digest() for r in rows]
            hit = self._last.get(bits)
            seen = hit[1] if hit is not None and hit[0] == key else {}
            todo = [i for i, d in enumerate(digests) if d not in seen]
            out = np.array([seen.get(d, -1) for d in digests], dtype=np.int64)
            self.rows_asked += len(out)
            self.rows_predicted += len(todo)
            if todo:
                logits, got = keyed(X[todo])
                if got != key:  # the model changed since key was read (a bit-width switch)
                    self._last.pop(bits, None)
                    self.rows_predicted += len(out)
                    return _classes(keyed(X)[0])
                out[todo] = _classes(logits)
            self._last[bits] = (key, dict(zip(digests, out.tolist(), strict=True)))
            return out

        return classes


def _classes(logits: np.ndarray) -> np.ndarray:
    """Class indices (int64), as ``predict_classes`` gives them."""
    return np.asarray(logits).argmax(axis=1).astype(np.int64)
