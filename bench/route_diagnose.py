"""Where the real-drift bench's forgetting comes from: how the domain router sends clean
(train-domain, never streamed) and drifted held-out samples after a real-drift replay.

For each (set, seed, bits): the agent's statistics rung alone (no flip rounds, so the
model's weights are the bundle's) replays the set's real-drift stream as
``bench/real_drift.py`` does; then every clean and held-out sample is scored on every
domain of the bank, and the accuracy of each routing rule is computed from those logits:
``router`` (the bank's rule: the highest likelihood), ``typical_base`` (a sample as
likely under the training domain as its own anchors typically are stays there, the
router's rule for the others), ``ratio<d>`` (an adapted domain only where its log
likelihood is more than d above the training domain's), ``base`` and ``live``
(everything to one domain).

    python -m bench.route_diagnose --sets watch_side,seattle_weather --bits 2,4,8
    python -m bench.route_diagnose --sets gunpoint --seeds 0 --bits 4 --kinds noise,timewarp
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench import real_drift_methods as m
from bench.real_drift import KINDS, LABEL_FRACTION, case_rng
from bench.real_drift_data import load_split, stream_items
from bench.real_drift_train import trained
from edge_agent.calibrate.domains import DomainBank
from edge_agent.calibrate.drift_reference import sample_features
from edge_agent.calibrate.routed import RoutedPredictor
from edge_agent.data.drift import Drift


def rules(bank: DomainBank, X: np.ndarray) -> dict[str, np.ndarray]:
    """Domain index per sample under each routing rule."""
    f = sample_features(X)
    live = next(j for j, d in enumerate(bank.domains) if d.name == bank.live)
    scores = np.stack([d.signature.score(f) for d in bank.domains], axis=1)
    best = 1 + scores[:, 1:].argmax(axis=1)
    margin = scores[np.arange(len(f)), best] - scores[:, 0]
    ratio = {f"ratio{d:g}": np.where(margin > d, best, 0) for d in (2.0, 5.0, 10.0)}
    return {
        "router": bank.route(f),
        "typical_base": np.where(scores[:, 0] >= bank.base.typical, 0, bank.route(f)),
        **ratio,
        "base": np.zeros(len(X), np.int64),
        "live": np.full(len(X), live, np.int64),
    }


def scored(p: RoutedPredictor, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy and domain shares of every rule on ``(X, y)``."""
    bank, eng = p.bank, p.engine
    live = eng.state()
    right = np.stack(
        [
            eng.predict_logits_with(
                d.params.variant(eng, live, own_weights=d.name != bank.live), X
            ).argmax(axis=1)
            == y
            for d in bank.domains
        ]
    )
    out = {}
    for name, idx in rules(bank, X).items():
        out[name] = {
            "accuracy": float(right[idx, np.arange(len(y))].mean()),
            "to_base": float(np.mean(idx == 0)),
        }
    return out


def diagnose(name: str, seed: int, bits: int, cache: Path, kind: str) -> dict[str, Any]:
    """One replay of the statistics rung alone and every rule's accuracy after it;
    ``kind``: "real", or an injected kind on the clean part (as the bench cuts it)."""
    split = load_split(name, cache, seed)
    bundle, _, _ = trained(split, seed, cache)
    X, y = split.X, split.y
    if kind == "real":
        rng = case_rng(seed, "real", "real", LABEL_FRACTION)
        data = stream_items(X, y, split.stream, LABEL_FRACTION, rng)
        clean, (Xh, yh) = split.clean, (X[split.held], y[split.held])
    else:
        drift = Drift.parse(f"{KINDS[kind]}@0")
        rng = case_rng(seed, "injected", kind, LABEL_FRACTION)
        tf = drift.transform(seed)
        data = stream_items(X, y, split.clean_a, LABEL_FRACTION, rng, transform=tf)
        clean = split.clean_b
        Xh, yh = drift.apply_stream(X[clean], seed=seed + 1), y[clean]
    stats, _ = m.stats_rung()
    assert stats is not None and "alone" in stats
    out = m.replay(bundle, bits, data, stats["alone"], seed=seed)
    res: dict[str, Any] = {"set": name, "seed": seed, "bits": bits, "kind": kind}
    res["kept"] = out.kept
    if not isinstance(out.engine, RoutedPredictor) or len(out.engine.bank.domains) < 2:
        return {**res, "note": "no adapted domain"}
    res["domains"] = [d.name for d in out.engine.bank.domains]
    res["clean"] = scored(out.engine, X[clean], y[clean])
    res["held"] = scored(out.engine, Xh, yh)
    return res


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", default="watch_side,seattle_weather")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bits", default="2,4,8")
    ap.add_argument("--kinds", default="real", help="real and/or injected kinds")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--out", type=Path, default=Path("bench/results/route_diagnose.json"))
    args = ap.parse_args()
    rows = [
        diagnose(n, int(s), int(b), args.cache, k)
        for k in args.kinds.split(",")
        for n in args.sets.split(",")
        for s in args.seeds.split(",")
        for b in args.bits.split(",")
    ]
    for r in rows:
        if "clean" in r:
            c, h = r["clean"], r["held"]
            print(
                f"{r['set']} {r['kind']} s{r['seed']} {r['bits']}b "
                + " | ".join(
                    f"{k}: clean {c[k]['accuracy']:.3f} ({c[k]['to_base']:.0%} base) "
                    f"held {h[k]['accuracy']:.3f} ({h[k]['to_base']:.0%} base)"
                    for k in (
                        "router",
                        "typical_base",
                        "ratio2",
                        "ratio5",
                        "ratio10",
                        "base",
                        "live",
                    )
                )
            )
        else:
            print(r)
    result = {"rows": rows, "loadavg": os.getloadavg()}
    args.out.write_text(json.dumps(result, indent=1))
    print("load average", os.getloadavg())


if __name__ == "__main__":
    main()
