"""How long `edge-agent train` takes with its defaults, per phase, before and after.

``python -m bench.train_time --json`` trains two cases, one process per run, one run at
a time:

- ``basicmotions``: the bundled set (40 training series, 6 channels, length 100);
- ``pickup_gesture``: PickupGestureWiimoteZ as the aeon 1.6.0 wheel ships it (50
  training series of up to 361 samples, one channel, 10 classes; padded to 361 by the
  loader), fetched with ``pip download`` into the bench cache like ``bench/real_drift``.

Each case runs this checkout's defaults (``--bits 4``: the time targets, 3 and 5 minutes
of wall time) and ``--bits 8,4,2`` (accuracy per bit-width). The "before" numbers run the
same commands on an older revision (``--baseline REV``, default the one recorded in
``BEFORE``), extracted with ``git archive``; they are cached in
``bench/results/train_time_before.json`` per revision, since the old defaults take many
minutes. Time per phase comes from the train command's own timer, or for an older
revision from wrapped functions (``bench/train_time_run.py``); totals are the child
process's wall time and CPU time (``RUSAGE_CHILDREN``: user + system, all threads).
Every run records the load average before and after: this machine is shared, so wall
times move with it while CPU times move much less.
"""

from __future__ import annotations

import argparse
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


def run_train(src: Path, data: str, extra: list[str], workdir: Path) -> dict[str, Any]:
    """One `train` run of ``src`` in a child process: its result, wall, CPU and load."""
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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
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
    rev: str, cases: dict[str, str], cache_file: Path, tmp: Path
) -> dict[str, dict[str, Any]]:
    """The older revision's ``bits_842`` run per case, cached in ``cache_file``."""
    cached: dict[str, Any] = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    mine = cached.setdefault(rev, {})
    missing = [c for c in cases if c not in mine]
    if missing:
        src = extract_revision(rev, tmp / "before")
        for case in missing:
            print(f"before ({rev}) {case}:", flush=True)
            mine[case] = run_train(src, cases[case], RUNS["bits_842"], tmp)
            cache_file.write_text(json.dumps(cached, indent=1))
    return {c: mine[c] for c in cases}


def default_time_from_842(run: dict[str, Any]) -> dict[str, float]:
    """An older revision's defaults (``--bits 4``) from its 8,4,2 run: the run's totals
    less its 8- and 2-bit QAT phases (the other phases do not depend on the bit list;
    the flipper's episodes draw a bit-width each, at about the same cost)."""
    extra = [run["phases"].get(f"QAT {b}-bit", {}) for b in (8, 2)]
    return {
        "wall_s": round(run["wall_s"] - sum(p.get("wall_s", 0.0) for p in extra), 1),
        "cpu_s": round(run["cpu_s"] - sum(p.get("cpu_s", 0.0) for p in extra), 1),
    }


def summarize(
    before: dict[str, Any], after: dict[str, dict[str, Any]], rev: str
) -> dict[str, Any]:
    """Per case: times, phases, accuracies before/after and whether the targets hold."""
    cases: dict[str, Any] = {}
    for case, runs in after.items():
        acc_after = runs["bits_842"]["metrics"]
        acc_before = before[case]["metrics"]
        keys = sorted(k for k in acc_before if k.endswith("_test_accuracy"))
        delta = {k: round(100 * (acc_after[k] - acc_before[k]), 2) for k in keys}
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
            "accuracy_after": acc_after,
            "accuracy_before": acc_before,
            "accuracy_delta_pts": delta,
            "accuracy_target_met": all(v >= -ACCURACY_TOLERANCE_PTS for v in delta.values()),
            "before_revision": rev,
            "before_bits_842_wall_s": before[case]["wall_s"],
            "before_bits_842_cpu_s": before[case]["cpu_s"],
            "before_bits_842_phases": before[case]["phases"],
            "before_bits_842_loadavg": [before[case]["loadavg_start"], before[case]["loadavg_end"]],
            "before_default_derived": default_time_from_842(before[case]),
        }
    return cases


