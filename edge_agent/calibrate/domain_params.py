"""One domain's parameters at every bit-width (:mod:`edge_agent.calibrate.domains`): its
statistics correction (input normalization, hidden biases, requantization multipliers),
its own integer weights and its own last-layer bias, and how they make an engine state.

A kept flip round or label correction changes the weights or the last-layer bias of the
domain the engine runs (the *live* one) only: every other domain keeps those it had when
it stopped being live, so a round fitted to a drifted domain cannot cost the training
domain (``docs/method.md`` section 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_agent.bundle import Bundle
from edge_agent.calibrate.stats_rung import Correction, LayerFix
from edge_agent.engine.engine import Engine
from edge_agent.engine.state import EngineState, frozen_codes
from kernels.digest import sha256
from kernels.plan import weights as plan_weights
from kernels.plan.packing import unpack_rows

Layer = tuple[np.ndarray, np.ndarray, np.ndarray]  # int32 bias_q, m0, shift (O,)
Codes = tuple[np.ndarray, ...]  # every weighted layer's signed codes (O, K) int8


def with_codes(st: EngineState, codes: Codes) -> EngineState:
    """``st`` with the integer weights ``codes`` (every layer; those equal to ``st``'s
    are not laid out again), not made active; the version hashes the change."""
    changed = {i: q for i, (q, old) in enumerate(zip(codes, st.codes, strict=True)) if q is not old}
    changed = {i: q for i, q in changed.items() if not np.array_equal(q, st.codes[i])}
    if not changed:
        return st
    weights = plan_weights.replace_layers(st.model, st.weights, changed)
    h = sha256(st.version.encode())
    kept = list(st.codes)
    for i in sorted(changed):
        h.update(i.to_bytes(4, "little") + np.ascontiguousarray(changed[i], np.int8).tobytes())
        kept[i] = frozen_codes(changed[i])
    return EngineState(st.bits, st.model, weights, h.hexdigest()[:12], tuple(kept))


def engine_codes(engine: Engine) -> dict[int, Codes]:
    """The integer weights ``engine`` runs now, at every bit-width (its read-only arrays)."""
    return {b: engine.state(b).codes for b in engine.available_bits}


def engine_out_bias(engine: Engine) -> dict[int, np.ndarray]:
    """The last layer's int32 bias ``engine`` runs now, at every bit-width (where the
    label rung's correction lives)."""
    last = len(engine.codes()) - 1
    return {b: engine.layer_bias(last, b) for b in engine.available_bits}


@dataclass(frozen=True)
class Held:
    """What the live domain keeps of the engine when it stops being live: every
    bit-width's integer weights (its kept flips) and last-layer bias (its kept label
    correction)."""

    codes: dict[int, Codes]
    out_bias: dict[int, np.ndarray]

    @classmethod
    def of_engine(cls, engine: Engine) -> Held:
        """What ``engine`` runs now."""
        return cls(engine_codes(engine), engine_out_bias(engine))


def load_codes(engine: Engine, codes: dict[int, Codes]) -> None:
    """Swap ``codes`` (bits -> every layer's) into ``engine``: the layers that differ."""
    for b, qs in codes.items():
        now = engine.state(b).codes
        update = [None if np.array_equal(q, old) else q for q, old in zip(qs, now, strict=True)]
        if any(q is not None for q in update):
            engine.swap_weights(update, bits=b)


