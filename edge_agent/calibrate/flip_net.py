"""The bit-flipping network: a tiny MLP applied to every weight's forward-only features.

It maps the features of :mod:`edge_agent.calibrate.flip_features` to logits of the
actions {-1, 0, +1} (one integer step down, keep, one step up). The same few hundred
parameters serve every conv and linear layer of any supported model. Inference is numpy;
the network is trained offline (:mod:`edge_agent.training.flip_train`, torch) and ships
in the bundle's extras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_agent.calibrate.flip_features import FEATURES

ACTIONS = np.array([-1, 0, 1], dtype=np.int8)
KEEP = 1  # index of action 0
_KEYS = ("w1", "b1", "w2", "b2", "w3", "b3", "mean", "std")
PREFIX = "flip.net."


@dataclass(frozen=True)
class FlipNet:
    """Weights of the MLP ``F -> H -> H -> 3`` (ReLU) and the feature standardization."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    w3: np.ndarray
    b3: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        f = len(FEATURES)
        if self.w1.shape[0] != f or self.mean.shape != (f,) or self.std.shape != (f,):
            raise ValueError(f"flip network expects {f} features, weights have {self.w1.shape}")
        if self.w3.shape[1] != 3 or self.w2.shape[0] != self.w1.shape[1]:
            raise ValueError("flip network weights have inconsistent shapes")

    def logits(self, feats: np.ndarray) -> np.ndarray:
        """Action logits (..., 3) of features (..., F)."""
        # standardization folded into the first layer: ((x - m) / s) W1 = x (W1 / s) - (m / s) W1
        w1 = self.w1 / self.std[:, None]
        h = feats.reshape(-1, feats.shape[-1]) @ w1
        h += self.b1 - (self.mean / self.std) @ self.w1
        np.maximum(h, 0.0, out=h)
        h = h @ self.w2
        h += self.b2
        np.maximum(h, 0.0, out=h)
        z = h @ self.w3
        z += self.b3
        return z.reshape(*feats.shape[:-1], 3)

    def propose(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Most likely action (int8) per weight and, where it is a flip, its softmax
        probability (0 where the most likely action is to keep the weight)."""
        z = self.logits(feats)
        best = z.argmax(axis=-1)
        flip = best != KEEP
        conf = np.zeros(best.shape, np.float32)
        zf = z[flip]
        # softmax at the argmax: exp(0) over the sum of exp(z - max)
        conf[flip] = 1.0 / np.exp(zf - zf.max(axis=-1, keepdims=True)).sum(axis=-1)
        return ACTIONS[best], conf

    @property
    def num_parameters(self) -> int:
        """Trainable parameters (standardization excluded)."""
        return int(sum(getattr(self, k).size for k in _KEYS[:6]))

    def to_extras(self) -> dict[str, np.ndarray]:
        """The arrays to store in a bundle's extras."""
        return {PREFIX + k: getattr(self, k).astype(np.float32) for k in _KEYS}

    @classmethod
    def from_extras(cls, extras: dict[str, np.ndarray]) -> FlipNet | None:
        """The network stored in a bundle's extras, or None when the bundle has none."""
        if not all(PREFIX + k in extras for k in _KEYS):
            return None
        return cls(**{k: extras[PREFIX + k].astype(np.float32) for k in _KEYS})
