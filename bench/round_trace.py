"""One ``bench/real_drift.py`` case replayed round by round: which round costs accuracy?

The agent's default path (the real controller, sample by sample, as the benchmark drives
it) on one (set, drift) case at seed 0: after every round its rung, verdict and reason,
and the accuracy on the drifted held-out samples (never streamed) and on the clean ones,
scored as the agent predicts (routed); ``--gate`` adds the gate's log lines (held-out,
anchor, recent, unseen scores) before each verdict.

    python -m bench.round_trace japanese_vowels noise --gate
    python -m bench.round_trace watch_side real --config '{"label_every": 0}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import zlib
from pathlib import Path

import numpy as np

from bench.real_drift import KINDS, LABEL_FRACTION
from bench.real_drift_data import StreamData, load_split, stream_items
from bench.real_drift_methods import accuracy, rounds_of
from bench.real_drift_train import trained
from edge_agent.bundle import Bundle
from edge_agent.calibrate.calibration_config import CalibrationConfig
from edge_agent.calibrate.controller import CalibrationController
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine

Scored = tuple[np.ndarray, np.ndarray]


def case(name: str, drift: str, cache: Path) -> tuple[Bundle, StreamData, Scored, Scored]:
    """(bundle, stream, drifted held-out, clean held-out) of one case as the benchmark
    cuts it at seed 0 (its label draws too)."""
    split = load_split(name, cache, 0)
    bundle, _, _ = trained(split, 0, cache)
    X, y = split.X, split.y
    rng = np.random.default_rng(
        [
            0,
            zlib.crc32(
                f"{'real' if drift == 'real' else 'injected'}|{drift}|{LABEL_FRACTION}".encode()
            ),
        ]
    )
    if drift == "real":
        data = stream_items(X, y, split.stream, LABEL_FRACTION, rng)
        return bundle, data, (X[split.held], y[split.held]), (X[split.clean], y[split.clean])
    d = Drift.parse(f"{KINDS[drift]}@0")
    data = stream_items(X, y, split.clean_a, LABEL_FRACTION, rng, transform=d.transform(0))
    held = (d.apply_stream(X[split.clean_b], seed=1), y[split.clean_b])
    return bundle, data, held, (X[split.clean_b], y[split.clean_b])


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("set")
    ap.add_argument("drift", help="real or an injected kind (offset, ..., timewarp)")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--config", default="{}", help="CalibrationConfig overrides, JSON")
    ap.add_argument("--gate", action="store_true", help="print the gate's log lines")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="    %(message)s")
    if args.gate:
        logging.getLogger("edge_agent.calibrate.gate").setLevel(logging.INFO)
    bundle, data, held, clean = case(args.set, args.drift, args.cache)
    cfg = dataclasses.replace(CalibrationConfig(), **json.loads(args.config))
    ctl = CalibrationController(bundle, cfg)
    engine = Engine(bundle, bits=args.bits)

    def scores() -> str:
        p = ctl.predictor(engine)
        return f"held-out {accuracy(p, *held):.3f} clean {accuracy(p, *clean):.3f}"

    print(f"start: {scores()}")
    for i, r in rounds_of(ctl, engine, data):
        kept = "kept  " if r.version is not None else "refused"
        print(f"{i:4d} {r.rung:5s} {kept} {r.decision.reason[:64]:64s} {scores()}")


if __name__ == "__main__":
    main()
