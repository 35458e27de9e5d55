"""Offline training of the bit-flipping network (torch; runs at `edge-agent train` time).

Simulated drift episodes are built from the training data with the drift kinds the
publisher injects and mixtures of two, every kind at every bit-width of the bundle
(:mod:`edge_agent.training.flip_episodes` plans them). In each episode the quantized
model's integer weights start at the deployed codes, optionally already moved by a few
random flips (so the network sees non-zero offsets); the forward-only features come from
the integer model on the episode's drifted samples plus the bundle's QCore as pre-drift
anchors (as in a device round). The target action of a weight is the local step the
device would propose (the sign of its ``task_step``, or ``rec_step`` without one, where
it exceeds half an integer step:
:func:`~edge_agent.calibrate.flip_round.greedy_proposer`) *confirmed* by
back-propagation: kept only where it has the sign of the negative gradient of the episode's
cross-entropy with respect to that weight (through the torch fake-quant model); all
others are "keep". The network thus learns, from forward-only features, which local
proposals the true gradient would support. (Targets taken from the gradient alone, the
top 2% of each layer by first-order gain, made a network that validated worse than the
local steps it sees.)
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edge_agent.bundle import Bundle
from edge_agent.calibrate.flip_features import FEATURES, layer_features
from edge_agent.calibrate.flip_net import FlipNet
from edge_agent.calibrate.flip_round import (
    BitFlipCalibrator,
    apply_flips,
    greedy_proposer,
    random_proposer,
    select_flips,
)
from edge_agent.data.datasets import Dataset
from edge_agent.training.fit import normalize
from edge_agent.training.flip_episodes import EpisodeDrift, episode_kinds, episode_plan
from edge_agent.training.phases import PhaseTimer
from edge_agent.training.qnet import QuantNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlipTrainConfig:
    """Episodes and network size of the offline flipper training.

    ``episodes``: None is one full cycle of the (drift kind, bit-width) cells, at least
    ``min_episodes``; a number is taken as given (fewer than the cells covers some).
    """

    episodes: int | None = None
    min_episodes: int = 24
    episode_samples: int = 48
    hidden: int = 16
    steps: int = 400
    batch: int = 4096
    lr: float = 3e-3
    keep_ratio: float = 4.0  # "keep" examples per flip example in the training set


def _gradient_signs(
    qnet: QuantNet, codes: list[np.ndarray], x: torch.Tensor, y: torch.Tensor
) -> list[np.ndarray]:
    """Per layer, the sign (int8) of the cross-entropy's negative gradient at ``codes``."""
    net = copy.deepcopy(qnet)
    with torch.no_grad():
        for ql, q in zip(net.quant_layers(), codes, strict=True):
            s = ql.wq.effective_scale().reshape(-1, *([1] * (ql.layer.weight.ndim - 1)))
            ql.layer.weight.copy_(
                torch.from_numpy(q.astype(np.float32)).reshape(ql.layer.weight.shape) * s
            )
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    out = []
    for ql in net.quant_layers():
        g = ql.layer.weight.grad
        assert g is not None
        out.append(np.sign(-g.reshape(g.shape[0], -1).numpy()).astype(np.int8))
    return out


def episode_count(cfg: FlipTrainConfig, bits: list[int], input_shape: tuple[int, ...]) -> int:
    """How many episodes ``cfg`` asks for with these bit-widths and this input."""
    if cfg.episodes is not None:
        return cfg.episodes
    return max(cfg.min_episodes, len(episode_kinds(input_shape)) * len(bits))


