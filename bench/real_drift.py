"""Real-drift benchmark (issue 17): does the agent keep its accuracy when the drift happened?

Data sets whose drift is real (other people, another session, the watch on the other
wrist; ``bench/real_drift_sets.md``) are cut into a train domain (the model is trained on
part of it, the rest is *clean* held-out data) and a drifted domain (a *stream* part,
replayed through the agent's calibration controller sample by sample, labels on a fixed
fraction of its samples, and a *held-out* part that is never streamed). Accuracy is
scored on the integer engine: before the drift (clean held-out), right after (held-out,
no calibration), after calibration (held-out), and the forgetting (clean held-out after
calibration). Injected drifts (offset, gain, rotation, noise, dead channel, time warp) run
on halves of the clean part of these sets and of the bundled ones; a no-drift control
streams clean train-domain samples. Recovery = (after - right after) / (before - right
after). Methods: no calibration, the agent's default path, flips alone, the statistics
rung alone (when the agent has it), QCore vs random vs most-recent buffers, AdaBN and
TENT (test-time-adaptation anchors, torch), back-propagation replay (torch), and the
torch-free back-propagation a board could run (numpy, last layer, requantized).

    python -m bench.real_drift --json            # full run (< 30 min on 2 cores)
    python -m bench.real_drift --quick --json    # smoke run: 2 sets, 1 seed, 4 bits
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.real_drift_data import (  # noqa: E402
    BUNDLED_SETS,
    REAL_SETS,
    RETURN_BACK,
    RETURN_DRIFT,
    STREAM_ITEMS,
    DriftSplit,
    check_disjoint,
    load_split,
    stream_items,
)
from bench.real_drift_report import REF, jsonable, summarize, write_outputs  # noqa: E402

log = logging.getLogger("bench.real_drift")

LABEL_FRACTION = 0.2
SWEEP_FRACTIONS = (0.05, 0.5)
MIN_SCORED = 20  # clean-part cases (injected, no drift, return) need this many to score
# injected kinds (edge_agent/data/drift.py specs at their default strengths)
KINDS = {
    "offset": "offset",
    "gain": "gain",
    "rotation": "rotation",
    "noise": "noise",
    "dead_channel": "dropout",
    "timewarp": "timewarp",
}


def _methods(
    bundle: Any,
    qnet: Any,
    bits: int,
    data: Any,
    X_src: np.ndarray,
    seed: int,
    full: bool,
    stats: dict[str, Any] | None,
    then: Any = None,
    only: set[str] | None = None,
) -> dict[str, Any]:
    """Run the methods on one replay; returns name -> Outcome (or a note string). With
    ``then`` (more drifted samples, train-domain samples) the default path's stream goes
    on: the drift lasts, then goes away (``return_forgetting``). ``only``: the agent's
    paths to run besides "none" (``--methods``: default, flips, stats; a quick look)."""
    from bench import real_drift_methods as m

    out: dict[str, Any] = {"none": m.Outcome(m.Engine(bundle, bits=bits))}
    out["default"] = m.replay(bundle, bits, data, seed=seed, then=then)
    if only is not None:
        for name, over in (("flips", "off"), ("stats", "alone")):
            if name in only and stats is not None and over in stats:
                out[name] = m.replay(bundle, bits, data, stats[over], seed=seed)
        return out
    if m.no_label():  # the default path without the label rung (this build has it)
        out["no_label"] = m.replay(bundle, bits, data, m.no_label(), seed=seed)
    if stats is not None:
        out["flips"] = m.replay(bundle, bits, data, stats["off"], seed=seed)
        if "alone" in stats:
            out["stats"] = m.replay(bundle, bits, data, stats["alone"], seed=seed)
    chunk = m.every_chunk()  # {} in a build without the drift trigger: the default path
    if chunk:
        out[REF] = m.replay(bundle, bits, data, chunk, buffer="qcore", seed=seed)
    if full:  # buffer policies on the every-chunk path (rounds there whatever the signal)
        for buf in ("random", "recent"):
            out[f"buffer_{buf}"] = m.replay(bundle, bits, data, chunk, buffer=buf, seed=seed)
        out["torch_replay"] = m.torch_replay(bundle, qnet, data, seed)
    out["adabn"] = m.adabn(bundle, qnet, X_src, data)
    out["tent"] = m.tent(bundle, qnet, X_src, data, seed)
    out["numpy_backprop"] = m.numpy_last_layer(bundle, bits, data, seed)
    return out


def _score(
    outcomes: dict[str, Any],
    Xh: np.ndarray,
    yh: np.ndarray,
    Xc: np.ndarray,
    yc: np.ndarray,
    back: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Accuracies and costs of every method; ``back``: the clean samples the return part
    of the default stream never saw (its forgetting after the drift went away)."""
    from bench.real_drift_methods import accuracy, first_reaching

    base = outcomes["none"].engine
    before, right_after = accuracy(base, Xc, yc), accuracy(base, Xh, yh)
    rows: dict[str, dict[str, Any]] = {}
    for name, o in outcomes.items():
        rows[name] = {
            "before": before,
            "right_after": right_after,
            "after": accuracy(o.engine, Xh, yh),
            "clean_after": accuracy(o.engine, Xc, yc),
            "cpu_s": o.cpu_s,
            "rounds": o.rounds,
            "kept": o.kept,
            "cpu_per_round_s": o.cpu_per_round,
            "stream_cpu_s": o.stream_cpu_s,
            **({"note": o.note} if o.note else {}),
        }
        if o.returned is not None and back is not None:
            rows[name]["return"] = {
                "before": accuracy(base, *back),
                "after_drift": accuracy(o.engine, *back),
                "after_return": accuracy(o.returned, *back),
                "alarms": list(o.alarms),
            }
    target = rows[REF if REF in rows else "default"]["after"]
    for name in ("numpy_backprop", "torch_replay"):
        if name not in outcomes:
            continue
        if target <= right_after:  # the flips gained nothing: no calibration matches them
            rows[name]["flips_no_gain"] = True
            continue
        rows[name]["cpu_s_to_match_flips"] = first_reaching(
            outcomes[name].curve, target, lambda e: accuracy(e, Xh, yh)
        )
    return rows


