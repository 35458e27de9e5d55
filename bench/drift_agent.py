"""The agent side of drift, measured: the drift signal's false alarms and delays, and
the calibration controller replaying drifted streams sample by sample.

1. Drift signal (:mod:`edge_agent.calibrate.drift_signal`), reference fitted on each
   bundled set's training split: alarms over a 20,000-sample stationary stream of its
   test split (random order), and the delay to the first alarm after each injected drift
   at sample 1,000.
2. Controller (:class:`CalibrationController`, the agent's defaults) on the bundled
   BasicMotions model: a 3,000-sample stream drawn from the even-indexed test windows,
   drift at 1,000, one label in 5; accuracy is scored on the odd-indexed test windows
   (never streamed, so never labelled) under the same drift, before the drift (clean),
   right after it, and at the end, for ``trigger = "drift"`` with and without the
   statistics rung and for the old round-per-chunk schedule (``trigger = "samples"``).

``python -m bench.drift_agent`` writes bench/results/drift_agent.{json,md}.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.calibrate.drift_reference import DriftReference
from edge_agent.calibrate.drift_signal import DriftSignal
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
KINDS = ["offset", "gain", "gain:0.3", "rotation", "noise", "dropout", "timewarp"]


def signal_rows() -> list[dict[str, Any]]:
    rows = []
    for name in ("basicmotions", "gunpoint", "digits"):
        ds = load_dataset(name)
        ref = DriftReference.fit(ds.X_train, ds.y_train, ds.num_classes)
        idx = np.random.default_rng(0).integers(0, len(ds.X_test), 20_000)
        sig = DriftSignal(ref)
        t0 = time.thread_time()
        sig.update(ds.X_test[idx])
        us = (time.thread_time() - t0) / len(idx) * 1e6
        row: dict[str, Any] = {
            "set": name,
            "stationary_alarms_per_20k": sig.alarms,
            "us_per_sample": round(us, 2),
        }
        for kind in KINDS:
            if kind == "rotation" and ds.input_shape[0] < 3:
                continue
            try:
                X = Drift.parse(f"{kind}@1000").apply_stream(ds.X_test[idx[:2000]])
            except (ValueError, IndexError):
                continue
            fired = DriftSignal(ref).update(X)
            after = [f for f in fired if f >= 1000]
            row[f"delay_{kind}"] = after[0] - 1000 if after else None
            row[f"false_before_{kind}"] = sum(f < 1000 for f in fired)
        rows.append(row)
    return rows


def controller_rows() -> list[dict[str, Any]]:
    bundle = load_bundle(ROOT / "edge_agent" / "defaults" / "basicmotions.eab")
    ds = load_dataset("basicmotions")
    stream_i, held_i = np.arange(0, len(ds.X_test), 2), np.arange(1, len(ds.X_test), 2)
    idx = np.random.default_rng(1).choice(stream_i, 3000)
    settings = {
        "default (drift, stats rung)": {},
        "drift, no stats rung": {"stats_rung": False},
        "round every chunk (old)": {"trigger": "samples", "stats_rung": False},
    }
    rows = []
    for kind in ("rotation", "gain:0.3", "gain:3", "offset", "none"):
        spec = f"{kind}@1000" if kind != "none" else None
        X = Drift.parse(spec).apply_stream(ds.X_test[idx]) if spec else ds.X_test[idx]
        Xh = Drift.parse(f"{kind}@0").apply_stream(ds.X_test[held_i]) if spec else ds.X_test[held_i]
        yh = ds.y_test[held_i]
        for label, kw in settings.items():
            ctl = CalibrationController(bundle, CalibrationConfig(**kw))
            eng = Engine(bundle)
            acc = {
                "clean_start": float((eng.predict(ds.X_test[held_i])[0] == yh).mean()),
                "drifted_start": float((eng.predict(Xh)[0] == yh).mean()),
            }
            t0 = time.thread_time()
            for i in range(len(X)):
                ctl.observe(X[i], int(ds.y_test[idx[i]]) if i % 5 == 0 else None, i)
                while ctl.due():
                    ctl.run(eng)
            cpu = time.thread_time() - t0
            live = ctl.predictor(eng)  # routed, as the agent predicts
            acc["drifted_end"] = float((live.predict_logits(Xh).argmax(1) == yh).mean())
            clean_logits = live.predict_logits(ds.X_test[held_i])
            acc["clean_end"] = float((clean_logits.argmax(1) == yh).mean())
            c = ctl.counts
            rows.append(
                {
                    "drift": kind,
                    "setting": label,
                    **acc,
                    "stats_kept": c["stats_rounds_kept"],
                    "stats_rolled_back": c["stats_rounds_rolled_back"],
                    "flip_kept": c["flip_rounds_kept"],
                    "flip_rolled_back": c["flip_rounds_rolled_back"],
                    "alarms": c["drift_alarms"],
                    "cpu_s": round(cpu, 2),
                }
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    t0 = time.time()
    sig = signal_rows()
    for r in sig:
        print(r, flush=True)
    ctl = controller_rows()
    res = {
        "signal": sig,
        "controller": ctl,
        "loadavg": os.getloadavg(),
        "wall_s": round(time.time() - t0, 1),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "drift_agent.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        "| drift | setting | clean start | drifted start | drifted end | clean end | "
        "stats kept/rb | flips kept/rb | alarms | CPU s |",
        "|" + "---|" * 10,
    ]
    for r in ctl:
        lines.append(
            f"| {r['drift']} | {r['setting']} | {r['clean_start']:.3f} | "
            f"{r['drifted_start']:.3f} | {r['drifted_end']:.3f} | {r['clean_end']:.3f} | "
            f"{r['stats_kept']}/{r['stats_rolled_back']} | "
            f"{r['flip_kept']}/{r['flip_rolled_back']} | {r['alarms']} | {r['cpu_s']} |"
        )
    lines += [
        "",
        "| set | alarms / 20k stationary | us/sample | "
        + " | ".join(f"delay {k}" for k in KINDS)
        + " |",
        "|" + "---|" * (3 + len(KINDS)),
    ]
    for r in sig:
        lines.append(
            f"| {r['set']} | {r['stationary_alarms_per_20k']} | {r['us_per_sample']} | "
            + " | ".join(str(r.get(f"delay_{k}", "-")) for k in KINDS)
            + " |"
        )
    lines.append(f"\nload average {res['loadavg']}, {res['wall_s']} s")
    (out / "drift_agent.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
