"""The domain bank: the training domain and the few drifted domains the agent adapted to,
each with its own statistics correction and a label-free signature of its inputs.

A kept statistics correction (:mod:`edge_agent.calibrate.stats_rung`) is global: the
model adapted to a drifted domain is worse on the training domain. The bank keeps the
training domain's parameters next to each kept correction, so that each sample can be
routed to the domain its inputs look like (:mod:`edge_agent.calibrate.routed`). Domains
differ by their statistics correction (input normalization, hidden biases,
requantization multipliers) and by the flips and the label correction kept while each was
the *live* one (the domain the engine runs): the live domain runs the engine's latest
weights and last-layer bias, every other domain those it had when it stopped being
live. The maths: ``docs/method.md`` section 5, "Domain routing".

- :class:`~edge_agent.calibrate.signature.Signature`: a mixture of diagonal Gaussians
  over the per-sample features of
  :func:`edge_agent.calibrate.drift_reference.sample_features` (per channel: mean, log std,
  log mean absolute first difference). The training domain's is the drift reference the
  bundle records at ``with_statistics`` time (one component per class; from the QCore
  anchors for a bundle without one); an adapted domain's is fitted on the stream window
  its correction was proposed on, one component per class the corrected model predicts.
- :class:`DomainParams` (:mod:`edge_agent.calibrate.domain_params`): one domain's
  parameters, weights and last-layer bias at every bit-width.
- :class:`DomainBank`: the base domain plus at most ``capacity`` adapted ones (least
  recently used evicted); immutable (a change makes a new bank, swapped as one
  reference), saved in the calibrated bundle's extras (``domains/*``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from edge_agent.bundle import Bundle, LayerQuant
from edge_agent.calibrate.domain_params import Codes, DomainParams, Held, Layer
from edge_agent.calibrate.drift_reference import DriftReference, sample_features
from edge_agent.calibrate.signature import Signature
from edge_agent.engine.state import frozen_codes
from kernels.plan.packing import qrange

log = logging.getLogger(__name__)

PREFIX = "domains/"
_MIN_SPREAD = 0.05  # an adapted domain's feature spread: at least this share of the base's


class StaleBank(ValueError):
    """A saved bank made for another model (a QAT burst or a new bundle since)."""


@dataclass(frozen=True)
class Domain:
    """One entry of the bank."""

    name: str  # "base" or "d<number>" (numbered in the order they were made)
    signature: Signature
    params: DomainParams
    made_at: int = -1  # stream sample index of the correction (-1: the training domain)
    # its own samples' typical log likelihood (:meth:`Signature.typical`; nan: unknown,
    # a window is never taken for a return to it)
    typical: float = float("nan")


@dataclass(frozen=True)
class DomainBank:
    """The base domain first, then the adapted ones, most recently made last."""

    domains: tuple[Domain, ...]
    capacity: int = 3  # adapted domains kept at most
    made: int = 0  # adapted domains made so far (names them)
    live: str = "base"  # the domain the engine runs (on the engine's latest weights)

    @property
    def base(self) -> Domain:
        """The training domain."""
        return self.domains[0]

    @cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every domain's components side by side (:meth:`Signature.quadratic`) and the
        domain each belongs to."""
        parts = [d.signature.quadratic() for d in self.domains]
        owner = np.concatenate([np.full(len(p[2]), j) for j, p in enumerate(parts)])
        a, b, c = (np.concatenate([p[k] for p in parts], axis=-1) for k in range(3))
        return a, b, c, owner.astype(np.int64)

    def route(self, f: np.ndarray) -> np.ndarray:
        """Index (N,) int64 of the domain whose signature gives each feature row the
        highest likelihood, a mixture counting at its most likely component (ties: the
        earlier domain, the base first); but a row as likely under the training domain
        as its own samples typically are (:attr:`Domain.typical`) stays there unless it
        is as typical of the adapted domain that wins it. An adapted domain's signature is
        fitted on one window, tighter than the training domain's, so that by likelihood
        alone it wins clean samples near its centre that none of its own samples looked
        like (``watch_side`` 2-bit seed 0: 24 of 112 clean samples routed to it). A
        domain with mirrored channels takes a row only if its signs make the row more
        likely under the training domain (a clean sample routed there is mirrored)."""
        if len(self.domains) == 1:
            return np.zeros(len(f), np.int64)
        a, b, c, owner = self._table
        k0 = len(self.base.signature.log_weight)  # the base's components come first
        scores = (f * f) @ a + f @ b + c
        base = scores[:, :k0].max(axis=1)
        for j, sign in self._mirrors:  # a mirror that makes a row less like training
            g = f * sign
            mirrored = ((g * g) @ a[:, :k0] + g @ b[:, :k0] + c[:k0]).max(axis=1)
            scores[np.ix_(mirrored <= base, owner == j)] = -np.inf
        top = scores.argmax(axis=1)
        idx = owner[top]
        typical = np.array([d.typical for d in self.domains])
        # a domain of unknown typical: never typical
        atypical = ~(scores[np.arange(len(f)), top] >= typical[idx])
        idx[(base >= typical[0]) & atypical] = 0
        return idx

    @cached_property
    def _mirrors(self) -> list[tuple[int, np.ndarray]]:
        """(index, :meth:`DomainParams.mirror`) of each adapted domain with mirrored channels."""
        signs = [(j, d.params.mirror()) for j, d in enumerate(self.domains)][1:]
        return [(j, m) for j, m in signs if m is not None]

    def floor(self) -> np.ndarray:
        """The smallest feature spread an adapted domain's signature may have."""
        return _MIN_SPREAD * self.base.signature.spread()

    def adapted(self, X: np.ndarray, classes: np.ndarray, params: DomainParams, at: int) -> Domain:
        """A new domain (not yet in the bank) from the stream window ``X`` (inputs as the
        model takes them) its correction ``params`` was proposed on, and the classes the
        corrected model gives them."""
        f = sample_features(X)
        sig = Signature.fit(f, classes, self.floor())
        return Domain(f"d{self.made + 1}", sig, params, at, sig.typical(f))

    def home(self, f: np.ndarray, share: float) -> tuple[int, float] | None:
        """The domain (index, share) a window's feature rows ``f`` belong to: of the
        domains under which at least ``share`` of them are as likely as its own samples
        typically were, the one that wins most of those by :meth:`route` (ties: the
        earlier); None if none. Typicality first: an adapted domain's signature, fitted
        on a drifted window, wins by likelihood a third of a clean window wholly typical
        of the training domain (``rainfall`` offset, after the return), and the agent then
        fitted a new correction to clean data (clean accuracy 0.667 -> 0.611)."""
        if len(f) == 0:
            return None
        idx = self.route(f)
        best: tuple[int, float] | None = None
        wins = -1.0
        for j, d in enumerate(self.domains):
            typical = d.signature.score(f) >= d.typical  # all False for a nan typical
            if typical.mean() >= share and (idx == j)[typical].mean() > wins:
                best, wins = (j, float(typical.mean())), float((idx == j)[typical].mean())
        return best

    def add(
        self,
        domain: Domain,
        used: Mapping[str, int] | None = None,
        held: Held | None = None,
        replace: str | None = None,
    ) -> DomainBank:
        """The bank with ``domain`` added and live; the domain live until now keeps
        ``held`` (the weights and last-layer bias it ran: the engine's) as its own, or
        goes if it is ``replace``. Past ``capacity`` the adapted domain that was routed to
        least recently (``used``: name -> tick of its last routed sample; one never
        routed to counts from when it was made) goes."""
        snap = self.snapshot(held)
        rest = [d for d in snap.domains[1:] if d.name != replace]
        while len(rest) >= self.capacity:
            last = used or {}
            old = min(rest, key=lambda d: (last.get(d.name, -1), d.made_at))
            log.info("domain bank full: %s (made at sample %d) evicted", old.name, old.made_at)
            rest.remove(old)
        return DomainBank((snap.base, *rest, domain), self.capacity, self.made + 1, domain.name)

    def go_live(self, name: str, held: Held | None) -> DomainBank:
        """The bank with domain ``name`` live again; the domain live until now keeps
        ``held`` as its own weights and last-layer bias."""
        return dataclasses.replace(self.snapshot(held), live=name)

    def snapshot(self, held: Held | None) -> DomainBank:
        """The live domain with ``held`` as its own weights and last-layer bias (None:
        as it is)."""
        if held is None:
            return self
        codes, out = dict(held.codes), dict(held.out_bias)
        doms = tuple(
            dataclasses.replace(d, params=dataclasses.replace(d.params, codes=codes, out_bias=out))
            if d.name == self.live
            else d
            for d in self.domains
        )
        return dataclasses.replace(self, domains=doms)

    # ------------------------------------------------------------------ persistence

    def to_extras(self, bundle: Bundle) -> dict[str, np.ndarray]:
        """The bank as extras of ``bundle`` (``domains/*``, with the model's fingerprint)."""
        out: dict[str, np.ndarray] = {PREFIX + "made": np.array([self.made, self.capacity])}
        out[PREFIX + "live"] = np.frombuffer(self.live.encode(), np.uint8).copy()
        out[PREFIX + "model"] = fingerprint(bundle)
        for j, d in enumerate(self.domains):
            p = f"{PREFIX}{j}/"
            out[p + "name"] = np.frombuffer(d.name.encode(), np.uint8).copy()
            out[p + "made_at"] = np.array([d.made_at], np.int64)
            out[p + "typical"] = np.array([d.typical], np.float64)
            out[p + "sig"] = np.stack([d.signature.mean, d.signature.std])
            out[p + "sig_w"] = d.signature.log_weight
            for b in sorted(d.params.mean):
                out[f"{p}{b}/norm"] = np.stack([d.params.mean[b], d.params.std[b]])
                for i, (bias, m0, shift) in d.params.layers[b].items():
                    out[f"{p}{b}/{i}"] = np.stack([bias, m0, shift]).astype(np.int32)
                for i, q in enumerate(d.params.codes.get(b, ())):
                    out[f"{p}{b}/q{i}"] = np.asarray(q, np.int8)
                if b in d.params.out_bias:
                    out[f"{p}{b}/out"] = np.asarray(d.params.out_bias[b], np.int32)
        return out

    @classmethod
    def from_extras(cls, bundle: Bundle, hidden: list[int]) -> DomainBank | None:
        """The bank ``bundle`` saved (None if it holds none); ValueError if what it holds
        does not fit the bundle."""
        ex = bundle.extras
        head = ex.get(PREFIX + "made")
        if head is None:
            return None
        head = np.asarray(head)
        if head.shape != (2,) or head[1] < 1:
            raise ValueError(f"domain bank header {head.tolist()} is not (made, capacity)")
        if not np.array_equal(np.asarray(ex.get(PREFIX + "model")), fingerprint(bundle)):
            raise StaleBank("the saved domain bank was made for another model")
        features = 3 * bundle.input_shape[0]
        domains, j = [], 0
        while f"{PREFIX}{j}/sig" in ex:
            domains.append(_domain(bundle, f"{PREFIX}{j}/", hidden, features))
            j += 1
        if not domains or domains[0].name != "base" or len(domains) > int(head[1]) + 1:
            raise ValueError(f"domain bank has {len(domains)} domains, base first expected")
        raw = ex.get(PREFIX + "live")  # a bank saved before it named its live one: base
        live = (
            "base" if raw is None else bytes(np.asarray(raw, np.uint8)).decode("ascii", "replace")
        )
        if live not in {d.name for d in domains}:
            raise ValueError(f"domain bank's live domain {live!r} is not in it")
        return cls(tuple(domains), int(head[1]), int(head[0]), live)

    def status(self, routed: Mapping[str, int]) -> list[dict[str, object]]:
        """One line per domain for ``status``: name, where it was made, samples routed."""
        return [
            {"name": d.name, "made_at_sample": d.made_at, "samples": int(routed.get(d.name, 0))}
            for d in self.domains
        ]


