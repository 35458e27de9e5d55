"""CPU cost of offering stream samples to the calibration (the inference thread's share):
``CalibrationController.observe`` per sample, with the drift signal scoring each batch of
64 in one call (what the agent does) and with ``trigger = "samples"`` and no drift
signal, on the bundled BasicMotions model (6 x 100 samples), one label in 5, no rounds run
(jobs are discarded). Thread CPU time, interleaved, min and median of 7 repetitions.

``python -m bench.observe_cost`` writes bench/results/observe_cost.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.controller import CalibrationConfig, CalibrationController
from edge_agent.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def cost(ctl: CalibrationController, X: np.ndarray, y: np.ndarray) -> float:
    t0 = time.thread_time_ns()
    for s in range(0, len(X), 64):
        part = X[s : s + 64]
        ctl.prescore(part)
        for i in range(len(part)):
            n = s + i
            ctl.observe(part[i], int(y[n]) if n % 5 == 0 else None, n)
        while ctl.stream.get() is not None:  # measure the stream side only
            pass
    return (time.thread_time_ns() - t0) / len(X) / 1e3


def main() -> None:
    bundle = load_bundle(ROOT / "edge_agent" / "defaults" / "basicmotions.eab")
    ds = load_dataset("basicmotions")
    idx = np.random.default_rng(0).integers(0, len(ds.X_test), 5000)
    X, y = ds.X_test[idx], ds.y_test[idx]
    with_signal = CalibrationController(bundle, CalibrationConfig())
    plain = CalibrationController(bundle, CalibrationConfig(trigger="samples"))
    plain.stream.drift = None
    times: dict[str, list[float]] = {"drift signal": [], "no drift signal": []}
    for _ in range(7):
        times["drift signal"].append(cost(with_signal, X, y))
        times["no drift signal"].append(cost(plain, X, y))
    res = {
        k: {"min_us": round(min(v), 2), "median_us": round(float(np.median(v)), 2)}
        for k, v in times.items()
    }
    res["ratio_min"] = round(res["drift signal"]["min_us"] / res["no drift signal"]["min_us"], 2)
    out = {
        "per_sample": res,
        "loadavg": os.getloadavg(),
        "samples": len(X),
        "config": dataclasses.asdict(CalibrationConfig()),
    }
    print(json.dumps(out["per_sample"], indent=1), "load", out["loadavg"])
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "observe_cost.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