def episode_examples(
    calib: BitFlipCalibrator,
    qnets: dict[int, QuantNet],
    ds: Dataset,
    episode: EpisodeDrift,
    rng: np.random.Generator,
    cfg: FlipTrainConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, F) and target classes (n,) in {0: -1, 1: keep, 2: +1} of one episode
    (``calib``: a calibrator on the bundle, reused across episodes for its engines)."""
    bundle, bits = calib.bundle, episode.bits
    idx = rng.choice(len(ds.X_train), size=min(cfg.episode_samples, len(ds.X_train)), replace=False)
    drifted = episode.apply(ds.X_train[idx], seed=int(rng.integers(1 << 30)))
    X = np.concatenate([drifted, calib.anchor_X])
    y = np.concatenate([ds.y_train[idx], calib.anchor_y])
    anchors = np.arange(len(X)) >= len(drifted)
    deployed, residuals = calib.deployed_codes(bits), calib.residuals(bits)
    codes = deployed
    if rng.random() < 0.5:  # start from a state earlier rounds could have left
        feats0 = [np.zeros((*q.shape, len(FEATURES)), np.float32) for q in codes]
        budget = max(1, round(0.01 * sum(q.size for q in codes)))
        proposer = random_proposer(int(rng.integers(1 << 30)))
        codes = apply_flips(codes, select_flips(proposer(feats0), budget), bits)
    logits, traces = calib.trace(bits, codes, X)
    feats = layer_features(
        bundle, bundle.quant[bits], codes, deployed, residuals, traces, logits, y, anchors
    )
    x_t = normalize(X, bundle.norm_mean, bundle.norm_std)
    grad = _gradient_signs(qnets[bits], codes, x_t, torch.from_numpy(y))
    local = [a for a, _ in greedy_proposer()(feats)]
    targets = [np.where((a != 0) & (a == g), a, 0) for a, g in zip(local, grad, strict=True)]
    f = np.concatenate([a.reshape(-1, len(FEATURES)) for a in feats])
    t = np.concatenate([a.ravel() for a in targets]).astype(np.int64) + 1
    flip = np.flatnonzero(t != 1)
    keep = np.flatnonzero(t == 1)
    keep = rng.choice(
        keep, size=min(len(keep), int(cfg.keep_ratio * max(len(flip), 1))), replace=False
    )
    sel = np.concatenate([flip, keep])
    return f[sel], t[sel]


def train_flipper(
    bundle: Bundle,
    qnets: dict[int, QuantNet],
    ds: Dataset,
    seed: int,
    cfg: FlipTrainConfig | None = None,
    timer: PhaseTimer | None = None,
    plan: list[EpisodeDrift] | None = None,
) -> FlipNet:
    """Train the flipping network on simulated drift episodes of ``ds``'s training split
    (``timer``: phases "flipper episodes" and "flipper network"; ``plan``: these episodes
    instead of :func:`episode_plan`'s)."""
    cfg = cfg or FlipTrainConfig()
    timer = timer or PhaseTimer()
    rng = np.random.default_rng(seed)
    with timer.phase("flipper episodes"):
        bits = sorted(qnets)
        if plan is None:
            count = episode_count(cfg, bits, ds.input_shape)
            plan = episode_plan(count, bits, ds.input_shape, rng)
        calib = BitFlipCalibrator(bundle, greedy_proposer())  # its engines serve every episode
        parts = [episode_examples(calib, qnets, ds, ep, rng, cfg) for ep in plan]
        log.info("flipper episodes: %s", _plan_summary(plan))
        for b in bits:
            t = [p[1] for p, ep in zip(parts, plan, strict=True) if ep.bits == b]
            n = sum(len(x) for x in t)
            flips = sum(int((x != 1).sum()) for x in t)
            log.info("flipper examples at %d bits: %d (%d flips)", b, n, flips)
    feats = np.concatenate([p[0] for p in parts]).astype(np.float32)
    target = np.concatenate([p[1] for p in parts])
    with timer.phase("flipper network"):
        net = _fit_network(feats, target, seed, cfg)
    return net


def _plan_summary(plan: list[EpisodeDrift]) -> str:
    counts: dict[str, int] = {}
    for ep in plan:
        key = f"{ep.kind}@{ep.bits}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))


def _fit_network(feats: np.ndarray, target: np.ndarray, seed: int, cfg: FlipTrainConfig) -> FlipNet:
    """The MLP fitted to the episodes' examples, as a numpy :class:`FlipNet`."""
    mean, std = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    torch.manual_seed(seed)
    f = len(FEATURES)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(f, cfg.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(cfg.hidden, cfg.hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(cfg.hidden, 3),
    )
    x = torch.from_numpy((feats - mean) / std)
    t = torch.from_numpy(target)
    counts = torch.bincount(t, minlength=3).float().clamp(min=1)
    weight = counts.sum() / (3 * counts)
    opt = torch.optim.Adam(mlp.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(x), (min(cfg.batch, len(x)),), generator=gen)
        loss = F.cross_entropy(mlp(x[idx]), t[idx], weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = float((mlp(x).argmax(1) == t).float().mean())
    log.info(
        "flipper: %d examples, %.1f%% flips, train accuracy %.3f",
        len(t),
        100 * float((t != 1).float().mean()),
        acc,
    )
    layers = [m for m in mlp if isinstance(m, torch.nn.Linear)]
    w = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in layers]
    return FlipNet(
        w[0][0],
        w[0][1],
        w[1][0],
        w[1][1],
        w[2][0],
        w[2][1],
        mean.astype(np.float32),
        std.astype(np.float32),
    )


def with_flipper(bundle: Bundle, net: FlipNet) -> Bundle:
    """A copy of ``bundle`` whose extras carry the flipping network."""
    return dataclasses.replace(bundle, extras={**bundle.extras, **net.to_extras()})
