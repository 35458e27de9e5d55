"""Why does the statistics rung recover less than the AdaBN anchor? (issue 17)

For each (set, drift kind) case of ``bench/real_drift.py`` (seed 0, one bit-width), the
stream is replayed through the real controller with the rung alone (no flip rounds) and
every job is logged: when the drift signal fired, how many stream samples the statistics
round saw, how many of them had labels, the gate's verdict. Then the rung's correction is
computed *ungated* from (a) the same samples the round saw and (b) every distinct stream
sample (what the AdaBN anchor sees), with and without the hidden layers, and held-out
accuracy is compared with the AdaBN anchor's. Held-out accuracy is scored on samples never
streamed, as in ``bench/real_drift.py``.

    python -m bench.stats_rung_diagnose          # every set, seed 0, 4 bits (~10 min)
    python -m bench.stats_rung_diagnose --sets gunpoint,watch_side --out /tmp/d
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.real_drift import KINDS, LABEL_FRACTION, MIN_SCORED  # noqa: E402
from bench.real_drift_data import (  # noqa: E402
    BUNDLED_SETS,
    REAL_SETS,
    StreamData,
    load_split,
    stream_items,
)

log = logging.getLogger("bench.stats_rung_diagnose")


class _Skips(logging.Handler):
    """Counts the rung's 'layer not corrected' log lines (a fused max pool refused)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.n = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "not corrected" in record.getMessage():
            self.n += 1


def _replay_log(bundle: Any, bits: int, data: StreamData, overrides: dict[str, Any]) -> tuple:
    """Replay with the real controller; every round's job size, labels and verdict."""
    from edge_agent.calibrate.calibration_config import CalibrationConfig
    from edge_agent.calibrate.controller import CalibrationController
    from edge_agent.engine.engine import Engine

    ctl = CalibrationController(bundle, dataclasses.replace(CalibrationConfig(), **overrides))
    engine = Engine(bundle, bits=bits)
    ctl.prescore(data.X)
    rounds: list[dict[str, Any]] = []
    alarms: list[int] = []
    seen: list[np.ndarray] = []  # the samples of each statistics job
    for i in range(len(data.y)):
        before = ctl.counts["drift_alarms"]
        ctl.observe(data.X[i], int(data.y[i]) if data.labelled[i] else None, i)
        if ctl.counts["drift_alarms"] > before:
            alarms.append(i)
        while ctl.due():
            job = ctl.stream._jobs.jobs[0]
            size = 0 if job.X is None else len(job.X)
            nlab = 0 if job.recent is None else len(job.recent[1])
            kind = job.kind
            if kind == "stats" and job.X is not None:
                seen.append((job.X, job.recent))
            r = ctl.run(engine)
            if r is not None:
                d = r.decision
                rounds.append(
                    {
                        "at": i,
                        "job": kind,
                        "samples": size,
                        "labelled": nlab,
                        "kept": r.version is not None,
                        "before": d.before,
                        "after": d.after,
                        "reason": d.reason,
                    }
                )
    return engine, rounds, alarms, seen


def _ungated(bundle: Any, bits: int, X: np.ndarray, layers: bool) -> Any:
    """A scratch engine with the rung's correction from ``X`` (no gate)."""
    from edge_agent.calibrate import stats_rung
    from edge_agent.engine.engine import Engine

    stats, _ = stats_rung.statistics_of(bundle)
    assert stats is not None
    scratch = Engine(bundle, bits=bits, scratch=True)
    if layers:
        stats_rung.propose(scratch, bundle, stats, X)
    else:
        mu, sd = stats.target
        m, s = stats_rung.channel_stats(X)
        std = (np.maximum(s, 0.01 * stats.in_std) / sd).astype(np.float32)
        scratch.swap_params(mean=(m - mu * std).astype(np.float32), std=std)
    return scratch