def _phase_table(phases: dict[str, dict[str, float]]) -> list[str]:
    return [f"| {k} | {v['cpu_s']:.1f} | {v['wall_s']:.1f} |" for k, v in phases.items()]


def markdown(res: dict[str, Any]) -> str:
    """The report: one table of totals, then the phases of every run."""
    lines = [
        "# `edge-agent train` time (`python -m bench.train_time --json`)",
        "",
        f"Machine: {os.cpu_count()} cores, shared; wall times move with the load average "
        "(given per run), CPU times (all threads) much less. Before: revision "
        f"`{res['before_revision']}` with its defaults. Accuracy: torch fake-quant, test split.",
        "",
        "| case | defaults wall s (target) | CPU s | load 1m | before wall s / CPU s "
        "(derived) | accuracy after (8/4/2-bit, FP) | before | delta pts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, c in res["cases"].items():
        acc = c["accuracy_after"]
        bef = c["accuracy_before"]

        def fmt(a: dict[str, float]) -> str:
            bits = "/".join(f"{100 * a[f'q{b}_test_accuracy']:.1f}" for b in (8, 4, 2))
            return f"{bits}, {100 * a['fp_test_accuracy']:.1f}"

        lines.append(
            f"| {case} | {c['default_wall_s']:.0f} ({c['target_wall_s']:.0f}, "
            f"{'met' if c['wall_target_met'] else 'missed'}) | {c['default_cpu_s']:.0f} | "
            f"{c['default_loadavg'][0][0]:.1f} -> {c['default_loadavg'][1][0]:.1f} | "
            f"{c['before_default_derived']['wall_s']:.0f} / "
            f"{c['before_default_derived']['cpu_s']:.0f} | {fmt(acc)} | {fmt(bef)} | "
            f"{', '.join(f'{v:+.1f}' for v in c['accuracy_delta_pts'].values())} |"
        )
    for case, c in res["cases"].items():
        for title, key in (
            ("defaults", "default_phases"),
            ("--bits 8,4,2", "bits_842_phases"),
            (f"before ({res['before_revision']}), --bits 8,4,2", "before_bits_842_phases"),
        ):
            lines += ["", f"## {case}, {title}", "", "| phase | CPU s | wall s |", "|---|---|---|"]
            lines += _phase_table(c[key])
    return "\n".join(lines) + "\n"


def main() -> int:
    """Run the cases; write ``train_time.{json,md}``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", action="store_true", help="write bench/results/train_time.json/md")
    ap.add_argument("--baseline", default=BEFORE, help=f"revision for 'before' (default {BEFORE})")
    ap.add_argument("--cases", default="basicmotions,pickup_gesture")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = ap.parse_args()
    data = {"basicmotions": "basicmotions", "pickup_gesture": str(pickup_gesture(args.cache))}
    cases = {c: data[c] for c in args.cases.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        before = before_runs(args.baseline, cases, args.out / "train_time_before.json", Path(tmp))
        after: dict[str, dict[str, Any]] = {}
        for case, spec in cases.items():
            print(f"after {case}:", flush=True)
            after[case] = {k: run_train(ROOT, spec, extra, Path(tmp)) for k, extra in RUNS.items()}
    res = {
        "before_revision": args.baseline,
        "loadavg_end": os.getloadavg(),
        "cases": summarize(before, after, args.baseline),
    }
    for case, c in res["cases"].items():
        print(
            f"{case}: defaults {c['default_wall_s']} s wall (target {c['target_wall_s']:.0f}), "
            f"{c['default_cpu_s']} s CPU, load {c['default_loadavg']}; accuracy delta "
            f"{c['accuracy_delta_pts']} pts"
        )
    if args.json:
        (args.out / "train_time.json").write_text(json.dumps(res, indent=1))
        (args.out / "train_time.md").write_text(markdown(res))
        print(f"wrote {args.out}/train_time.json and train_time.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