def _domain(bundle: Bundle, p: str, hidden: list[int], features: int) -> Domain:
    """One saved domain (ValueError if its arrays do not fit ``bundle``)."""
    ex = bundle.extras
    try:
        name = bytes(np.asarray(ex[p + "name"], np.uint8)).decode()
        sig_arr = np.asarray(ex[p + "sig"], np.float64)
        sig = Signature(sig_arr[0], sig_arr[1], np.asarray(ex[p + "sig_w"], np.float64))
        made_at = int(np.asarray(ex[p + "made_at"]).reshape(-1)[0])
        typical = float(np.asarray(ex.get(p + "typical", [np.nan]), np.float64).reshape(-1)[0])
        mean: dict[int, np.ndarray] = {}
        std: dict[int, np.ndarray] = {}
        layers: dict[int, dict[int, Layer]] = {}
        codes: dict[int, Codes] = {}
        out_bias: dict[int, np.ndarray] = {}
        c = bundle.input_shape[0]
        for b, quant in bundle.quant.items():
            norm = np.asarray(ex[f"{p}{b}/norm"], np.float32)
            if norm.shape != (2, c) or not (np.isfinite(norm).all() and (norm[1] != 0).all()):
                raise ValueError(f"{b}-bit normalization {norm.shape} unusable")
            mean[b], std[b] = norm[0].copy(), norm[1].copy()
            layers[b] = {}
            for i in hidden:
                arr = np.asarray(ex[f"{p}{b}/{i}"])
                o = quant.layers[i].out_features
                if arr.shape != (3, o) or arr.dtype != np.int32:
                    raise ValueError(f"{b}-bit layer {i}: {arr.shape} {arr.dtype}, (3, {o}) int32")
                layers[b][i] = (arr[0].copy(), arr[1].copy(), arr[2].copy())
            if f"{p}{b}/q0" in ex:  # its own weights (a bank saved before had none: shared)
                codes[b] = tuple(
                    _codes(ex[f"{p}{b}/q{i}"], lq, b) for i, lq in enumerate(quant.layers)
                )
            if f"{p}{b}/out" in ex:  # its own last-layer bias (a bank saved before: shared)
                out_bias[b] = _out_bias(ex[f"{p}{b}/out"], quant.layers[-1].out_features, b)
    except (KeyError, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"domain {p!r} incomplete: {exc}") from None
    sig.check(features)
    return Domain(name, sig, DomainParams(mean, std, layers, codes, out_bias), made_at, typical)