def case_rng(seed: int, kind: str, drift: str, fraction: float) -> np.random.Generator:
    """A case's own stream generator: the same stream at every bit-width, and whichever
    other cases run (a --quick run replays the full run's streams)."""
    return np.random.default_rng([seed, zlib.crc32(f"{kind}|{drift}|{fraction}".encode())])


def run_job(
    name: str,
    seed: int,
    bits_list: list[int],
    cache: str,
    quick: bool,
    stats_on: bool,
    route: bool = True,
    only: set[str] | None = None,
    kinds: set[str] | None = None,
) -> dict[str, Any]:
    """Train (or load) one bundle and run every case of one (set, seed): a worker's job."""
    import torch

    from bench import real_drift_methods as m
    from bench.real_drift_train import trained
    from edge_agent.data.drift import Drift

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    stats, _ = m.stats_rung() if stats_on else (None, "")
    m.CONFIG.update({} if route else m.no_routing())  # this worker's replays
    split: DriftSplit = load_split(name, Path(cache), seed)
    bundle, qnets, train_s = trained(split, seed, Path(cache))
    t0 = time.time()

    def rng(kind: str, drift: str, fraction: float) -> np.random.Generator:
        return case_rng(seed, kind, drift, fraction)

    X, y = split.X, split.y
    X_src = X[split.fit]
    cases: list[dict[str, Any]] = []

    def returning(ids: np.ndarray, transform: Any, r: np.random.Generator) -> tuple[Any, Any]:
        """What follows a drifted replay: more of the drift (the signal's hold and
        re-baseline end inside it), then clean train-domain samples (``clean_a``)."""
        more = stream_items(X, y, ids, LABEL_FRACTION, r, RETURN_DRIFT, transform)
        back = stream_items(X, y, split.clean_a, LABEL_FRACTION, r, RETURN_BACK)
        return more, back

    def case(
        kind: str,
        bits: int,
        data: Any,
        scored: np.ndarray,
        Xh: np.ndarray,
        clean: np.ndarray,
        fraction: float,
        full: bool,
        drift: str,
        ret: Any = None,
    ) -> None:
        check_disjoint(data.ids, scored, f"{name} {drift}: held-out")
        if kind != "no_drift":  # the clean part is scored too (before, forgetting)
            check_disjoint(data.ids, clean, f"{name} {drift}: clean")
        then, back = None, None
        if ret is not None:  # the drift lasts, then the stream returns to the train domain
            then, back = ret, (X[split.clean_b], y[split.clean_b])
            check_disjoint(ret[1].ids, split.clean_b, f"{name} {drift}: return")
        wanted = kind in (kinds or ()) or (kind == "injected" and drift in (kinds or ()))
        if kinds is not None and not wanted:
            return
        outcomes = _methods(bundle, qnets[bits], bits, data, X_src, seed, full, stats, then, only)
        rows = _score(outcomes, Xh, y[scored], X[clean], y[clean], back)
        res = {
            "set": name,
            "seed": seed,
            "bits": bits,
            "kind": kind,
            "drift": drift,
            "label_fraction": fraction,
            "stream_samples": len(np.unique(data.ids)),
            "labelled_samples": len(np.unique(data.ids[data.labelled])),
            "scored_samples": len(scored),
            "methods": rows,
        }
        if kind == "real" and bits == 4 and only is None:
            first, later = m.round_peak_memory(bundle, bits, data, m.every_chunk())
            res["first_round_peak_mb"], res["round_peak_mb"] = first, later
            res["numpy_backprop_peak_mb"] = float(
                m.numpy_last_layer(bundle, bits, data, seed, peak_memory=True).note.split()[0]
            )
        cases.append(res)
        d = rows["default"]
        log.info(
            "%s seed %d %d-bit %s %s: before %.3f right after %.3f default %.3f "
            "(%d/%d rounds kept)",
            name,
            seed,
            bits,
            kind,
            drift,
            d["before"],
            d["right_after"],
            d["after"],
            d["kept"],
            d["rounds"],
        )

    if split.real:
        for bits in bits_list:
            data = stream_items(
                X, y, split.stream, LABEL_FRACTION, rng("real", "real", LABEL_FRACTION)
            )
            ret = None
            if bits == 4 and len(split.clean_b) >= MIN_SCORED:
                ret = returning(split.stream, None, rng("return", "real", LABEL_FRACTION))
            case(
                "real",
                bits,
                data,
                split.held,
                X[split.held],
                split.clean,
                LABEL_FRACTION,
                True,
                "real",
                ret,
            )
        # the no-drift control streams clean_a and scores clean_b: too few there to score
        if 4 in bits_list and len(split.clean_b) >= MIN_SCORED:
            data = stream_items(
                X, y, split.clean_a, LABEL_FRACTION, rng("no_drift", "none", LABEL_FRACTION)
            )
            case(
                "no_drift",
                4,
                data,
                split.clean_b,
                X[split.clean_b],
                split.clean_b,
                LABEL_FRACTION,
                False,
                "none",
            )
    first_seed = seed == 0
    if first_seed and split.real and 4 in bits_list:
        for frac in SWEEP_FRACTIONS:
            data = stream_items(X, y, split.stream, frac, rng("real", "real", frac))
            case("sweep", 4, data, split.held, X[split.held], split.clean, frac, False, "real")
    skipped = []
    if first_seed and 4 in bits_list and len(split.clean_b) < MIN_SCORED:
        skipped.append(
            f"injected kinds, no-drift control and return: the clean part's scoring half "
            f"has {len(split.clean_b)} samples (< {MIN_SCORED})"
        )
    elif first_seed and 4 in bits_list:
        channels = X.shape[1]
        image = X.ndim == 4
        for kind, spec in KINDS.items():
            if kind == "rotation" and not split.multichannel_3axis:
                continue
            if kind == "dead_channel" and channels < 2:
                continue
            if kind == "timewarp" and image:
                continue
            drift = Drift.parse(f"{spec}@0")
            data = stream_items(
                X,
                y,
                split.clean_a,
                LABEL_FRACTION,
                rng("injected", kind, LABEL_FRACTION),
                transform=drift.transform(seed),
            )
            Xh = drift.apply_stream(X[split.clean_b], seed=seed + 1)
            ret = returning(split.clean_a, drift.transform(seed + 2), rng("return", kind, 0.2))
            case(
                "injected",
                4,
                data,
                split.clean_b,
                Xh,
                split.clean_b,
                LABEL_FRACTION,
                False,
                kind,
                ret,
            )
    return {
        "cases": cases,
        "train_s": train_s,
        "cases_s": time.time() - t0,
        "provenance": {**split.provenance, "skipped": skipped},
        "sizes": {
            "fit": len(split.fit),
            "clean": len(split.clean),
            "stream": len(split.stream),
            "held": len(split.held),
        },
    }


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="2 sets, seed 0, 4 bits (< 5 min)")
    ap.add_argument("--sets", help="comma-separated (default: 4 real + 3 bundled)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bits", default="8,4,2")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--out", type=Path, default=Path("bench/results"))
    ap.add_argument(
        "--no-stats-rung",
        action="store_true",
        help="do not run the statistics rung even if the agent has it",
    )
    ap.add_argument(
        "--no-route",
        action="store_true",
        help="the agent's replays without domain routing (one global correction)",
    )
    ap.add_argument(
        "--methods",
        help="only the agent's paths named (default,flips,stats) besides none: a quick look",
    )
    ap.add_argument(
        "--kinds",
        help="only these cases: drift kinds (offset, ..., timewarp) and/or case kinds "
        "(real, no_drift, sweep, injected)",
    )
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ap.add_argument(
        "--from-json",
        type=Path,
        help="only rewrite the Markdown and PNG from an earlier run's JSON",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if args.from_json:
        old = json.loads(args.from_json.read_text())
        summary = summarize(old["cases"])
        write_outputs(args.out, summary, old["cases"], old["provenance"], old["run"])
        print(
            json.dumps(jsonable({**summary["keys"], "run": old["run"]}))
            if args.json
            else (args.out / "real_drift.md").read_text()
        )
        return
    if args.quick:
        sets, seeds, bits = ["japanese_vowels", "watch_side"], [0], [4]
    else:
        sets = args.sets.split(",") if args.sets else [*REAL_SETS, *BUNDLED_SETS]
        seeds = [int(s) for s in args.seeds.split(",")]
        bits = [int(b) for b in args.bits.split(",")]
    from bench.real_drift_methods import stats_rung

    stats, stats_note = stats_rung()
    load0 = os.getloadavg()
    t0 = time.time()
    jobs = [(n, s) for n in sets for s in (seeds if n in REAL_SETS else seeds[:1])]
    done: list[dict[str, Any]] = []
    args.cache.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futs = {
            pool.submit(
                run_job,
                n,
                s,
                bits,
                str(args.cache),
                args.quick,
                not args.no_stats_rung,
                not args.no_route,
                set(args.methods.split(",")) if args.methods else None,
                set(args.kinds.split(",")) if args.kinds else None,
            ): (n, s)
            for n, s in jobs
        }
        failed = []
        for f in as_completed(futs):
            try:
                r = f.result()
            except Exception as exc:  # one job's failure must not lose the others' results
                log.error("job %s seed %d failed: %r", *futs[f], exc)
                failed.append(f"{futs[f][0]} seed {futs[f][1]}: {exc!r}")
                continue
            r["set"], r["seed"] = futs[f]
            done.append(r)
            log.info(
                "done %s seed %d (train %.0f s, cases %.0f s), %.0f s so far",
                *futs[f],
                r["train_s"],
                r["cases_s"],
                time.time() - t0,
            )
    run_info = {
        "mode": "quick" if args.quick else "full",
        "sets": sets,
        "seeds": seeds,
        "bits": bits,
        "wall_s": round(time.time() - t0, 1),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "stream_items": STREAM_ITEMS,
        "label_fraction": LABEL_FRACTION,
        "stats_rung": "run" if stats and not args.no_stats_rung else stats_note or "off",
        "flips_alone": "run separately"
        if stats and not args.no_stats_rung
        else "the default path is flips alone in this build (no statistics rung)",
        "routing": "off" if args.no_route else "on (the agent's default)",
        "failed_jobs": failed,
        "train_s_sum": round(sum(r["train_s"] for r in done), 1),
        "cases_s_sum": round(sum(r["cases_s"] for r in done), 1),
    }
    cases = [c for r in sorted(done, key=lambda r: (r["set"], r["seed"])) for c in r["cases"]]
    provenance: dict[str, Any] = {}
    for r in sorted(done, key=lambda r: r["seed"]):  # sizes of seed 0's cut, skips of any
        p = provenance.setdefault(r["set"], {**r["provenance"], "sizes": r["sizes"]})
        p["skipped"] = sorted(set(p["skipped"]) | set(r["provenance"]["skipped"]))
    summary = summarize(cases)
    write_outputs(args.out, summary, cases, provenance, run_info)
    if args.json:
        print(json.dumps(jsonable({**summary["keys"], "run": run_info})))
    else:
        print((args.out / "real_drift.md").read_text())


if __name__ == "__main__":
    main()