@dataclass(frozen=True)
class DomainParams:
    """One domain's statistics correction at every bit-width: input normalization and
    every hidden layer's bias and requantization multiplier (complete, not a change),
    and the domain's own integer weights (``codes``) and last-layer int32 bias
    (``out_bias``; empty: the engine's latest ones)."""

    mean: dict[int, np.ndarray]  # bits -> (C,) float32
    std: dict[int, np.ndarray]
    layers: dict[int, dict[int, Layer]]  # bits -> hidden layer -> (bias, m0, shift)
    codes: dict[int, Codes] = field(default_factory=dict)  # bits -> every layer's codes
    out_bias: dict[int, np.ndarray] = field(default_factory=dict)  # bits -> (K,) int32

    @classmethod
    def of_engine(cls, engine: Engine, hidden: list[int]) -> DomainParams:
        """The parameters and weights ``engine`` runs now, at every bit-width."""
        mean, std, layers = {}, {}, {}
        for b in engine.available_bits:
            mean[b], std[b] = engine.normalization(b)
            layers[b] = {i: (engine.layer_bias(i, b), *engine.layer_requant(i, b)) for i in hidden}
        return cls(mean, std, layers, engine_codes(engine), engine_out_bias(engine))

    @classmethod
    def of_bundle(cls, bundle: Bundle, hidden: list[int]) -> DomainParams:
        """The parameters and weights ``bundle`` holds (what an engine built from it runs)."""
        mean = {b: bundle.norm_mean.astype(np.float32) for b in bundle.quant}
        std = {b: bundle.norm_std.astype(np.float32) for b in bundle.quant}
        layers = {
            b: {
                i: tuple(np.asarray(a, np.int32) for a in (lq.bias_q, lq.m0, lq.shift))
                for i, lq in enumerate(q.layers)
                if i in hidden
            }
            for b, q in bundle.quant.items()
        }
        codes = {
            b: tuple(frozen_codes(unpack_rows(lq.packed, lq.k, lq.bits)) for lq in q.layers)
            for b, q in bundle.quant.items()
        }
        out = {b: np.asarray(q.layers[-1].bias_q, np.int32) for b, q in bundle.quant.items()}
        return cls(mean, std, layers, codes, out)  # type: ignore[arg-type]

    def variant(self, engine: Engine, live: EngineState, own_weights: bool = True) -> EngineState:
        """``live`` (the engine's latest model of one bit-width) with these parameters
        and, with ``own_weights`` (a domain that is not the live one), these weights and
        last-layer bias."""
        fix = self.layers[live.bits]
        codes = self.codes.get(live.bits) if own_weights else None
        biases = {i: v[0] for i, v in fix.items()}
        if own_weights and live.bits in self.out_bias:
            biases[len(live.codes) - 1] = self.out_bias[live.bits]
        return engine.variant(
            live if codes is None else with_codes(live, codes),
            self.mean[live.bits],
            self.std[live.bits],
            biases,
            {i: (v[1], v[2]) for i, v in fix.items()},
        )

    def mirror(self) -> np.ndarray | None:
        """(F,) +-1 per routing feature (per channel: mean, log std, log roughness) that
        turns a sample's features into those of the sample this domain's channel signs
        make of it (the means of its mirrored channels negated); None without a mirrored
        channel (:mod:`edge_agent.calibrate.stats_signs`)."""
        sign = np.sign(self.std[next(iter(self.std))]).astype(np.float64)
        if (sign > 0).all():
            return None
        return np.concatenate([sign, np.ones_like(sign), np.ones_like(sign)])

    def correction(self, bits: int) -> Correction:
        """These parameters as a statistics correction (the input normalization of
        ``bits``, shared), to put into an engine and a bundle as a kept one is."""
        layers = {
            b: {i: LayerFix(*(np.asarray(a, np.int32) for a in v)) for i, v in fix.items()}
            for b, fix in self.layers.items()
        }
        return Correction(self.mean[bits], self.std[bits], layers, {})

    def same(self, other: DomainParams) -> bool:
        """Whether both hold the same correction (weights aside: the live domain's move
        with every kept flip)."""
        return all(
            np.array_equal(a[b], o[b])
            for a, o in ((self.mean, other.mean), (self.std, other.std))
            for b in a
        ) and all(
            all(np.array_equal(x, y) for x, y in zip(v, other.layers[b][i], strict=True))
            for b, fix in self.layers.items()
            for i, v in fix.items()
        )
