"""Which round costs the clean data: a real-drift bench case replayed job by job.

The default path of ``bench/real_drift.py`` (or one of its variants) replays one case's
stream through the real controller, as :func:`bench.real_drift_methods.replay` does;
after every round it scores the clean held-out samples (never streamed) and the drifted
held-out samples through the agent's routed predictor, and records the round's rung,
verdict, reason, the live domain, the bank's domains and where the clean samples route.
A round that drops the clean accuracy shows as one line. With ``--return`` the stream
goes on as the bench's return part does (more of the drift, then clean train-domain
samples; the clean score is then on the samples that part never streams).

    python -m bench.forget_diagnose --set watch_subject --seed 0 --bits 4 --kind noise
    python -m bench.forget_diagnose --set watch_subject --kind rotation --return
    python -m bench.forget_diagnose --set seattle_weather --seed 0 --bits 4 --kind real
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from bench import real_drift_methods as m
from bench.real_drift import KINDS, LABEL_FRACTION, case_rng
from bench.real_drift_data import RETURN_BACK, RETURN_DRIFT, load_split, stream_items
from bench.real_drift_train import trained
from edge_agent.calibrate.calibration_config import CalibrationConfig
from edge_agent.calibrate.controller import CalibrationController
from edge_agent.calibrate.routed import RoutedPredictor
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine


def _case(name: str, seed: int, kind: str, cache: Path, ret: bool) -> tuple[Any, ...]:
    """(bundle split, streams, clean X, clean y, held X, held y) of one bench case; the
    streams: the replay, then with ``ret`` the bench's return part (its two streams)."""
    split = load_split(name, cache, seed)
    X, y = split.X, split.y
    r = case_rng(seed, "return", "real" if kind == "real" else kind, LABEL_FRACTION)
    if kind == "real":
        rng = case_rng(seed, "real", "real", LABEL_FRACTION)
        data = [stream_items(X, y, split.stream, LABEL_FRACTION, rng)]
        if ret:
            data.append(stream_items(X, y, split.stream, LABEL_FRACTION, r, RETURN_DRIFT))
            data.append(stream_items(X, y, split.clean_a, LABEL_FRACTION, r, RETURN_BACK))
        clean = split.clean_b if ret else split.clean
        return split, data, X[clean], y[clean], X[split.held], y[split.held]
    drift = Drift.parse(f"{KINDS[kind]}@0")
    rng = case_rng(seed, "injected", kind, LABEL_FRACTION)
    data = [stream_items(X, y, split.clean_a, LABEL_FRACTION, rng, transform=drift.transform(seed))]
    if ret:
        tf = drift.transform(seed + 2)
        data.append(stream_items(X, y, split.clean_a, LABEL_FRACTION, r, RETURN_DRIFT, tf))
        data.append(stream_items(X, y, split.clean_a, LABEL_FRACTION, r, RETURN_BACK))
    Xc, yc = X[split.clean_b], y[split.clean_b]
    return split, data, Xc, yc, drift.apply_stream(Xc, seed=seed + 1), yc


def _routes(p: Any, X: np.ndarray) -> dict[str, int]:
    if not isinstance(p, RoutedPredictor):
        return {"(no routing)": len(X)}
    idx = p.route(p.prepare(X))
    return {d.name: int(np.sum(idx == j)) for j, d in enumerate(p.bank.domains)}


def diagnose(
    name: str,
    seed: int,
    bits: int,
    kind: str,
    cache: Path,
    overrides: dict[str, Any],
    ret: bool = False,
) -> dict[str, Any]:
    """Every round of one replay (and with ``ret`` its return part) with the clean and
    held-out accuracy after it."""
    split, streams, Xc, yc, Xh, yh = _case(name, seed, kind, cache, ret)
    bundle, _, _ = trained(split, seed, cache)
    cfg = dataclasses.replace(CalibrationConfig(), **overrides)
    ctl = CalibrationController(bundle, cfg)
    engine = Engine(bundle, bits=bits)

    def acc(X: np.ndarray, y: np.ndarray) -> float:
        return round(m.accuracy(ctl.predictor(engine), X, y), 4)

    rows: list[dict[str, Any]] = []
    start = {"clean": acc(Xc, yc), "held": acc(Xh, yh)}
    first = 0
    for part, data in enumerate(streams):
        for at, res in m.rounds_of(ctl, engine, data, first):
            p = ctl.predictor(engine)
            rows.append(
                {
                    "at": at,
                    "part": part,
                    "rung": res.rung,
                    "kept": res.version is not None,
                    "reason": res.decision.reason,
                    "flips": res.flips,
                    "live": ctl.routing.live if ctl.routing else "-",
                    "clean": acc(Xc, yc),
                    "held": acc(Xh, yh),
                    "clean_routes": _routes(p, Xc),
                }
            )
        first += len(data.y)
    return {
        "set": name,
        "seed": seed,
        "bits": bits,
        "kind": kind,
        "overrides": overrides,
        "start": start,
        "rounds": rows,
        "counts": dict(ctl.counts),
    }


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--set", default="watch_subject")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--kind", default="noise", help="real or an injected kind")
    ap.add_argument("--return", dest="ret", action="store_true", help="the return part too")
    ap.add_argument("--set-config", default="{}", help="CalibrationConfig overrides (JSON)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--out", type=Path, help="write the rounds as JSON here")
    args = ap.parse_args()
    res = diagnose(
        args.set,
        args.seed,
        args.bits,
        args.kind,
        args.cache,
        json.loads(args.set_config),
        args.ret,
    )
    print(f"start: clean {res['start']['clean']:.3f} held {res['start']['held']:.3f}")
    for r in res["rounds"]:
        print(
            f"{r['part']} @{r['at']:4d} {r['rung']:5s} {'KEPT' if r['kept'] else 'back'} "
            f"live {r['live']:4s} clean {r['clean']:.3f} held {r['held']:.3f} "
            f"flips {r['flips']:3d} routes {r['clean_routes']} ({r['reason']})"
        )
    res["loadavg"] = os.getloadavg()
    print("load average", res["loadavg"])
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
