"""QCore buffer helpers for the tests."""

from __future__ import annotations

import numpy as np

from edge_agent.calibrate.gate import holdout_split
from edge_agent.calibrate.qcore import QCoreBuffer


def calibration_split(
    buf: QCoreBuffer, holdout_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (calibration, held-out) of the buffer for the gate."""
    return holdout_split(len(buf), holdout_fraction, seed)
