"""Drift injection for replayed streams (numpy only; used by the publisher and benchmarks).

A drift is written ``KIND[:STRENGTH]@START``, e.g. ``rotation@200`` or ``gain:2.0@100``:
from sample ``START`` of the stream on, every sample is transformed by KIND. Sensor
kinds work on (C, T) windows, image kinds on (C, H, W) images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _rotation_matrix(angle_deg: float, axis: np.ndarray) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    a = np.deg2rad(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def rotate_axes(x: np.ndarray, strength: float) -> np.ndarray:
    """Rotate every 3-axis sensor triplet (channels 0-2, 3-5, ...) by ``strength`` degrees
    about a fixed oblique axis: a watch worn at a different angle."""
    out = x.copy()
    r = _rotation_matrix(strength, np.array([1.0, 1.0, 0.5]))
    for c in range(0, x.shape[0] - x.shape[0] % 3, 3):
        out[c : c + 3] = (r @ x[c : c + 3].reshape(3, -1)).reshape(x[c : c + 3].shape)
    return out


def gain(x: np.ndarray, strength: float) -> np.ndarray:
    """Multiply the signal by ``strength`` (a mis-calibrated amplifier)."""
    return x * np.float32(strength)


def offset(x: np.ndarray, strength: float) -> np.ndarray:
    """Add ``strength`` times each channel's standard deviation (a sensor bias)."""
    axes = tuple(range(1, x.ndim))
    return x + np.float32(strength) * (x.std(axis=axes, keepdims=True) + 1e-6)


def make_noise(seed: int) -> Callable[[np.ndarray, float], np.ndarray]:
    """Gaussian noise of ``strength`` times each channel's std, from a seeded generator."""
    rng = np.random.default_rng(seed)

    def noise(x: np.ndarray, strength: float) -> np.ndarray:
        axes = tuple(range(1, x.ndim))
        sd = x.std(axis=axes, keepdims=True) + 1e-6
        return x + (rng.standard_normal(x.shape) * sd * strength).astype(np.float32)

    return noise


def dropout(x: np.ndarray, strength: float) -> np.ndarray:
    """Zero the first ``round(strength * C)`` channels (at least one): a dead sensor."""
    out = x.copy()
    n = max(1, round(strength * x.shape[0]))
    out[:n] = 0.0
    return out


def time_warp(x: np.ndarray, strength: float) -> np.ndarray:
    """Resample the window ``strength`` times faster (a faster gesture), edge-padded."""
    t = x.shape[-1]
    src = np.clip(np.arange(t) * strength, 0, t - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, t - 1)
    w = (src - lo).astype(np.float32)
    return x[..., lo] * (1 - w) + x[..., hi] * w


def shift_image(x: np.ndarray, strength: float) -> np.ndarray:
    """Shift an image right and down by ``strength`` pixels (zero fill)."""
    s = round(strength)
    out = np.zeros_like(x)
    h, w = x.shape[-2:]
    out[..., s:, s:] = x[..., : h - s, : w - s]
    return out


