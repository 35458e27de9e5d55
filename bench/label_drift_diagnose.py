"""Label drift on ``seattle_weather`` (issue 17): prior shift or concept shift, and why the
agent ends below no calibration.

Per seed, on the same cuts and bundles as ``bench/real_drift.py`` (labels on 20% of the
stream, the same stream generator):

1. class counts of each part (a prior shift changes them);
2. what the integer model calls each class in the train domain and in the drifted one
   (a pure prior shift keeps p(prediction | class): the rows would match);
3. held-out accuracy (drifted samples never streamed) and clean accuracy (train domain,
   never trained on) of output corrections: the class prior from the labelled stream
   counts, the label rung's offsets (``edge_agent.calibrate.label_rung``, with its
   leave-one-out verdict), label-free Saerens EM and BBSE on the unlabelled stream, and
   *oracles* that fit on the scored labels themselves (bounds, never methods): the
   held-out class prior, the best offsets; and a new float last layer fitted on every
   stream sample's label (a bound with 100% labels, scored on held-out samples); a last
   layer that beats the best offsets by far means a concept shift;
4. the agent's path without label rounds (as it was) and with them (the default): every
   round of a replay through the real controller, its rung, the gate's numbers and
   held-out / clean accuracy after it.

    python -m bench.label_drift_diagnose > bench/results/label_drift_diagnose.json
    python -m bench.label_drift_diagnose --sets seattle_weather,watch_side --bits 4
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

from bench.real_drift import LABEL_FRACTION  # noqa: E402
from bench.real_drift_data import StreamData, load_split, stream_items  # noqa: E402
from edge_agent.calibrate import label_rung as lr  # noqa: E402
from edge_agent.calibrate.qcore_miss import EXTRA_X, EXTRA_Y  # noqa: E402


def _softmax(z: np.ndarray) -> np.ndarray:
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _acc(z: np.ndarray, y: np.ndarray) -> float:
    return round(float(np.mean(z.argmax(axis=1) == y)), 3)


def _prior(y: np.ndarray, k: int, alpha: float = 1.0) -> np.ndarray:
    return (np.bincount(y, minlength=k) + alpha) / (len(y) + alpha * k)


def saerens_em(z: np.ndarray, p_train: np.ndarray, steps: int = 100) -> np.ndarray:
    """Saerens et al. (2002): EM for the new class prior from unlabelled posteriors."""
    post0 = _softmax(z)
    q = p_train.copy()
    for _ in range(steps):
        post = post0 * (q / p_train)
        post /= post.sum(axis=1, keepdims=True)
        q = post.mean(axis=0)
    return np.log(np.maximum(q, 1e-6) / p_train)


def bbse(z_src: np.ndarray, y_src: np.ndarray, z_tgt: np.ndarray, k: int) -> np.ndarray:
    """Lipton et al. (2018): importance weights w = C^-1 mu from the source confusion
    matrix and the target's predicted distribution (least squares, clipped >= 0)."""
    c = np.zeros((k, k))
    np.add.at(c, (z_src.argmax(axis=1), y_src), 1.0 / len(y_src))
    mu = np.bincount(z_tgt.argmax(axis=1), minlength=k) / len(z_tgt)
    w = np.clip(np.linalg.lstsq(c, mu, rcond=None)[0], 1e-3, None)
    return np.log(w)


def last_layer_fit(h: np.ndarray, y: np.ndarray, k: int, steps: int = 300) -> Any:
    """A float softmax regression on the last layer's inputs (a new last layer), fitted
    on every stream sample with its label (a bound: the agent sees 20% of the labels)."""
    mu, sd = h.mean(axis=0), h.std(axis=0) + 1e-6
    x = (h - mu) / sd
    w, b = np.zeros((k, x.shape[1])), np.zeros(k)
    onehot = np.eye(k)[y]
    for _ in range(steps):
        p = _softmax(x @ w.T + b)
        w -= 0.5 * ((p - onehot).T @ x / len(y) + 1e-3 * w)
        b -= 0.5 * (p - onehot).mean(axis=0)
    return lambda hh: ((hh - mu) / sd) @ w.T + b


