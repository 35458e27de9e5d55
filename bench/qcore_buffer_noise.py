"""What the QCore buffer holds on the real-drift sets, against a random buffer: is its
difficulty signal label noise?

Replays the benchmark's 4-bit real-drift stream (as ``bench/real_drift.py``, every-chunk
flip path) with the QCore and the random buffer and reports, after the stream, the share
of each buffer's labelled stream samples that the FP model gets wrong (a new labelled
sample the FP model gets wrong starts at ``fp_wrong_count`` misses per width, 50: the
draw favours it), the same share over all the stream's labelled samples, the FP model's
and the deployed 4-bit model's accuracy on the train domain's clean held-out samples
(how predictable the labels are at all), and the held-out accuracy after each replay.

    python -m bench.qcore_buffer_noise [--sets seattle_weather,watch_side] [--seeds 0,1,2]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

LABEL_FRACTION = 0.2  # as bench/real_drift.py


def one(name: str, seed: int, cache: Path) -> dict[str, Any]:
    """Buffer composition after the benchmark's stream, QCore and random buffers."""
    from bench import real_drift_methods as m
    from bench.real_drift_data import load_split, stream_items
    from bench.real_drift_train import trained
    from edge_agent.calibrate.calibration_config import CalibrationConfig
    from edge_agent.calibrate.controller import CalibrationController
    from edge_agent.calibrate.qcore import SOURCE_STREAM, QCoreBuffer
    from edge_agent.engine.engine import Engine

    split = load_split(name, cache, seed)
    bundle, _, _ = trained(split, seed, cache)
    rng = np.random.default_rng([seed, zlib.crc32(f"real|real|{LABEL_FRACTION}".encode())])
    data = stream_items(split.X, split.y, split.stream, LABEL_FRACTION, rng)
    cfg = dataclasses.replace(CalibrationConfig(), **m.every_chunk())
    out: dict[str, Any] = {"set": name, "seed": seed}
    probe = CalibrationController(bundle, cfg)
    Xl, yl = data.labelled_set()
    out["stream_labelled_fp_wrong"] = float(np.mean(probe.fp_predict(Xl) != yl))
    Xc, yc = split.X[split.clean], split.y[split.clean]
    out["clean_fp_accuracy"] = float(np.mean(probe.fp_predict(Xc) == yc))
    out["clean_q4_accuracy"] = m.accuracy(Engine(bundle, bits=4), Xc, yc)
    for buf in ("qcore", "random"):
        ctl = CalibrationController(bundle, cfg)
        if buf == "random":
            ctl.buffer = QCoreBuffer.from_bundle(
                bundle, dataclasses.replace(cfg.buffer_config(), random=True), seed=seed
            )
        engine = Engine(bundle, bits=4)
        m._stream(ctl, engine, data, 0)
        b = ctl.buffer
        lab = (b.source == SOURCE_STREAM) & b.labelled
        wrong = ctl.fp_predict(b.X[lab]) != b.y[lab] if lab.any() else np.zeros(0, bool)
        out[buf] = {
            "size": len(b),
            "stream_labelled": int(lab.sum()),
            "stream_labelled_fp_wrong": float(wrong.mean()) if len(wrong) else None,
            "mean_difficulty": float(b.misses.mean()) if len(b) else 0.0,
            "held_out_after": m.accuracy(
                ctl.predictor(engine), split.X[split.held], split.y[split.held]
            ),
        }
    return out


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", default="seattle_weather,watch_side")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    args = ap.parse_args()
    load0 = os.getloadavg()
    rows = [one(n, int(s), args.cache) for n in args.sets.split(",") for s in args.seeds.split(",")]
    print(json.dumps({"rows": rows, "loadavg": [load0, os.getloadavg()]}, indent=1))


if __name__ == "__main__":
    main()
