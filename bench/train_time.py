"""How long `edge-agent train` takes with its defaults, per phase, before and after.

``python -m bench.train_time --json`` trains two cases, one process per run, one run at
a time:

- ``basicmotions``: the bundled set (40 training series, 6 channels, length 100);
- ``pickup_gesture``: PickupGestureWiimoteZ as the aeon 1.6.0 wheel ships it (50
  training series of up to 361 samples, one channel, 10 classes; padded to 361 by the
  loader), fetched with ``pip download`` into the bench cache like ``bench/real_drift``.

Each case runs this checkout's defaults (``--bits 4``: the time targets, 3 and 5 minutes
of wall time) and ``--bits 8,4,2`` (accuracy per bit-width); basicmotions also a short
FP + QAT run with one and with two torch threads, twice, interleaved. The "before"
numbers run an older revision (``--baseline REV``, default ``BEFORE``, extracted with
``git archive``) with the same arguments: ``--bits 8,4,2`` on basicmotions, the
defaults on pickup_gesture (``BEFORE_RUN``: the old defaults alone take about 12 CPU
minutes there); they are cached in ``bench/results/train_time_before.json`` per
revision. Time per phase comes from the train command's own timer, or for an older
revision from wrapped functions (``bench/train_time_run.py``); totals are the child
process's wall time and CPU time (``RUSAGE_CHILDREN``: user + system, all threads).
``--thread-check`` runs one short training three times (the older revision, this
checkout with two torch threads and with one) and compares the integer weights.
Every run records the load average before and after: this machine is shared, so wall
times move with it while CPU times move much less.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.real_drift_data import WHEELS, wheel_path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "3ee265b"  # main before the training-time change
PICKUP = "aeon/datasets/data/PickupGestureWiimoteZ/PickupGestureWiimoteZ"
TARGET_WALL_S = {"basicmotions": 180.0, "pickup_gesture": 300.0}
ACCURACY_TOLERANCE_PTS = 1.0
RUNS = {"default": [], "bits_842": ["--bits", "8,4,2"]}
# the older revision's run per case: its defaults take about 12 CPU minutes on
# pickup_gesture (issue 17), with three bit-widths about twice that
BEFORE_RUN = {"basicmotions": "bits_842", "pickup_gesture": "default"}
# torch threads, 1 against 2, on a short FP + QAT run (no QCore, no flipper): basicmotions
SHORT = ["--fp-steps", "150", "--qat-steps", "75", "--qcore-per-class", "0", "--no-flipper"]
THREAD_RUNS = {"threads_1": [*SHORT, "--threads", "1"], "threads_2": [*SHORT, "--threads", "2"]}


def pickup_gesture(cache: Path) -> Path:
    """PickupGestureWiimoteZ_TRAIN.ts (and its TEST twin) out of the aeon wheel."""
    out = cache / "files" / f"aeon-{WHEELS['aeon']}"
    with zipfile.ZipFile(wheel_path("aeon", cache)) as z:
        for part in ("TRAIN", "TEST"):
            p = out / f"{PICKUP}_{part}.ts"
            if not p.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(z.read(f"{PICKUP}_{part}.ts"))
    return out / f"{PICKUP}_TRAIN.ts"


def run_train(
    src: Path, data: str, extra: list[str], workdir: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One `train` run of ``src`` in a child process (``env``: added to its environment):
    its result, wall, CPU and load."""
    result = workdir / "result.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.train_time_run",
        "--src",
        str(src),
        "--result",
        str(result),
        "--",
        "--data",
        data,
        "--out",
        str(workdir / "model.eab"),
        "--quiet",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    load0 = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"train failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    out = json.loads(result.read_text())
    out.update(
        wall_s=round(wall, 1),
        cpu_s=round((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime), 1),
        loadavg_start=[round(v, 2) for v in load0],
        loadavg_end=[round(v, 2) for v in os.getloadavg()],
        stdout=proc.stdout,
    )
    print(
        f"  {' '.join(extra) or 'defaults'}: wall {out['wall_s']} s, CPU {out['cpu_s']} s, "
        f"load {out['loadavg_start'][0]} -> {out['loadavg_end'][0]}, "
        f"accuracy {json.dumps(out['metrics'])}",
        flush=True,
    )
    return out


