"""A/B of two AOT kernel builds on the same bundles, interleaved in one process.

    python bench/kernel_ab.py OLD_AOT_DIR BUNDLE [BUNDLE ...] [--new NEW_AOT_DIR] [--seconds 3]
                              [--bits B]

``OLD_AOT_DIR`` holds a module built from other kernel sources (e.g. ``git stash``, then
``python -c "from kernels.build import aot; from pathlib import Path;
aot.build(Path('/tmp/old'))"``); the new one is built here from the current sources unless
``--new`` names one. Both are loaded as files (the loader's staleness check would refuse
the old one), run the same model at batch 1 and 64 (a build from before the model
descriptor, ``kernels.plan.abi.descriptor``, gets the model's arrays and scalars as
separate arguments; builds older than the workspace argument cannot be compared), must
give the same logits bit for bit, and are timed by thread CPU time, interleaved (best and
median of 7). ``b0`` is a call whose one sample holds a NaN: the kernel rejects it at once,
so it times the call itself (the wrapper's argument conversion, the prologue).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_module(directory: Path) -> ModuleType:
    """The AOT extension module in ``directory``, imported from its file."""
    path = next(directory.glob("*.so"))
    spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_args(mod: ModuleType, st: Any) -> tuple[Any, ...]:
    """The model arguments ``mod.run_program`` takes: the descriptor, or (a build from
    before it, 19 arguments) the arrays and scalars themselves. Asked of the wrapper by
    calling it with none, which it refuses saying how many it expects."""
    try:
        mod.run_program()
    except TypeError as exc:
        legacy = "expected 19 arguments" in str(exc)
    return tuple(st.params) if legacy else tuple(st.args)


def main(argv: list[str] | None = None) -> int:
    """Print new/old rate ratios per bundle and batch."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--new", type=Path)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--bits", type=int, help="weight bits (default: the bundle's widest)")
    args = parser.parse_args(argv)

    from bench.cputime import interleaved
    from edge_agent.bundle_io import load_bundle
    from edge_agent.engine.engine import _NO_TRACE, _NO_TRACE_AT, Engine
    from kernels.build import aot
    from kernels.exec import backend
    from kernels.plan.tables import W_BYTES

    with tempfile.TemporaryDirectory() as tmpdir:
        new_dir = args.new
        if new_dir is None:
            new_dir = Path(tmpdir) / "aot"
            aot.build(new_dir)
        mods = {"old": load_module(args.old), "new": load_module(new_dir)}
        plan = backend.load("jit")  # only for the engine's model arguments (act offset)
        for path in args.bundles:
            bundle = load_bundle(path)
            st = Engine(bundle, bits=args.bits or max(bundle.quant), kernels=plan)._state
            rng = np.random.default_rng(0)
            cases: dict[str, tuple[Callable[[], Any], int]] = {}
            outs = {}
            for n in (0, 1, 64):  # 0: one NaN sample, which the kernel rejects at once
                xs = rng.normal(size=(max(n, 1), int(np.prod(bundle.input_shape))))
                xs = xs.astype(np.float32) if n else np.full_like(xs, np.nan, np.float32)
                # one workspace and one output for both builds: where they lie in memory
                # moved a build's batch-64 rate by 3% (a build against a copy of itself)
                out = np.empty((len(xs), bundle.num_classes), np.float32)
                work = np.empty(st.model.sizes[W_BYTES], np.uint8)
                for name, mod in mods.items():
                    call = (xs, *model_args(mod, st), out, _NO_TRACE, _NO_TRACE_AT, work)
                    fn = functools.partial(mod.run_program, *call)
                    fn()
                    outs[name, n] = out.copy()
                    cases[f"{name}/b{n}"] = (fn, max(n, 1))
            rates, info = interleaved(cases, args.seconds, reps=7)
            for n in (0, 1, 64):
                same = np.array_equal(outs["old", n], outs["new", n]) if n else "n/a"
                new, old = rates[f"new/b{n}"], rates[f"old/b{n}"]
                print(
                    f"{path.name} b{n}: new/old {new['cpu_best'] / old['cpu_best']:.3f} (best), "
                    f"{new['cpu_median'] / old['cpu_median']:.3f} (median); us/sample old "
                    f"{1e6 / old['cpu_best']:.2f}, new {1e6 / new['cpu_best']:.2f}; bit-exact "
                    f"{same}; load {info['loadavg_start'][0]:.1f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
