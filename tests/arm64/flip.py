"""One bit-flip recalibration round on the bundled model (run on the emulated arm64 board).

Loads the installed default bundle, drifts the bundled BasicMotions data (gain, the
labels kept), and runs one :class:`BitFlipCalibrator` round on the engine: the bundle's
flipping network proposes the flips when the bundle has one, else the greedy proposer.
Checks that the round ends in a gate decision and leaves a consistent engine: accepted
means a new model version whose weight codes differ from the bundle's in exactly the
reported number of places, within the per-iteration budget; rolled back means the
engine is untouched. ``--compare FILE`` then compares the round with one computed on
another machine (written by ``--write FILE``): the decision, the flips and the new
weights must be identical, since the round works on integer engine results.

Usage: python -P flip.py [--write FILE | --compare FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

DRIFT = "gain:2.0@0"
SEED = 0


def run_round() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One round; its summary and the engine's weight codes afterwards."""
    import edge_agent
    from edge_agent.bundle_io import load_bundle
    from edge_agent.calibrate.flip_net import FlipNet
    from edge_agent.calibrate.flip_round import (
        BitFlipCalibrator,
        FlipConfig,
        greedy_proposer,
        network_proposer,
    )
    from edge_agent.data import load_dataset
    from edge_agent.data.drift import Drift
    from edge_agent.engine.engine import Engine
    from kernels.codegen.isa import ACTIVE_ISA

    defaults = Path(edge_agent.__file__).resolve().parent / "defaults"
    bundle = load_bundle(defaults / "basicmotions.eab")
    cfg = FlipConfig()
    net = FlipNet.from_extras(bundle.extras)
    proposer = network_proposer(net, cfg.threshold) if net is not None else greedy_proposer()
    ds = load_dataset("basicmotions")
    X = Drift.parse(DRIFT).apply_stream(np.concatenate([ds.X_train, ds.X_test]), SEED)
    y = np.concatenate([ds.y_train, ds.y_test])

    engine = Engine(bundle)
    n_layers = len(bundle.quant[engine.bits].layers)
    before = [engine.layer_codes(i) for i in range(n_layers)]
    version_before = engine.model_version
    result = BitFlipCalibrator(bundle, proposer, cfg).run_round(engine, X, y, seed=SEED)
    after = [engine.layer_codes(i) for i in range(n_layers)]
    changed = int(sum(int((a != b).sum()) for a, b in zip(after, before, strict=True)))

    accepted = bool(result.decision.accepted)
    problems = []
    if accepted:
        if result.version is None or engine.model_version != result.version:
            problems.append("accepted, but the engine does not run the new version")
        if engine.model_version == version_before:
            problems.append("accepted, but the model version did not change")
        budget = max(1, round(cfg.budget_fraction * sum(q.size for q in before)))
        if not 0 < changed == result.flips <= budget * result.iterations:
            problems.append(
                f"accepted with {result.flips} flips reported, {changed} weights "
                f"changed (budget {budget} x {result.iterations} iterations)"
            )
    elif changed or engine.model_version != version_before or result.flips:
        problems.append("rolled back, but the engine's weights or version changed")
    summary = {
        "machine": platform.machine(),
        "isa": ACTIVE_ISA,
        "proposer": "network" if net is not None else "greedy",
        "accepted": accepted,
        "reason": str(getattr(result.decision, "reason", "")),
        "flips": result.flips,
        "iterations": result.iterations,
        "loss_before": float(result.loss_before),
        "loss_after": float(result.loss_after),
        "version": result.version,
        "problems": problems,
        "cpu_seconds": round(result.cpu_seconds, 2),
    }
    return summary, {f"codes_{i}": q for i, q in enumerate(after)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", type=Path, help="save the round's result to this .npz")
    g.add_argument("--compare", type=Path, help="compare with a result saved by --write")
    args = p.parse_args(argv)
    summary, codes = run_round()
    print("flip round: " + json.dumps(summary))
    if summary["problems"]:
        print("FAIL: " + "; ".join(summary["problems"]), file=sys.stderr)
        return 1
    if args.write:
        np.savez_compressed(
            args.write, summary_json=np.frombuffer(json.dumps(summary).encode(), np.uint8), **codes
        )
    if args.compare:
        with np.load(args.compare, allow_pickle=False) as z:
            other = json.loads(bytes(z["summary_json"]).decode())
            other_codes = {k: z[k] for k in z.files if k != "summary_json"}
        keys = ("proposer", "accepted", "flips", "iterations", "version")
        diff = [
            f"{k}: {summary[k]!r} here, {other[k]!r} on {other['machine']}"
            for k in keys
            if summary[k] != other[k]
        ]
        diff += [
            f"{k} differs"
            for k in sorted(set(codes) | set(other_codes))
            if k not in codes
            or k not in other_codes
            or not np.array_equal(codes[k], other_codes[k])
        ]
        if diff:
            print(
                f"FAIL: the round differs from the one on {other['machine']}: " + "; ".join(diff),
                file=sys.stderr,
            )
            return 1
        print(f"OK: the round is identical to the one on {other['machine']} ({other['isa']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
