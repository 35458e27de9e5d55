"""The small named contracts between the layers (numpy and typing only, so every layer may
import this module).

- :data:`Predict`: a batch ``(N, *input_shape)`` float32 -> ``(N,)`` class indices.
- :class:`SampleSource`: an ingest source running in its own thread (ZeroMQ, serial).
- :class:`Predictor`: what serves predictions (the integer engine).
- :class:`Calibrator`: what learns from the stream (the calibration controller): it sees
  every accepted sample in order (``observe``), late labels (``feedback``), and runs its
  due jobs when the agent has time (``due`` / ``run``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]  # (N, *shape) float32 -> (N,) class indices

EngineT = TypeVar("EngineT", contravariant=True)
ResultT = TypeVar("ResultT", covariant=True)


@runtime_checkable
class SampleSource(Protocol):
    """An ingest source: ``start`` its thread, ask whether it is ``alive``, ``stop`` it."""

    def start(self) -> None: ...

    def alive(self) -> bool: ...

    def stop(self, timeout: float = 2.0) -> None: ...


@runtime_checkable
class Predictor(Protocol):
    """Class indices (int64) and softmax confidences (float32) of a batch."""

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class Calibrator(Protocol[EngineT, ResultT]):
    """Learns from the stream; ``run`` does the oldest due job on ``engine``."""

    def prescore(
        self, X: np.ndarray, logits: np.ndarray | None = None, key: tuple[int, str] | None = None
    ) -> None: ...

    def observe(self, x: np.ndarray, label: int | None, seq: int) -> None: ...

    def feedback(self, seq: int, label: int) -> None: ...

    def due(self) -> bool: ...

    def run(self, engine: EngineT, seed: int | None = None) -> ResultT | None: ...
