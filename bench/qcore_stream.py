"""Issue 17 item 5: what the QCore buffer holds after drifted stream samples reach it.

The bundled BasicMotions model's buffer (its training QCore) takes drifted test windows
(rotation, gain x0.3, offset), 32 at a time, one label in 5, as the agent feeds it
(``CalibrationController`` defaults: deployed bit-width and its neighbours, FP
pseudo-labels for unlabelled ones); printed after every update: how many old samples
gained a miss on the stream (correct -> wrong transitions: the only on-stream miss
updates), how many new samples came in wrong, the stream share of the buffer and the
mean difficulty of its bundle vs its stream samples, for the difficulty-weighted draw and
for a uniform draw (``BufferConfig(random=True)``). After update 3 the deployed model's
weights change (``QCORE_STREAM_SHARE``, default 2%, of them moved one step at random,
seeded: what a kept flip round does), so update 4 shows what transitions a model change
brings.

``python -m bench.qcore_stream`` writes bench/results/qcore_stream.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle_io import load_bundle
from edge_agent.calibrate.controller import CalibrationConfig
from edge_agent.calibrate.qcore import SOURCE_STREAM, BufferConfig, QCoreBuffer
from edge_agent.calibrate.qcore_miss import neighbour_bits
from edge_agent.data import load_dataset
from edge_agent.data.drift import Drift
from edge_agent.engine.engine import Engine
from edge_agent.engine.fp_model import fp_predict_fn

ROOT = Path(__file__).resolve().parents[1]
SHARE = float(os.environ.get("QCORE_STREAM_SHARE", "0.02"))  # weights moved at update 4


def run(kind: str, random: bool) -> list[dict[str, Any]]:
    bundle = load_bundle(ROOT / "edge_agent" / "defaults" / "basicmotions.eab")
    ds = load_dataset("basicmotions")
    cfg = CalibrationConfig()
    buf = QCoreBuffer.from_bundle(
        bundle, BufferConfig(cfg.buffer_samples, cfg.buffer_bytes, random=random)
    )
    eng = Engine(bundle)
    others = {
        b: Engine(bundle, bits=b, scratch=True)
        for b in neighbour_bits(eng.available_bits, eng.bits, 1)
        if b != eng.bits
    }
    predict = {
        eng.bits: lambda a: eng.predict(a)[0],
        **{b: (lambda a, e=e: e.predict(a)[0]) for b, e in others.items()},
    }
    fp = fp_predict_fn(bundle)
    idx = np.random.default_rng(0).integers(0, len(ds.X_test), 32 * 8)
    X = Drift.parse(f"{kind}@0").apply_stream(ds.X_test[idx])
    y = ds.y_test[idx]
    rows = []
    for u in range(8):
        if u == 4:  # a model change, as a kept round makes one
            rng = np.random.default_rng(1)
            moved = {}
            for i in range(len(bundle.quant[eng.bits].layers)):
                q = eng.layer_codes(i).astype(np.int16)
                step = rng.choice([-1, 1], q.shape) * (rng.random(q.shape) < SHARE)
                lo, hi = -(1 << (eng.bits - 1)), (1 << (eng.bits - 1)) - 1
                moved[i] = np.clip(q + step, lo, hi).astype(np.int8)
            eng.swap_weights(moved)
        s = slice(32 * u, 32 * (u + 1))
        lab = np.arange(32) % 5 == 0
        r = buf.update(
            X[s], np.where(lab, y[s], -1), lab, predict, fp, seqs=np.arange(32 * u, 32 * (u + 1))
        )
        stream = buf.source == SOURCE_STREAM
        rows.append(
            {
                "update": u,
                "old_sample_transitions": r.events,
                "new_wrong": r.new_misses,
                "kept_new": r.kept_new,
                "stream_share": round(float(stream.mean()), 3),
                "difficulty_bundle": round(float(buf.misses[~stream].mean()), 2)
                if (~stream).any()
                else None,
                "difficulty_stream": round(float(buf.misses[stream].mean()), 2)
                if stream.any()
                else None,
            }
        )
    return rows


def main() -> None:
    res: dict[str, Any] = {"loadavg": os.getloadavg()}
    for kind in ("rotation", "gain:0.3", "offset"):
        for random in (False, True):
            key = f"{kind} {'uniform' if random else 'difficulty'}"
            res[key] = run(kind, random)
            last = res[key][-1]
            print(
                key,
                "transitions per update",
                [r["old_sample_transitions"] for r in res[key]],
                "last",
                last,
            )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "qcore_stream.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