def corrections(bundle: Any, bits: int, split: Any, data: StreamData) -> dict[str, Any]:
    """Held-out and clean accuracy of each output correction (section 3)."""
    from edge_agent.engine.engine import Engine

    eng = Engine(bundle, bits=bits)
    k = bundle.num_classes
    X, y = split.X, split.y
    mult = lr.out_mult(bundle, bits)
    zero = np.zeros(k, np.int64)
    parts = (split.stream, split.held, split.clean)
    acc_h, acc_c = lr.accumulators(eng, X[split.held]), lr.accumulators(eng, X[split.clean])
    zh = lr.logits_of(acc_h, zero, mult)
    yh, yc = y[split.held], y[split.clean]
    Xl, yl = data.labelled_set()
    zl = lr.logits_of(lr.accumulators(eng, Xl), zero, mult)
    zs = eng.predict_logits(data.distinct())
    p_train = _prior(y[split.fit], k)
    cfg = lr.LabelConfig()
    offsets: dict[str, np.ndarray] = {
        "none": np.zeros(k),
        "prior_from_labelled_counts": np.log(_prior(yl, k) / p_train),
        "label_rung_offsets": lr.fit_offsets(zl, yl, cfg.sigma),
        "saerens_em_unlabelled": saerens_em(zs, p_train),
        "bbse_unlabelled": bbse(
            eng.predict_logits(bundle.extras[EXTRA_X]), np.asarray(bundle.extras[EXTRA_Y]), zs, k
        ),
        "oracle_heldout_prior": np.log(_prior(yh, k, 0.5) / p_train),
        "oracle_offsets_on_heldout": lr.fit_offsets(zh, yh, 100.0),
    }
    out: dict[str, Any] = {}
    for name, b in offsets.items():
        steps = lr.to_steps(b, mult)
        out[name] = {
            "held": _acc(lr.logits_of(acc_h, steps, mult), yh),
            "clean": _acc(lr.logits_of(acc_c, steps, mult), yc),
            "offsets": np.round(b, 2).tolist(),
        }
    last = len(eng.codes()) - 1
    feats = [eng.trace(X[p])[1][last].reshape(len(p), -1).astype(np.float64) for p in parts]
    fitted = last_layer_fit(feats[0], y[split.stream], k)
    out["every_stream_label_last_layer"] = {
        "held": _acc(fitted(feats[1]), yh),
        "clean": _acc(fitted(feats[2]), yc),
    }
    v = lr.leave_one_out(lr.accumulators(eng, Xl), zl, yl, mult, cfg.sigma)
    out["label_rung_verdict"] = {**dataclasses.asdict(v), "kept": lr.accepted(v, cfg)[0]}
    out["labelled_stream_counts"] = np.bincount(yl, minlength=k).tolist()
    return out


def called_as(eng: Any, X: np.ndarray, y: np.ndarray, k: int) -> list[list[int]]:
    """Rows: true class; columns: what the model calls it (section 2)."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (y, eng.predict_classes(X)), 1)
    return m.tolist()


def replay_rounds(
    bundle: Any, bits: int, split: Any, data: StreamData, overrides: dict[str, Any]
) -> list[dict[str, Any]]:
    """Section 4: every round of the agent's path (``overrides`` of its configuration) and
    its effect."""
    from bench.real_drift_methods import accuracy, rounds_of
    from edge_agent.calibrate.calibration_config import CalibrationConfig
    from edge_agent.calibrate.controller import CalibrationController
    from edge_agent.engine.engine import Engine

    ctl = CalibrationController(bundle, dataclasses.replace(CalibrationConfig(), **overrides))
    eng = Engine(bundle, bits=bits)
    X, y = split.X, split.y
    rows = []
    for i, r in rounds_of(ctl, eng, data):
        p = ctl.predictor(eng)
        d = r.decision
        rows.append(
            {
                "at": i,
                "rung": r.rung,
                "kept": r.version is not None,
                "gate": f"{d.metric} {d.before:.3f} -> {d.after:.3f} on {d.n}: {d.reason}",
                "held_after": round(accuracy(p, X[split.held], y[split.held]), 3),
                "clean_after": round(accuracy(p, X[split.clean], y[split.clean]), 3),
            }
        )
    return rows


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", default="seattle_weather")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--no-replay", action="store_true", help="skip section 4")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from bench.real_drift_train import trained
    from edge_agent.engine.engine import Engine

    report: dict[str, Any] = {"loadavg": os.getloadavg()}
    for name in args.sets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            split = load_split(name, args.cache, seed)
            bundle, _, _ = trained(split, seed, args.cache)
            k = bundle.num_classes
            rng = np.random.default_rng([seed, zlib.crc32(f"real|real|{LABEL_FRACTION}".encode())])
            data = stream_items(split.X, split.y, split.stream, LABEL_FRACTION, rng)
            eng = Engine(bundle, bits=args.bits)
            X, y = split.X, split.y
            train_dom = np.concatenate([split.fit, split.clean])
            drift_dom = np.concatenate([split.stream, split.held])
            case: dict[str, Any] = {
                "classes": split.label_names,
                "counts": {
                    p: np.bincount(y[getattr(split, p)], minlength=k).tolist()
                    for p in ("fit", "clean", "stream", "held")
                },
                "called_as_train_domain": called_as(eng, X[train_dom], y[train_dom], k),
                "called_as_drifted_domain": called_as(eng, X[drift_dom], y[drift_dom], k),
                "corrections": corrections(bundle, args.bits, split, data),
            }
            if not args.no_replay:
                # the path as it was (no label rounds), then the default with them
                case["no_label_rounds"] = replay_rounds(
                    bundle, args.bits, split, data, {"label_every": 0}
                )
                case["default_rounds"] = replay_rounds(bundle, args.bits, split, data, {})
            report[f"{name} seed {seed} {args.bits}-bit"] = case
    report["loadavg_end"] = os.getloadavg()
    print(json.dumps(report, indent=None if args.json else 1))


if __name__ == "__main__":
    main()