def _entropy(logits: np.ndarray) -> float:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    p = z / z.sum(axis=1, keepdims=True)
    return float(-(p * np.log(p + 1e-12)).sum(axis=1).mean() / np.log(p.shape[1]))


def _evidence(base: Any, fixed: Any, job: tuple) -> dict[str, Any]:
    """What a gate could see at the statistics job: labelled wins / losses (items and
    distinct samples), soft accuracy, and the mean predictive entropy on the window."""
    from edge_agent.calibrate import gate

    X, lab = job
    out = {"entropy": [_entropy(base.predict_logits(X)), _entropy(fixed.predict_logits(X))]}
    if lab is not None:
        Xl, yl = lab
        _, first = np.unique(Xl.reshape(len(Xl), -1), axis=0, return_index=True)
        b, a = base.predict_logits(Xl), fixed.predict_logits(Xl)
        rb, ra = b.argmax(1) == yl, a.argmax(1) == yl
        out["wins_losses"] = [int((ra & ~rb).sum()), int((rb & ~ra).sum())]
        out["distinct_wins_losses"] = [int((ra & ~rb)[first].sum()), int((rb & ~ra)[first].sum())]
        out["soft"] = [gate.soft_accuracy(b, yl), gate.soft_accuracy(a, yl)]
    return out


def diagnose_case(
    bundle: Any, qnet: Any, bits: int, data: StreamData, X_src: np.ndarray, Xh, yh
) -> dict[str, Any]:
    """Every diagnostic of one case (see the module text)."""
    from bench import real_drift_methods as m
    from edge_agent.engine.engine import Engine

    acc = m.accuracy
    base = Engine(bundle, bits=bits)
    skips = _Skips()
    logging.getLogger("edge_agent.calibrate.stats_rung").addHandler(skips)
    logging.getLogger("edge_agent.calibrate.stats_rung").setLevel(logging.INFO)
    alone, rounds, alarms, jobs = _replay_log(bundle, bits, data, {"episode_rounds": 0})
    default, drounds, _, _ = _replay_log(bundle, bits, data, {})
    stats_jobs = [r for r in rounds if r["job"] == "stats"]
    seen = jobs[0][0] if jobs else data.X[:64]  # no alarm: what a round at 64 samples saw
    fixed = _ungated(bundle, bits, seen, True)
    out = {
        "right_after": acc(base, Xh, yh),
        "alarms": alarms,
        "stats_rounds": stats_jobs,
        "default_rounds": [(r["job"], r["kept"], r["before"], r["after"]) for r in drounds],
        "rung_alone": acc(alone, Xh, yh),
        "default": acc(default, Xh, yh),
        "ungated_job_samples": acc(fixed, Xh, yh),
        "evidence": _evidence(base, fixed, jobs[0]) if jobs else None,
        "evidence_all_labelled": _evidence(base, fixed, (data.X, data.labelled_set())),
        "ungated_all_stream": acc(_ungated(bundle, bits, data.distinct(), True), Xh, yh),
        "ungated_all_input_only": acc(_ungated(bundle, bits, data.distinct(), False), Xh, yh),
        "adabn": acc(m.adabn(bundle, qnet, X_src, data).engine, Xh, yh),
        "layers_not_corrected": skips.n,
        "scored": len(yh),
    }
    logging.getLogger("edge_agent.calibrate.stats_rung").removeHandler(skips)
    return out


