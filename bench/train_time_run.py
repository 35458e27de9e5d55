"""One timed `edge-agent train` run for ``bench/train_time.py``, in its own process.

``python -m bench.train_time_run --src DIR --result OUT.json -- TRAIN ARGS...`` imports
``edge_agent`` from ``DIR`` (this checkout, or an older revision extracted by the bench
for the "before" numbers), runs the CLI's ``train`` command and writes the test
accuracies and the time per phase. A revision whose ``train_bundle`` takes a ``timer``
reports its own phases; an older one is timed by wrapping the functions each phase runs
in (FP training, QCore snapshots, QAT per bit-width, export, flipper episodes and
network), so before and after are cut the same way.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


def _phase_timer_class() -> Any:
    """PhaseTimer from this checkout (an older ``--src`` has none)."""
    spec = importlib.util.spec_from_file_location(
        "_bench_phases", HERE / "edge_agent/training/phases.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_bench_phases"] = mod  # dataclasses resolve the module by name
    spec.loader.exec_module(mod)
    return mod.PhaseTimer


def _timed(timer: Any, name: str | Callable[..., str], fn: Callable[..., Any]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with timer.phase(name(*args, **kwargs) if callable(name) else name):
            return fn(*args, **kwargs)

    return wrapper


def _wrap_legacy(timer: Any) -> None:
    """Time an older revision's phases by wrapping the functions they call."""
    from edge_agent.training import fit as fit_mod
    from edge_agent.training import flip_train, pipeline, qcore_build

    fit_mod.train_fp = _timed(timer, "FP training", fit_mod.train_fp)
    qat = fit_mod.train_qat
    fit_mod.train_qat = _timed(timer, lambda *a, **k: f"QAT {a[3]}-bit", qat)
    call = qcore_build.MissTracker.__call__
    qcore_build.MissTracker.__call__ = _timed(timer, "QCore snapshots", call)  # type: ignore[method-assign]
    for fn in ("qcore_extras", "build_bundle", "with_statistics"):
        if hasattr(pipeline, fn):
            setattr(pipeline, fn, _timed(timer, "export", getattr(pipeline, fn)))
    flip_train.episode_examples = _timed(timer, "flipper episodes", flip_train.episode_examples)
    pipeline.train_flipper = _timed(timer, "flipper network", pipeline.train_flipper)


def main() -> int:
    """Run the train command under ``--src``; write ``--result``."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--src", type=Path, required=True, help="checkout to import edge_agent from")
    ap.add_argument("--result", type=Path, required=True, help="JSON file to write")
    ap.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train's arguments")
    args = ap.parse_args()
    train_args = [a for a in args.train_args if a != "--"]
    sys.path.insert(0, str(args.src.resolve()))
    PhaseTimer = _phase_timer_class()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    from edge_agent import cli

    if hasattr(cli, "_blas_threads"):  # as the train command does, before numpy loads
        i = train_args.index("--threads") if "--threads" in train_args else -1
        cli._blas_threads(int(train_args[i + 1]) if i >= 0 else 1)
    from edge_agent.training import pipeline

    seen: dict[str, Any] = {}
    original = pipeline.train_bundle
    own_timer = "timer" in inspect.signature(original).parameters
    timer = PhaseTimer()
    if not own_timer:
        _wrap_legacy(timer)

    def train_bundle(*a: Any, **k: Any) -> Any:
        bundle, metrics = original(*a, **k)
        seen["metrics"] = metrics
        seen["timer"] = k.get("timer") if own_timer else timer
        return bundle, metrics

    pipeline.train_bundle = train_bundle
    rc = cli.main(["train", *train_args])
    used = seen.get("timer")
    result = {
        "rc": rc,
        "src": str(args.src),
        "own_phase_timer": own_timer,
        "train_args": train_args,
        "metrics": seen.get("metrics", {}),
        "phases": used.as_dict() if used is not None else {},
        "process_cpu_s": round(time.process_time() - cpu0, 3),
        "wall_s": round(time.perf_counter() - wall0, 3),
    }
    args.result.write_text(json.dumps(result, indent=1))
    return int(rc)


if __name__ == "__main__":
    raise SystemExit(main())
