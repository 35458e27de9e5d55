"""What domain routing costs at inference (issue 17, ``docs/method.md`` section 5).

The shipped BasicMotions bundle (with its training statistics recorded) gets a bank of the
training domain and three adapted domains (the statistics rung on offset, gain and
attenuation drifts of the training samples); a batch mixing the four domains is predicted
by the engine alone and by the routed predictor, interleaved, thread CPU time per sample;
also the routing alone (features and likelihoods) and the memory one domain adds.

    python -m bench.route_cost            # writes bench/results/route_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate import stats_rung as sr
from edge_agent.calibrate.domains import DomainBank, DomainParams, base_domain
from edge_agent.calibrate.drift_reference import DriftReference
from edge_agent.calibrate.routed import RoutedPredictor
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
DRIFTS = ("offset:1.5@0", "gain:3.0@0", "gain:0.3@0")


def _bank(bits: int) -> tuple[Engine, DomainBank, np.ndarray]:
    """The engine, a four-domain bank and a batch pool mixing the four domains."""
    ds = load_dataset("basicmotions")
    bundle = sr.with_statistics(
        load_bundle(ROOT / "edge_agent/defaults/basicmotions.eab"), ds.X_train, ds.y_train
    )
    stats, ref = sr.statistics_of(bundle)[0], DriftReference.from_extras(bundle.extras)
    assert stats is not None and ref is not None
    hidden = sr.hidden_layers(bundle)
    bank = DomainBank((base_domain(bundle, hidden, ref),), capacity=len(DRIFTS))
    pool = [ds.X_test]
    for k, drift in enumerate(DRIFTS):
        scratch = Engine(bundle, bits=bits, scratch=True)
        window = Drift.parse(drift).apply_stream(ds.X_train)
        sr.propose(scratch, bundle, stats, window)
        params = DomainParams.of_engine(scratch, hidden)
        bank = bank.add(bank.adapted(window, scratch.predict_classes(window), params, k))
        pool.append(Drift.parse(drift).apply_stream(ds.X_test))
    return Engine(bundle, bits=bits), bank, np.ascontiguousarray(np.concatenate(pool), np.float32)


def _cpu_per_sample(fn: object, X: np.ndarray, batch: int, reps: int) -> float:
    """Thread CPU seconds per sample of ``fn`` over ``X`` in batches of ``batch``."""
    t0 = time.thread_time_ns()
    for _ in range(reps):
        for s in range(0, len(X), batch):
            fn(X[s : s + batch])  # type: ignore[operator]
    return (time.thread_time_ns() - t0) / 1e9 / (reps * len(X))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "bench/results/route_cost.json"))
    a = ap.parse_args()
    engine, bank, X = _bank(a.bits)
    routed = RoutedPredictor(engine, bank)
    routed.predict_logits(X)  # builds each domain's model state once (cached)
    load0 = os.getloadavg()
    res: dict[str, dict[str, list[float]]] = {}
    for batch in (1, 64):
        runs: dict[str, list[float]] = {"engine": [], "routed": [], "route_only": []}
        reps = 2 if batch == 1 else 20
        for _ in range(a.repeats):  # interleaved
            runs["engine"].append(_cpu_per_sample(engine.predict_logits, X, batch, reps))
            runs["routed"].append(_cpu_per_sample(routed.predict_logits, X, batch, reps))
            runs["route_only"].append(_cpu_per_sample(routed.route, X, batch, reps))
        res[f"batch_{batch}"] = runs
    state = routed._state(bank.domains[1], engine.state())
    extra = sum(a.nbytes for a in (state.weights.bias, state.weights.m0, state.weights.shift))
    extra += state.model.mean.nbytes + state.model.std.nbytes
    out = {
        "bits": a.bits,
        "domains": len(bank.domains),
        "samples": len(X),
        "load_average": [load0, os.getloadavg()],
        "bytes_per_domain_state": int(extra),
        "panel_bytes_shared": int(engine.weight_bytes()),
    }
    for key, runs in res.items():
        summary = {
            name: {"min_us": min(v) * 1e6, "median_us": float(np.median(v)) * 1e6}
            for name, v in runs.items()
        }
        ratios = [r / e for r, e in zip(runs["routed"], runs["engine"], strict=True)]
        summary["ratio_routed_over_engine"] = {
            "min": min(ratios),
            "median": float(np.median(ratios)),
        }
        out[key] = summary
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
