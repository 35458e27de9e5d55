"""What a batch of logits predicts: the top class and its softmax confidence."""

from __future__ import annotations

import numpy as np


def top_and_confidence(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class indices (int64) and softmax confidences (float32) of the top class of each
    row of ``logits``."""
    top = logits.argmax(axis=1)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z, dtype=np.float32)
    conf = (1.0 / e.sum(axis=1)).astype(np.float32)  # exp(0) / sum for the top class
    return top.astype(np.int64), conf