def rotate_image(x: np.ndarray, strength: float) -> np.ndarray:
    """Rotate an image by ``strength`` degrees about its centre (bilinear, zero fill)."""
    h, w = x.shape[-2:]
    a = np.deg2rad(strength)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    sy = np.cos(a) * (yy - cy) - np.sin(a) * (xx - cx) + cy
    sx = np.sin(a) * (yy - cy) + np.cos(a) * (xx - cx) + cx
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    out = np.zeros_like(x)
    for dy in (0, 1):
        for dx in (0, 1):
            yi, xi = y0 + dy, x0 + dx
            wgt = (1 - np.abs(sy - yi)) * (1 - np.abs(sx - xi))
            ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
            vals = np.where(ok, x[..., np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0.0)
            out += (vals * np.where(ok, wgt, 0.0)).astype(x.dtype)
    return out


def contrast(x: np.ndarray, strength: float) -> np.ndarray:
    """Scale an image's contrast about its mean by ``strength``."""
    m = x.mean()
    return (x - m) * np.float32(strength) + m


SENSOR_KINDS = ("rotation", "gain", "offset", "noise", "dropout", "timewarp")
IMAGE_KINDS = ("shift", "rotate", "contrast", "noise", "gain", "offset")
DEFAULT_STRENGTH = {
    "rotation": 60.0,
    "gain": 2.0,
    "offset": 1.5,
    "noise": 0.8,
    "dropout": 0.34,
    "timewarp": 1.5,
    "shift": 1.0,
    "rotate": 20.0,
    "contrast": 0.5,
}


def kinds_help() -> str:
    """The drift kinds with their default strengths, for ``--help``."""

    def listed(kinds: tuple[str, ...]) -> str:
        return ", ".join(f"{k} ({DEFAULT_STRENGTH[k]:g})" for k in kinds)

    return (
        f"kinds (default strength): sensor series {listed(SENSOR_KINDS)}; "
        f"images {listed(IMAGE_KINDS)}"
    )


@dataclass(frozen=True)
class Drift:
    """A parsed drift: transform kind, strength and the first stream index it applies to."""

    kind: str
    strength: float
    start: int

    @classmethod
    def parse(cls, spec: str) -> Drift:
        """Parse ``KIND[:STRENGTH]@START``; raise ValueError with a usable message."""
        try:
            head, start_s = spec.split("@")
            kind, _, strength_s = head.partition(":")
            start = int(start_s)
            strength = float(strength_s) if strength_s else DEFAULT_STRENGTH[kind]
        except (ValueError, KeyError):
            raise ValueError(
                f"bad drift {spec!r}: write KIND[:STRENGTH]@START, KIND one of "
                f"{sorted(DEFAULT_STRENGTH)}, e.g. rotation@200 or gain:2.0@100"
            ) from None
        if start < 0:
            raise ValueError(f"bad drift {spec!r}: START must be >= 0")
        if not np.isfinite(strength):  # inf or NaN samples: every one rejected by the agent
            raise ValueError(f"bad drift {spec!r}: STRENGTH must be a finite number")
        return cls(kind, strength, start)

    def check(self, input_shape: tuple[int, ...], count: int) -> None:
        """ValueError when the drift cannot act on a stream of ``count`` samples of
        ``input_shape``: a kind for the other sort of data, or a start after the end."""
        images = len(input_shape) == 3
        kinds = IMAGE_KINDS if images else SENSOR_KINDS
        if self.kind not in kinds:
            raise ValueError(
                f"drift {self.kind!r} is not for {'images' if images else 'sensor series'} "
                f"(samples {input_shape}): use one of {', '.join(kinds)}"
            )
        if self.kind == "rotation" and input_shape[0] < 3:  # rotate_axes would change nothing
            raise ValueError(
                f"drift 'rotation' turns 3-axis sensor triplets; these samples have "
                f"{input_shape[0]} channel(s): use one of {', '.join(kinds[1:])}"
            )
        if self.start >= count:
            raise ValueError(
                f"drift starts at sample {self.start}, but the stream has {count}: nothing "
                "would drift (lower START or raise --count)"
            )

    def transform(self, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
        """A function that applies this drift to one sample."""
        table: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
            "rotation": rotate_axes,
            "gain": gain,
            "offset": offset,
            "noise": make_noise(seed),
            "dropout": dropout,
            "timewarp": time_warp,
            "shift": shift_image,
            "rotate": rotate_image,
            "contrast": contrast,
        }
        fn = table[self.kind]
        strength = self.strength
        return lambda x: fn(np.asarray(x, dtype=np.float32), strength).astype(np.float32)

    def apply_stream(self, X: np.ndarray, seed: int = 0) -> np.ndarray:
        """Apply the drift to samples ``start:`` of a stream (a copy; earlier ones kept)."""
        out = np.array(X, dtype=np.float32, copy=True)
        fn = self.transform(seed)
        for i in range(self.start, len(out)):
            out[i] = fn(out[i])
        return out