def _codes(arr: np.ndarray, lq: LayerQuant, bits: int) -> np.ndarray:
    """A saved domain's codes of one layer, checked against the bundle's layer."""
    q = np.asarray(arr)
    lo, hi = qrange(lq.bits)
    if q.shape != (lq.out_features, lq.k) or q.dtype != np.int8:
        raise ValueError(
            f"{bits}-bit weights {q.shape} {q.dtype}, ({lq.out_features}, {lq.k}) int8"
        )
    if q.size and (int(q.min()) < lo or int(q.max()) > hi):
        raise ValueError(f"{bits}-bit weights outside the {lq.bits}-bit range")
    return frozen_codes(q)


def _out_bias(arr: np.ndarray, classes: int, bits: int) -> np.ndarray:
    """A saved domain's last-layer bias, checked against the bundle's last layer."""
    b = np.asarray(arr)
    if b.shape != (classes,) or b.dtype != np.int32:
        raise ValueError(f"{bits}-bit last-layer bias {b.shape} {b.dtype}, ({classes},) int32")
    return b.copy()


def fingerprint(bundle: Bundle) -> np.ndarray:
    """SHA-256 (32 uint8) of what neither a flip nor a statistics correction changes: the
    quantization scales and zero points of every bit-width (a QAT burst changes them)."""
    h = hashlib.sha256()
    for bits in sorted(bundle.quant):
        q = bundle.quant[bits]
        h.update(np.array([bits, q.input_scale, q.input_zp], np.float64).tobytes())
        for lq in q.layers:
            scales = [lq.in_scale, lq.in_zp, lq.out_scale or 0.0, lq.out_zp or 0]
            h.update(np.asarray(lq.w_scale, np.float32).tobytes())
            h.update(np.array(scales, np.float64).tobytes())
    return np.frombuffer(h.digest(), np.uint8).copy()


def base_domain(
    bundle: Bundle, hidden: list[int], ref: DriftReference, samples: np.ndarray | None = None
) -> Domain:
    """The training domain: ``bundle``'s own parameters, the drift reference's signature,
    the typical likelihood of its ``samples`` (training inputs: the QCore anchors)."""
    sig = Signature.of_reference(ref)
    typical = float("nan") if samples is None else sig.typical(sample_features(samples))
    return Domain("base", sig, DomainParams.of_bundle(bundle, hidden), typical=typical)


def without_bank(bundle: Bundle) -> Bundle:
    """``bundle`` without its saved bank (the extras of a bank the agent dropped)."""
    extras = {k: v for k, v in bundle.extras.items() if not k.startswith(PREFIX)}
    return dataclasses.replace(bundle, extras=extras)