def extract_revision(rev: str, dest: Path) -> Path:
    """The tree of ``rev`` (git archive) under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def before_runs(
    rev: str, cases: dict[str, str], cache_file: Path, tmp: Path, run_missing: bool = True
) -> dict[str, dict[str, Any] | None]:
    """The older revision's ``BEFORE_RUN`` per case, cached in ``cache_file`` (None for a
    case not cached when ``run_missing`` is False)."""
    cached: dict[str, Any] = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    mine = cached.setdefault(rev, {})
    keys = {c: f"{c} {BEFORE_RUN[c]}" for c in cases}
    missing = [c for c in cases if keys[c] not in mine]
    if missing and run_missing:
        src = extract_revision(rev, tmp / "before")
        for case in missing:
            print(f"before ({rev}) {case}:", flush=True)
            mine[keys[case]] = run_train(src, cases[case], RUNS[BEFORE_RUN[case]], tmp)
            cache_file.write_text(json.dumps(cached, indent=1))
    return {c: mine.get(keys[c]) for c in cases}


def default_time(run: dict[str, Any], kind: str) -> dict[str, Any]:
    """An older revision's time with its defaults (``--bits 4``): measured, or from its
    8,4,2 run less the 8- and 2-bit QAT phases (the other phases do not depend on the
    bit list; the flipper's episodes draw a bit-width each, at about the same cost)."""
    if kind == "default":
        return {"wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "derived": False}
    extra = [run["phases"].get(f"QAT {b}-bit", {}) for b in (8, 2)]
    return {
        "wall_s": round(run["wall_s"] - sum(p.get("wall_s", 0.0) for p in extra), 1),
        "cpu_s": round(run["cpu_s"] - sum(p.get("cpu_s", 0.0) for p in extra), 1),
        "derived": True,
    }


BEFORE_KEYS = (
    "accuracy_before",
    "accuracy_delta_pts",
    "accuracy_target_met",
    "before_wall_s",
    "before_cpu_s",
    "before_phases",
    "before_loadavg",
    "before_default",
)


def summarize(before: dict[str, Any], after: dict[str, dict[str, Any]], rev: str) -> dict[str, Any]:
    """Per case: times, phases, accuracies before/after (the same arguments on both
    sides) and whether the targets hold; the "before" keys are None where not run."""
    cases: dict[str, Any] = {}
    for case, runs in after.items():
        kind = BEFORE_RUN[case]
        acc_after = runs["bits_842"]["metrics"]
        d = runs["default"]
        cases[case] = {
            "default_wall_s": d["wall_s"],
            "default_cpu_s": d["cpu_s"],
            "default_phases": d["phases"],
            "default_loadavg": [d["loadavg_start"], d["loadavg_end"]],
            "target_wall_s": TARGET_WALL_S[case],
            "wall_target_met": d["wall_s"] <= TARGET_WALL_S[case],
            "bits_842_wall_s": runs["bits_842"]["wall_s"],
            "bits_842_cpu_s": runs["bits_842"]["cpu_s"],
            "bits_842_phases": runs["bits_842"]["phases"],
            "accuracy_after_default": d["metrics"],
            "accuracy_after_842": acc_after,
            "accuracy_compared_run": kind,
            "before_revision": rev,
            "before_run": kind,
        }
        b = before.get(case)
        if b is None:
            cases[case].update(dict.fromkeys(BEFORE_KEYS))
            continue
        compared = runs[kind]["metrics"]
        keys = sorted(k for k in b["metrics"] if k.endswith("_test_accuracy"))
        delta = {k: round(100 * (compared[k] - b["metrics"][k]), 2) for k in keys}
        cases[case].update(
            accuracy_before=b["metrics"],
            accuracy_delta_pts=delta,
            accuracy_target_met=all(v >= -ACCURACY_TOLERANCE_PTS for v in delta.values()),
            before_wall_s=b["wall_s"],
            before_cpu_s=b["cpu_s"],
            before_phases=b["phases"],
            before_loadavg=[b["loadavg_start"], b["loadavg_end"]],
            before_default=default_time(b, kind),
        )
    return cases


def _phase_table(phases: dict[str, dict[str, float]]) -> list[str]:
    rows = [f"| {k} | {v['cpu_s']:.1f} | {v['wall_s']:.1f} |" for k, v in phases.items()]
    cpu, wall = (sum(v[k] for v in phases.values()) for k in ("cpu_s", "wall_s"))
    return [*rows, f"| all phases | {cpu:.1f} | {wall:.1f} |"]


def _acc(a: dict[str, float]) -> str:
    bits = [k for k in ("q8", "q4", "q2") if f"{k}_test_accuracy" in a]
    parts = [f"{k[1:]}-bit {100 * a[f'{k}_test_accuracy']:.0f}" for k in bits]
    return ", ".join([*parts, f"FP {100 * a['fp_test_accuracy']:.0f}"])


def _delta(d: dict[str, float]) -> str:
    names = {"fp": "FP", "q8": "8-bit", "q4": "4-bit", "q2": "2-bit"}
    return ", ".join(f"{names.get(k.split('_')[0], k)} {v:+.0f}" for k, v in d.items())


def markdown(res: dict[str, Any]) -> str:
    """The report: one table of totals, then the phases of every run."""
    lines = [
        "# `edge-agent train` time (`python -m bench.train_time --json`)",
        "",
        f"Machine: {os.cpu_count()} cores, shared; wall times move with the load average "
        "(given per run), CPU times (all threads) much less. Before: revision "
        f"`{res['before_revision']}` with its defaults (a time marked * is its 8,4,2 run "
        "less the 8- and 2-bit QAT phases). Accuracy: torch fake-quant on the test split, "
        "seed 0, before and after from runs with the same arguments.",
        "",
        "| case | defaults: wall s (target) | CPU s | load 1m | before: wall s | CPU s "
        "| load 1m | accuracy % before | after | delta pts |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, c in res["cases"].items():
        if c["before_default"] is None:
            lines.append(
                f"| {case} | {c['default_wall_s']:.0f} ({c['target_wall_s']:.0f}, "
                f"{'met' if c['wall_target_met'] else 'missed'}) | {c['default_cpu_s']:.0f} | "
                f"{c['default_loadavg'][0][0]:.1f} | not run | | | | "
                f"{_acc(c['accuracy_after_default'])} | |"
            )
            continue
        bd = c["before_default"]
        star = "*" if bd["derived"] else ""
        after = c[
            "accuracy_after_842" if c["before_run"] == "bits_842" else "accuracy_after_default"
        ]
        lines.append(
            f"| {case} | {c['default_wall_s']:.0f} ({c['target_wall_s']:.0f}, "
            f"{'met' if c['wall_target_met'] else 'missed'}) | {c['default_cpu_s']:.0f} | "
            f"{c['default_loadavg'][0][0]:.1f} | {bd['wall_s']:.0f}{star} | "
            f"{bd['cpu_s']:.0f}{star} | {c['before_loadavg'][0][0]:.1f} | "
            f"{_acc(c['accuracy_before'])} | {_acc(after)} | "
            f"{_delta(c['accuracy_delta_pts'])} |"
        )
    lines += ["", "Accuracy of this checkout with `--bits 8,4,2`:", ""]
    lines += [f"- {case}: {_acc(c['accuracy_after_842'])}" for case, c in res["cases"].items()]
    if any(t["cpu_s"] for t in res["threads"].values()):
        lines += [
            "",
            "## torch threads (basicmotions, 150 FP + 75 QAT steps, no QCore, no flipper)",
            "",
            "| threads | CPU s per run | wall s per run | load 1m at start |",
            "|---|---|---|---|",
        ]
        for k, t in res["threads"].items():
            lines.append(
                f"| {k.split('_')[1]} | {' / '.join(map(str, t['cpu_s']))} | "
                f"{' / '.join(map(str, t['wall_s']))} | "
                f"{' / '.join(map(str, t['loadavg_start']))} |"
            )
    blas = res.get("blas_check")
    if blas:
        lines += [
            "",
            "## BLAS threads (basicmotions, " + " ".join(blas["args"]) + ", QCore and flipper)",
            "",
            "| BLAS threads | flipper episodes CPU s | wall s | whole run CPU s | wall s "
            "| load 1m at start |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in blas.items():
            if name == "args":
                continue

            def col(key: str, part: str, r: dict[str, Any] = r) -> str:
                return " / ".join(f"{x[key]:.1f}" for x in r[part])

            lines.append(
                f"| {name.rsplit('_', 1)[1]} | {col('cpu_s', 'episodes')} | "
                f"{col('wall_s', 'episodes')} | {col('cpu_s', 'run')} | {col('wall_s', 'run')} "
                f"| {' / '.join(map(str, r['load']))} |"
            )
    check = res.get("thread_check")
    if check:
        lines += [
            "",
            "## Thread check (pickup_gesture, " + " ".join(check["args"]) + ")",
            "",
            "Is the thread count the only change on the training path? The same short run:",
            "",
            "| run | 4-bit % | FP % | integer weights (SHA-256) | CPU s | load 1m |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in check.items():
            if name == "args":
                continue
            m = r["metrics"]
            lines.append(
                f"| {name} | {100 * m['q4_test_accuracy']:.0f} | "
                f"{100 * m['fp_test_accuracy']:.0f} | `{r['weights_sha256']}` | "
                f"{r['cpu_s']} | {r['loadavg_start'][0]} |"
            )
    for case, c in res["cases"].items():
        for title, key in (
            ("defaults", "default_phases"),
            ("--bits 8,4,2", "bits_842_phases"),
            (f"before ({res['before_revision']}, {c['before_run']})", "before_phases"),
        ):
            if c[key] is None:
                continue
            lines += ["", f"## {case}, {title}", "", "| phase | CPU s | wall s |", "|---|---|---|"]
            lines += _phase_table(c[key])
    return "\n".join(lines) + "\n"


CHECK = ["--fp-steps", "100", "--qat-steps", "50", "--qcore-per-class", "0", "--no-flipper"]
# numpy's BLAS threads, 1 (the train command's default since this change) against 2 (what
# OpenBLAS took before on this 2-core machine): a short basicmotions run with the flipper
BLAS_ARGS = ["--fp-steps", "150", "--qat-steps", "75"]
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_check(tmp: Path, repeats: int = 2) -> dict[str, Any]:
    """CPU and wall of the flipper episodes and the whole run with one and two BLAS
    threads, interleaved ``repeats`` times."""
    out: dict[str, Any] = {"args": BLAS_ARGS}
    for _ in range(repeats):
        for n in (1, 2):
            run = run_train(ROOT, "basicmotions", BLAS_ARGS, tmp, dict.fromkeys(BLAS_VARS, str(n)))
            r = out.setdefault(f"blas_threads_{n}", {k: [] for k in ("episodes", "run", "load")})
            ep = run["phases"]["flipper episodes"]
            r["episodes"].append({"cpu_s": ep["cpu_s"], "wall_s": ep["wall_s"]})
            r["run"].append({"cpu_s": run["cpu_s"], "wall_s": run["wall_s"]})
            r["load"].append(run["loadavg_start"][0])
    return out


def weights_digest(bundle: Any) -> str:
    """SHA-256 of a bundle's packed integer weights at every bit-width (the model itself,
    not the metadata a newer revision adds)."""
    h = hashlib.sha256()
    for bits in sorted(bundle.quant):
        for layer in bundle.quant[bits].layers:
            h.update(layer.packed.tobytes())
    return h.hexdigest()[:16]


def _codes_digest(path: Path) -> str:
    from edge_agent.bundle_io import load_bundle

    return weights_digest(load_bundle(path))


def thread_check(rev: str, spec: str, tmp: Path) -> dict[str, Any]:
    """Is the thread count the only change on the training path? The same short run
    (100 FP + 50 QAT steps, no QCore, no flipper) by the older revision (two threads, its
    only way), by this checkout with two threads and with one: accuracies and a digest of
    the integer weights of each."""
    src = extract_revision(rev, tmp / "before")
    out: dict[str, Any] = {"args": CHECK}
    for name, root, extra in (
        (f"{rev} (2 threads)", src, []),
        ("this checkout, --threads 2", ROOT, ["--threads", "2"]),
        ("this checkout, --threads 1", ROOT, ["--threads", "1"]),
    ):
        run = run_train(root, spec, [*CHECK, *extra], tmp)
        out[name] = {
            "metrics": run["metrics"],
            "weights_sha256": _codes_digest(tmp / "model.eab"),
            "cpu_s": run["cpu_s"],
            "wall_s": run["wall_s"],
            "loadavg_start": run["loadavg_start"],
        }
    return out


def after_runs(
    cases: dict[str, str], tmp: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """This checkout's runs per case, then the torch-threads comparison."""
    after: dict[str, dict[str, Any]] = {}
    for case, spec in cases.items():
        print(f"after {case}:", flush=True)
        after[case] = {k: run_train(ROOT, spec, extra, tmp) for k, extra in RUNS.items()}
    threads: dict[str, list[dict[str, Any]]] = {k: [] for k in THREAD_RUNS}
    if "basicmotions" in cases:
        print("torch threads (basicmotions, short):", flush=True)
        for _ in range(2):
            for k, extra in THREAD_RUNS.items():
                threads[k].append(run_train(ROOT, "basicmotions", extra, tmp))
    return after, threads


def main() -> int:
    """Run the cases; write ``train_time.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="write bench/results/train_time.json/md")
    ap.add_argument("--baseline", default=BEFORE, help=f"revision for 'before' (default {BEFORE})")
    ap.add_argument("--cases", default="basicmotions,pickup_gesture")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results")
    ap.add_argument(
        "--only-before", action="store_true", help="run (and cache) the 'before' runs only"
    )
    ap.add_argument(
        "--from-results",
        action="store_true",
        help="no runs: rebuild train_time.{json,md} from the last one's runs and the "
        "'before' cache (after a 'before' run finished)",
    )
    ap.add_argument(
        "--thread-check",
        action="store_true",
        help="only the thread check on pickup_gesture (train_time_thread_check.json); the "
        "report includes it",
    )
    ap.add_argument(
        "--blas-check",
        action="store_true",
        help="only the BLAS-threads comparison on basicmotions (train_time_blas_check.json); "
        "the report includes it",
    )
    ap.add_argument(
        "--defaults-only",
        action="store_true",
        help="only each case's defaults run (train_time_defaults.json): a rerun at another load",
    )
    ap.add_argument(
        "--cached-before",
        action="store_true",
        help="use only cached 'before' runs (a case without one is reported as not run)",
    )
    args = ap.parse_args()
    data = {"basicmotions": "basicmotions", "pickup_gesture": str(pickup_gesture(args.cache))}
    cases = {c: data[c] for c in args.cases.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)
    cache_file = args.out / "train_time_before.json"
    check_file = args.out / "train_time_thread_check.json"
    blas_file = args.out / "train_time_blas_check.json"
    if args.defaults_only:
        keep = ("wall_s", "cpu_s", "loadavg_start", "loadavg_end", "metrics", "phases")
        with tempfile.TemporaryDirectory() as tmp:
            runs = {c: run_train(ROOT, spec, [], Path(tmp)) for c, spec in cases.items()}
        out = {c: {k: r[k] for k in keep} for c, r in runs.items()}
        (args.out / "train_time_defaults.json").write_text(json.dumps(out, indent=1))
        print(json.dumps(out, indent=1))
        return 0
    if args.blas_check:
        with tempfile.TemporaryDirectory() as tmp:
            blas = blas_check(Path(tmp))
        blas_file.write_text(json.dumps(blas, indent=1))
        print(json.dumps(blas, indent=1))
        return 0
    if args.thread_check:
        with tempfile.TemporaryDirectory() as tmp:
            check = thread_check(args.baseline, data["pickup_gesture"], Path(tmp))
        check_file.write_text(json.dumps(check, indent=1))
        print(json.dumps(check, indent=1))
        return 0
    if args.from_results:  # the runs of the last --json run, with the before cache as it is now
        raw = json.loads((args.out / "train_time.json").read_text())["raw"]
        after, threads = raw["after"], raw["threads"]
        before = before_runs(args.baseline, cases, cache_file, ROOT, run_missing=False)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            before = before_runs(
                args.baseline, cases, cache_file, Path(tmp), run_missing=not args.cached_before
            )
            if args.only_before:
                return 0
            after, threads = after_runs(cases, Path(tmp))
    res = {
        "before_revision": args.baseline,
        "loadavg_end": os.getloadavg(),
        "cases": summarize(before, after, args.baseline),
        "threads": {
            k: {
                "cpu_s": [r["cpu_s"] for r in runs],
                "wall_s": [r["wall_s"] for r in runs],
                "loadavg_start": [r["loadavg_start"][0] for r in runs],
            }
            for k, runs in threads.items()
        },
        "thread_check": json.loads(check_file.read_text()) if check_file.exists() else None,
        "blas_check": json.loads(blas_file.read_text()) if blas_file.exists() else None,
        "raw": {"after": after, "threads": threads},
    }
    for case, c in res["cases"].items():
        print(
            f"{case}: defaults {c['default_wall_s']} s wall (target {c['target_wall_s']:.0f}), "
            f"{c['default_cpu_s']} s CPU, load {c['default_loadavg']}; accuracy "
            f"{c['accuracy_after_842']}, delta {c['accuracy_delta_pts']} pts"
        )
    if args.json:
        (args.out / "train_time.json").write_text(json.dumps(res, indent=1))
        (args.out / "train_time.md").write_text(markdown(res))
        print(f"wrote {args.out}/train_time.json and train_time.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
