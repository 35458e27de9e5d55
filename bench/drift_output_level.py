"""Where the output drift score sits (issue 17): the deployed model's predictive entropy on
its training data, on unseen train-domain samples and on the drifted stream, for every
real-drift set and seed of ``bench/real_drift.py`` (its cached bundles and cuts), and
whether the drift signal fires on each stream replayed as the benchmark replays it.

The entropy is standardized with the level the bundle records (training data): ``z`` is
how far a part's mean entropy sits above it, in training standard deviations. The gap of
the unseen train-domain samples (``clean_a``) is what ``drift_output_allowance`` must
stay above for the no-drift control to stay quiet.

    python -m bench.drift_output_level   # writes bench/results/drift_output_level.json
"""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path

import numpy as np

from bench.real_drift_data import REAL_SETS, load_split, stream_items
from bench.real_drift_train import trained
from edge_agent.calibrate.calibration_config import CalibrationConfig
from edge_agent.calibrate.controller import CalibrationController

CACHE = Path.home() / ".cache/edge-agent-bench"


def _replay_alarms(ctl: CalibrationController, X: np.ndarray) -> tuple[list[int], str | None]:
    """Alarms of the controller's drift signal on ``X`` (scored as the agent scores)."""
    sig = ctl.drift
    assert sig is not None
    return sig.update(X), sig.fired_by


def main() -> None:
    """Measure every real-drift set and seed; print and write the JSON."""
    t0, load0 = time.time(), os.getloadavg()
    rows = []
    for name in REAL_SETS:
        for seed in (0, 1, 2):
            split = load_split(name, CACHE, seed)
            bundle, _, _ = trained(split, seed, CACHE)
            row: dict[str, object] = {"set": name, "seed": seed}
            for part, ids, kind in (
                ("clean_a", split.clean_a, "no_drift"),
                ("stream", split.stream, "real"),
            ):
                if len(ids) == 0:
                    continue
                ctl = CalibrationController(bundle, CalibrationConfig())
                sig = ctl.drift
                assert sig is not None and sig.output is not None
                lo, sd = sig.output.level
                tag = f"{kind}|{'none' if kind == 'no_drift' else 'real'}|0.2"
                rng = np.random.default_rng([seed, zlib.crc32(tag.encode())])
                data = stream_items(split.X, split.y, ids, 0.2, rng)
                scores = sig.score(data.X)
                fired, by = _replay_alarms(ctl, data.X)
                row[part] = {
                    "output_z": round(float((scores[:, 1].mean() - lo) / sd), 3),
                    "input_z": round(
                        float(
                            (scores[:, 0].mean() - sig.reference.level[0]) / sig.reference.level[1]
                        ),
                        3,
                    ),
                    "first_alarm": fired[0] if fired else None,
                    "fired_by": by,
                }
            row["train_level"] = [round(v, 4) for v in sig.output.level]
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "rows": rows,
        "output_allowance": CalibrationConfig().drift_output_allowance,
        "wall_s": round(time.time() - t0, 1),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
    }
    path = Path("bench/results/drift_output_level.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