def run_set(name: str, cache: Path, bits: int, kinds: list[str]) -> dict[str, Any]:
    """Diagnostics of every case of one set at seed 0."""
    import zlib

    import torch

    from bench.real_drift_train import trained
    from edge_agent.data.drift import Drift

    torch.set_num_threads(1)
    seed = 0
    split = load_split(name, cache, seed)
    bundle, qnets, _ = trained(split, seed, cache)
    X, y = split.X, split.y
    X_src = X[split.fit]

    def rng(kind: str, drift: str) -> np.random.Generator:  # as bench/real_drift.py's
        key = f"{kind}|{drift}|{LABEL_FRACTION}".encode()
        return np.random.default_rng([seed, zlib.crc32(key)])

    out: dict[str, Any] = {}
    if split.real:
        data = stream_items(X, y, split.stream, LABEL_FRACTION, rng("real", "real"))
        out["real"] = diagnose_case(
            bundle, qnets[bits], bits, data, X_src, X[split.held], y[split.held]
        )
    if len(split.clean_b) < MIN_SCORED:
        return out
    for kind in kinds:
        if kind == "rotation" and not split.multichannel_3axis:
            continue
        if kind == "dead_channel" and X.shape[1] < 2:
            continue
        if kind == "timewarp" and X.ndim == 4:  # images: as bench/real_drift.py
            continue
        drift = Drift.parse(f"{KINDS[kind]}@0")
        data = stream_items(
            X,
            y,
            split.clean_a,
            LABEL_FRACTION,
            rng("injected", kind),
            transform=drift.transform(seed),
        )
        Xh = drift.apply_stream(X[split.clean_b], seed=seed + 1)
        out[kind] = diagnose_case(bundle, qnets[bits], bits, data, X_src, Xh, y[split.clean_b])
        log.info("%s %s: %s", name, kind, {k: v for k, v in out[kind].items() if "round" not in k})
    return out


def _old_gate_keeps(c: dict[str, Any]) -> bool:
    """The rule before this diagnosis (one more labelled item right, higher soft accuracy),
    on the first statistics job's labelled items."""
    e = c["evidence"]
    return bool(e and "wins_losses" in e and e["wins_losses"][0] > e["wins_losses"][1]) and bool(
        e["soft"][1] > e["soft"][0]
    )


def summarize(res: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts over every case with a statistics job (see the module text)."""
    cases = [c for per in res.values() for c in per.values() if c["evidence"] is not None]
    step = [1.0 / c["scored"] + 1e-9 for c in cases]
    pts = lambda key, ref: round(  # noqa: E731
        100 * float(np.mean([c[key] - c[ref] for c in cases])) if cases else 0.0, 2
    )
    return {
        "cases_with_a_statistics_job": len(cases),
        "ungated_within_one_sample_of_adabn": sum(
            abs(c["ungated_job_samples"] - c["adabn"]) <= s
            for c, s in zip(cases, step, strict=True)
        ),
        "ungated_below_right_after": sum(
            c["ungated_job_samples"] < c["right_after"] for c in cases
        ),
        "layers_not_corrected": sum(c["layers_not_corrected"] for c in cases),
        "old_gate_refused_first_job": sum(not _old_gate_keeps(c) for c in cases),
        "old_gate_refused_where_ungated_helped": sum(
            not _old_gate_keeps(c) and c["ungated_job_samples"] > c["right_after"] for c in cases
        ),
        "rung_alone_no_correction_kept": sum(
            not any(r["kept"] for r in c["stats_rounds"]) for c in cases
        ),
        "rung_alone_minus_adabn_mean_pts": pts("rung_alone", "adabn"),
        "default_minus_rung_alone_mean_pts": pts("default", "rung_alone"),
        "default_below_rung_alone": sum(c["default"] < c["rung_alone"] for c in cases),
    }


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", default=",".join([*REAL_SETS, *BUNDLED_SETS]))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    t0, load0 = time.time(), os.getloadavg()
    kinds = args.kinds.split(",")
    res = {n: run_set(n, args.cache, args.bits, kinds) for n in args.sets.split(",")}
    load = [load0, os.getloadavg()]
    run = {"bits": args.bits, "wall_s": round(time.time() - t0), "loadavg": load}
    args.out.mkdir(parents=True, exist_ok=True)
    summary = summarize(res)
    log.info("summary: %s", summary)
    text = json.dumps({"run": run, "summary": summary, "cases": res}, indent=1, default=float)
    (args.out / "stats_rung_diagnose.json").write_text(text)
    if args.json:
        print(text)


if __name__ == "__main__":
    main()
