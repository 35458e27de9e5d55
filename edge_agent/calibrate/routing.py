"""The controller's part of domain routing: its bank, the routed predictors, what a kept
statistics correction adds, what ``status`` shows (:mod:`edge_agent.calibrate.domains`,
:mod:`edge_agent.calibrate.routed`; ``docs/method.md`` section 5)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.bundle import INPUT_CORRECTED, Bundle
from edge_agent.calibrate.domain_params import Held
from edge_agent.calibrate.domains import (
    PREFIX,
    Domain,
    DomainBank,
    DomainParams,
    StaleBank,
    base_domain,
    without_bank,
)
from edge_agent.calibrate.drift_reference import DriftReference, sample_features
from edge_agent.calibrate.qcore_miss import EXTRA_X
from edge_agent.calibrate.routed import RoutedPredictor, Tally
from edge_agent.engine.engine import Engine

log = logging.getLogger(__name__)

Predictor = Engine | RoutedPredictor


class DomainRouting:
    """The bank of one running bundle (None: routing off, with the reason)."""

    def __init__(
        self,
        bundle: Bundle,
        hidden: list[int],
        ref: DriftReference | None,
        capacity: int,
        count: Callable[[str, int], None],
    ) -> None:
        self.hidden = hidden
        self.tally = Tally()
        # the live domain if a flip round made it (:meth:`fork`): a correction supersedes it
        self.forked: str | None = None
        self._predictors: dict[tuple[int, bool], RoutedPredictor] = {}
        self.bank: DomainBank | None = None
        try:
            self.bank = DomainBank.from_extras(bundle, hidden)
        except StaleBank as exc:  # a QAT burst or another bundle: the old domains do not apply
            log.info("domain routing: %s: starting from the base domain", exc)
        except ValueError as exc:  # the bundle itself is sealed: this is a bank that does not fit
            count("domain_bank_errors", 1)
            log.error("saved domain bank unusable (%s): routing starts from the base domain", exc)
        if self.bank is not None:
            live = self.bank.live
            if PREFIX + "live" not in bundle.extras:  # saved before it named the live one
                own = DomainParams.of_bundle(bundle, hidden)  # the bundle runs the live one
                live = next((d.name for d in self.bank.domains if d.params.same(own)), "base")
            self.bank = dataclasses.replace(self.bank, capacity=capacity, live=live)
            self.reason = f"restored: {len(self.bank.domains)} domains"
            log.info("domain routing: bank %s", self.reason)
            return
        if ref is None:
            self.reason = "off: no drift reference and no QCore anchors for a signature"
            log.warning("domain routing %s", self.reason)
            return
        anchors = bundle.extras.get(EXTRA_X)  # training inputs: the base domain's typical
        samples = None if anchors is None or len(anchors) < 2 else np.asarray(anchors, np.float32)
        self.bank = DomainBank((base_domain(bundle, hidden, ref, samples),), capacity)
        self.reason = "base domain from the bundle"
        if bundle.meta.get(INPUT_CORRECTED):
            self.reason += " (a correction kept before routing: the base holds it)"
            log.warning("domain routing: the bundle's correction is its base domain")

    @property
    def live(self) -> str:
        """The domain whose correction (and weights) the engine runs."""
        return "base" if self.bank is None else self.bank.live

    def predictor(self, engine: Engine, count: bool = False) -> Predictor:
        """``engine`` routed through the bank (one cached predictor per engine and
        counting; it follows the bank), or ``engine`` itself with routing off."""
        if self.bank is None:
            return engine
        key = (id(engine), count)
        p = self._predictors.get(key)
        if p is None or p.engine is not engine:
            p = RoutedPredictor(engine, self.bank, self.tally if count else None)
            self._predictors[key] = p
        p.bank = self.bank  # one reference: a predict call reads it once per batch
        return p

    def on_live(self, X: np.ndarray) -> np.ndarray:
        """Mask (N,) of the samples ``X`` (as the model takes them) that the bank routes
        to the live domain (every one while it holds the base domain alone)."""
        bank = self.bank
        if bank is None or len(bank.domains) == 1:
            return np.ones(len(X), bool)
        live = next(j for j, d in enumerate(bank.domains) if d.name == bank.live)
        return bank.route(sample_features(X)) == live

    def candidate(
        self, engine: Engine, scratch: Engine, X: np.ndarray, at: int
    ) -> Callable[[np.ndarray], np.ndarray]:
        """The logits the gate compares after a proposal: the live weights routed through
        the bank with the domain of ``scratch``'s parameters (read when called, after the
        proposal) and the window ``X`` added as the live one."""
        assert self.bank is not None
        bank = self.bank

        def logits(x: np.ndarray) -> np.ndarray:
            params = DomainParams.of_engine(scratch, self.hidden)
            dom = bank.adapted(X, scratch.predict_classes(X), params, at)
            added = bank.add(dom, self.tally.last, Held.of_engine(engine), self._superseded())
            return RoutedPredictor(engine, added).predict_logits(x)

        return logits

    def keep(self, engine: Engine, X: np.ndarray, at: int) -> None:
        """A correction was kept (now ``engine``'s parameters): its domain joins the bank
        as the live one; the domain live until now keeps the weights and last-layer bias
        it ran (a domain flips alone made for the same drift goes: :meth:`fork`)."""
        self._add(engine, X, at, Held.of_engine(engine), self._superseded())
        self.forked = None

    def fork(self, engine: Engine, X: np.ndarray, at: int, held: Held) -> None:
        """A flip round was kept while the training domain was live (after a drift alarm,
        no correction kept): its weights (now ``engine``'s) become a domain of their own,
        its signature from the chunk ``X`` the round ran after, and the training domain
        keeps ``held``, the weights it ran before the round: flips fitted to a drift must
        not change what the samples routed to the training domain get."""
        self._add(engine, X, at, held, None)
        self.forked = self.live

    def _superseded(self) -> str | None:
        """The live domain if flips alone made it (a kept correction replaces it)."""
        return self.forked if self.forked == self.live else None

    def _add(self, engine: Engine, X: np.ndarray, at: int, held: Held, replace: str | None) -> None:
        assert self.bank is not None
        params = DomainParams.of_engine(engine, self.hidden)
        dom = self.bank.adapted(X, engine.predict_classes(X), params, at)
        self.bank = self.bank.add(dom, self.tally.last, held, replace)
        log.info("domain routing: %s added (%d domains)", dom.name, len(self.bank.domains))

    def returning(self, X: np.ndarray, share: float) -> tuple[Domain, float] | None:
        """The domain the bank holds, not the live one, that the stream window ``X``
        belongs to (:meth:`DomainBank.home`) with the share of its samples, or None."""
        bank = self.bank
        if bank is None or len(bank.domains) < 2:
            return None
        home = bank.home(sample_features(X), share)
        if home is None or bank.domains[home[0]].name == self.live:
            return None
        return bank.domains[home[0]], home[1]

    def returned(self, domain: Domain, engine: Engine) -> None:
        """The engine is about to run ``domain``'s correction and weights again; the
        domain live until now keeps the weights and last-layer bias ``engine`` runs."""
        assert self.bank is not None
        self.bank = self.bank.go_live(domain.name, Held.of_engine(engine))
        log.info("domain routing: back to %s", domain.name)

    def saved(self, bundle: Bundle) -> Bundle:
        """``bundle`` with the bank in its extras (what the agent saves)."""
        if self.bank is None:
            return bundle
        extras = {**without_bank(bundle).extras, **self.bank.to_extras(bundle)}
        return dataclasses.replace(bundle, extras=extras)

    def status(self) -> dict[str, Any]:
        """Whether routing is on, why, and the domains with their routed samples."""
        with self.tally.lock:
            samples = dict(self.tally.samples)
        return {
            "enabled": self.bank is not None,
            "reason": self.reason,
            "live": self.live,
            "domains": [] if self.bank is None else self.bank.status(samples),
        }
