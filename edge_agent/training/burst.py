"""One QAT burst (torch): a short LSQ+ fine-tuning of one bit-width of a bundle on a coreset.

The burst rebuilds the fake-quant model exactly at the bundle's integer state (scales,
zero points, integer weights and biases), selects a coreset of the candidate pool (RES /
combined score, or random, or all of it), and trains with

    L = kd * KD(p_Q, p_F; T) + ce * CE(p_Q, y) [labelled samples only]
        + beta * CLC (independent or cascaded) + lambda(t) * CR (EMA teacher, two views)

re-selecting the coreset every ``reselect_every`` steps. The result is a new bundle whose
model at that bit-width is replaced; everything else (FP weights, other bit-widths) is
kept, and it still has to pass the accept-or-rollback gate before the agent uses it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edge_agent.bundle import Bundle
from edge_agent.calibrate import res
from edge_agent.calibrate.burst_config import BurstConfig
from edge_agent.training.arch import FPNet
from edge_agent.training.augment import augment
from edge_agent.training.clc import correction_loss, fp_forward
from edge_agent.training.consistency import EMATeacher, consistency_loss, ramp_up, two_views
from edge_agent.training.export import _input_divisors, quant_model
from edge_agent.training.fit import kd_loss, normalize
from edge_agent.training.qnet import QuantNet
from kernels.plan.packing import unpack_rows

log = logging.getLogger(__name__)


class BurstInterrupted(Exception):
    """The burst was asked to stop (pre-emption) before it finished."""


@dataclass
class BurstResult:
    """The candidate bundle and what the burst did."""

    bundle: Bundle
    stats: dict[str, Any] = field(default_factory=dict)


def models_from_bundle(bundle: Bundle, bits: int) -> tuple[FPNet, QuantNet]:
    """The folded FP model and a fake-quant model exactly at the bundle's ``bits`` state.

    Latent weights are the FP weights wherever they round to the stored integers and
    ``s * q`` elsewhere (e.g. after bit flips); biases are ``bias_q`` times their scale.
    """
    fp = FPNet(bundle.arch, folded=True)
    with torch.no_grad():
        for layer, (w_np, b_np) in zip(fp.weighted_layers(), bundle.fp_weights, strict=True):
            layer.weight.copy_(torch.from_numpy(w_np))
            assert layer.bias is not None
            layer.bias.copy_(torch.from_numpy(b_np))
    fp.eval()
    quant = bundle.quant[bits]
    qnet = QuantNet(fp, bits, quant.act_bits)
    divisors = _input_divisors(bundle.arch)
    with torch.no_grad():
        qnet.input_q.scale.fill_(quant.input_scale)
        qnet.input_q.offset.fill_(-quant.input_zp * quant.input_scale)
        for i, (ql, lq) in enumerate(zip(qnet.quant_layers(), quant.layers, strict=True)):
            w_scale = torch.from_numpy(lq.w_scale.astype(np.float32))
            ql.wq.scale.copy_(w_scale)
            w = ql.layer.weight
            s = w_scale.reshape(-1, *([1] * (w.ndim - 1)))
            codes = unpack_rows(lq.packed, lq.k, lq.bits).astype(np.float32)
            stored = torch.from_numpy(codes).reshape(w.shape)
            w.copy_(torch.where(ql.wq.integers(w) == stored, w, stored * s))
            bias_scale = w_scale * torch.tensor(lq.in_scale / divisors[i], dtype=torch.float32)
            assert ql.layer.bias is not None
            ql.layer.bias.copy_(torch.from_numpy(lq.bias_q.astype(np.float32)) * bias_scale)
            if lq.out_scale is not None and lq.out_zp is not None:
                aq = qnet.act_quantizers()[i]
                aq.scale.fill_(lq.out_scale)
                aq.offset.fill_(-lq.out_zp * lq.out_scale)
    return fp, qnet.eval()


@torch.no_grad()
def _logits(model: torch.nn.Module, x: torch.Tensor, chunk: int = 512) -> np.ndarray:
    model.eval()
    return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)]).numpy()


def _select(
    cfg: BurstConfig,
    qnet: QuantNet,
    x: torch.Tensor,
    y: np.ndarray,
    f_logits: np.ndarray,
    step: int,
    rng: np.random.Generator,
) -> np.ndarray:
    if cfg.selection == "all":
        return np.arange(len(x))
    if cfg.selection == "random":
        return res.select_random(len(x), cfg.coreset_fraction, rng)
    q_logits = _logits(qnet, x)
    if cfg.selection == "res":
        scores = res.res_scores(q_logits, f_logits, cfg.score_temperature)
    else:
        scores = res.combined_scores(
            q_logits, f_logits, y, step, cfg.steps, cfg.score_temperature, cfg.normalize_scores
        )
    classes = np.where(y >= 0, y, f_logits.argmax(axis=1)) if cfg.balanced else None
    ranked = res.ranked_top(scores, cfg.coreset_fraction, classes)
    if cfg.random_share > 0:
        return res.mix_random(ranked, len(x), cfg.random_share, rng)
    return np.sort(ranked)


def _batch_indices(selected: np.ndarray, batch: int, gen: torch.Generator) -> list[np.ndarray]:
    perm = selected[torch.randperm(len(selected), generator=gen).numpy()]
    return [perm[i : i + batch] for i in range(0, len(perm), batch)]


def run_burst(
    bundle: Bundle,
    pool_x: np.ndarray,
    pool_y: np.ndarray,
    cfg: BurstConfig,
    should_stop: Callable[[], bool] | None = None,
) -> BurstResult:
    """Train ``cfg.bits`` of ``bundle`` on a coreset of the raw pool ``pool_x`` (labels
    ``pool_y``, ``-1`` where unknown); raise :class:`BurstInterrupted` when ``should_stop``
    turns true. Returns the candidate bundle (not yet gated)."""
    t0, c0 = time.monotonic(), time.process_time()
    bits = bundle.default_bits if cfg.bits is None else cfg.bits
    if bits not in bundle.quant:
        raise ValueError(f"bundle has no {bits}-bit model (has {sorted(bundle.quant)})")
    if len(pool_x) == 0 or len(pool_x) != len(pool_y):
        raise ValueError(f"pool of {len(pool_x)} samples with {len(pool_y)} labels")
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    fp, qnet = models_from_bundle(bundle, bits)
    x = normalize(np.asarray(pool_x, dtype=np.float32), bundle.norm_mean, bundle.norm_std)
    y_np = np.asarray(pool_y, dtype=np.int64)
    y = torch.from_numpy(y_np)
    f_logits = _logits(fp, x)
    selected = _select(cfg, qnet, x, y_np, f_logits, 0, rng)
    ema = EMATeacher(qnet, cfg.cr_momentum) if cfg.cr_weight > 0 else None
    opt = torch.optim.AdamW(
        [
            {"params": qnet.weight_params(), "lr": cfg.lr, "weight_decay": 1e-4},
            {"params": qnet.quantizer_params(), "lr": cfg.quantizer_lr, "weight_decay": 0.0},
        ]
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    batches: list[np.ndarray] = []
    selections = 1
    totals = {"kd": 0.0, "ce": 0.0, "clc": 0.0, "cr": 0.0}
    for step in range(cfg.steps):
        if should_stop is not None and should_stop():
            raise BurstInterrupted(f"stopped after {step} of {cfg.steps} steps")
        if step and step % cfg.reselect_every == 0 and cfg.selection in ("combined", "res"):
            selected = _select(cfg, qnet, x, y_np, f_logits, step, rng)
            selections += 1
            batches = []
        if not batches:
            batches = _batch_indices(selected, cfg.batch_size, gen)
        idx = torch.from_numpy(batches.pop())
        xb = x[idx]
        if cfg.augment_strength > 0:
            xb = augment(xb, gen, cfg.augment_strength)
        qnet.train()
        out, q_feats = qnet(xb, return_features=True)
        with torch.no_grad():
            teacher, fp_feats = fp_forward(fp, xb)
        parts = {"kd": cfg.kd_weight * kd_loss(out, teacher, cfg.kd_temperature)}
        labelled = y[idx] >= 0
        if cfg.ce_weight > 0 and bool(labelled.any()):
            parts["ce"] = cfg.ce_weight * F.cross_entropy(out[labelled], y[idx][labelled])
        if cfg.clc != "none" and fp_feats:
            parts["clc"] = cfg.clc_beta * correction_loss(
                cfg.clc, qnet, fp_feats, q_feats, cfg.clc_temperature
            )
        if ema is not None:
            v1, v2 = two_views(x[idx], gen, cfg.augment_strength or 1.0)
            lam = ramp_up(step, cfg.cr_ramp_steps, cfg.cr_weight)
            parts["cr"] = lam * consistency_loss(qnet(v1), ema(v2), cfg.cr_temperature)
        loss = torch.stack(list(parts.values())).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(qnet)
        for k, v in parts.items():
            totals[k] += float(v.detach()) / cfg.steps
    qnet.eval()
    stats: dict[str, Any] = {
        "bits": bits,
        "steps": cfg.steps,
        "pool_size": len(x),
        "coreset_size": len(selected),
        "selections": selections,
        "mean_losses": totals,
        "cpu_s": time.process_time() - c0,
        "wall_s": time.monotonic() - t0,
        "config": dataclasses.asdict(cfg),
    }
    quant = dict(bundle.quant)
    quant[bits] = quant_model(qnet)
    meta = {**bundle.meta, "last_burst": {k: v for k, v in stats.items() if k != "config"}}
    log.info(
        "burst: %d-bit, %d steps on %d of %d samples, %.1f s CPU",
        bits,
        cfg.steps,
        len(selected),
        len(x),
        stats["cpu_s"],
    )
    return BurstResult(dataclasses.replace(bundle, quant=quant, meta=meta), stats)
