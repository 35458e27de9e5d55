"""Trained bench models cached on disk without pickle: the bundle as ``.eab`` (msgpack)
and the QAT models as tensor-only state dicts, read back with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path

import torch

from edge_agent.bundle import Bundle
from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.training.arch import FPNet
from edge_agent.training.qnet import QuantNet


def save_qnets(path: Path, qnets: dict[int, QuantNet]) -> None:
    """The QAT models' state dicts (tensors only) by bit-width."""
    torch.save({b: q.state_dict() for b, q in qnets.items()}, path)


def load_qnets(path: Path, bundle: Bundle, act_bits: int) -> dict[int, QuantNet]:
    """The QAT models saved by :func:`save_qnets`, rebuilt on ``bundle``'s architecture."""
    template = FPNet(bundle.arch, folded=True)  # its weights are replaced by the state dicts
    qnets = {}
    for bits, sd in torch.load(path, weights_only=True).items():
        q = QuantNet(template, int(bits), act_bits)
        q.load_state_dict(sd)
        qnets[int(bits)] = q.eval()
    return qnets


def cached_pair(stem: Path) -> tuple[Path, Path] | None:
    """The bundle and QAT-model files under ``stem`` if both exist."""
    bpath, qpath = stem.with_suffix(".eab"), stem.with_suffix(".qnets-state.pt")
    return (bpath, qpath) if bpath.exists() and qpath.exists() else None


def save_pair(stem: Path, bundle: Bundle, qnets: dict[int, QuantNet]) -> None:
    """Write ``bundle`` and ``qnets`` under ``stem`` (read back by :func:`load_pair`)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_bundle(bundle, stem.with_suffix(".eab"))
    save_qnets(stem.with_suffix(".qnets-state.pt"), qnets)


def load_pair(stem: Path, act_bits: int) -> tuple[Bundle, dict[int, QuantNet]]:
    """The bundle and QAT models written by :func:`save_pair`."""
    bundle = load_bundle(stem.with_suffix(".eab"))
    return bundle, load_qnets(stem.with_suffix(".qnets-state.pt"), bundle, act_bits)
