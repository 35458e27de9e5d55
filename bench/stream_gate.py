"""Continual calibration on a replayed stream, with and without the recent-labels check.

Replays a data set's test split as ``edge-agent demo`` does (shuffled passes, a drift
from sample N on, every K-th sample labelled) through the agent's own calibration
controller (QCore buffer update and one gated flip round per chunk), in one process
without sockets, once per ``--recent`` value (``calibration.recent_labelled``; 0: the
check is off), and prints the integer model's accuracy on the stream before the drift,
over the 500 samples after it and over the last 1000, and the rounds kept. The
prediction of every sample is made before the sample is offered to the controller, as in
the agent. ``gain:1`` is a drift that changes nothing (a stream without drift).

    python -m bench.stream_gate --drift rotation@1000
    python -m bench.stream_gate --bundle model.eab --data PLAID_TRAIN.ts --drift gain:1@1000
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.cli.demo import DEFAULT_BUNDLE
from edge_agent.client import stream
from edge_agent.data import load_dataset
from edge_agent.data.datasets import trained_data_spec
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine


def replay_through_controller(
    bundle_path: str,
    data: str | None,
    drift: Drift,
    recent: int,
    count: int,
    labels_every: int,
    seed: int,
) -> dict[str, float]:
    """Accuracy on the stream in three windows and the rounds kept, for one setting."""
    bundle = load_bundle(bundle_path)
    ds = load_dataset(data or trained_data_spec(bundle.meta))
    # a round at every chunk, as when this benchmark was written (the agent now waits
    # for its drift signal: trigger = "drift")
    cfg = CalibrationConfig(recent_labelled=recent, trigger="samples", stats_rung=False)
    controller = CalibrationController(bundle, cfg)
    engine = Engine(bundle)
    hits, kept, rounds = [], 0, 0
    items = stream(
        ds.X_test, ds.y_test, count, seed, drift.transform(seed), drift.start, labels_every
    )
    for item in items:
        x = engine.prepare(item.x[None])
        hits.append(engine.predict(x, prepared=True)[0][0] == item.y)
        controller.observe(x[0], item.y if item.labelled else None, item.index)
        while controller.due():
            result = controller.run(engine)
            if result is not None:
                rounds += 1
                kept += result.decision.accepted
    h = np.array(hits, dtype=float)
    return {
        "recent_labelled": recent,
        "before_drift": float(h[: drift.start].mean()),
        "first_500_after": float(h[drift.start : drift.start + 500].mean()),
        "last_1000": float(h[-1000:].mean()),
        "rounds": rounds,
        "kept": kept,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    p.add_argument("--data", help="default: the data set the bundle was trained on")
    p.add_argument("--drift", default="rotation@1000")
    p.add_argument("--recent", default="0,64", help="recent_labelled values to compare")
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--labels-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    drift = Drift.parse(args.drift)
    rows = [
        replay_through_controller(
            args.bundle, args.data, drift, int(r), args.count, args.labels_every, args.seed
        )
        for r in args.recent.split(",")
    ]
    if args.json:
        print(json.dumps({"bundle": args.bundle, "drift": args.drift, "rows": rows}))
        return
    print(f"{args.bundle}, drift {args.drift}, every {args.labels_every}th sample labelled")
    print("| recent_labelled | before drift | 500 after | last 1000 | rounds kept |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['recent_labelled']} | {r['before_drift']:.3f} | {r['first_500_after']:.3f}"
            f" | {r['last_1000']:.3f} | {r['kept']}/{r['rounds']} |"
        )


if __name__ == "__main__":
    main()
