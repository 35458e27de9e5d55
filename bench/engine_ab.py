"""A/B of two checkouts' engines on one bundle, in alternating child processes.

    python bench/engine_ab.py OLD_CHECKOUT NEW_CHECKOUT BUNDLE [--reps 8] [--bits 8]

For changes :mod:`bench.kernel_ab` cannot compare (two kernel builds in one process need the
same model plan; a change to the plan's tables or the engine's Python path does not keep it).
Each checkout runs ``Engine.predict_logits`` in a fresh process of this interpreter with
``PYTHONPATH`` set to it and its own AOT kernels (built first, into a temporary kernel
cache, with ``edge-agent compile-kernels``); the processes alternate
``--reps`` times (old, new, then new, old, ...), each timing batch 1 and 64 by thread CPU time
(best of 5 blocks). Prints best and median per batch, the new/old speedups, whether the two
gave the same logits, and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.inference_extras import json_child  # noqa: E402

_CHILD = """
import json, sys, time
import numpy as np
from edge_agent.engine.engine import Engine
e = Engine.from_path(sys.argv[1], bits=int(sys.argv[2]))
assert e.backend == "aot", e.backend
out = {}
for n in (1, 64):
    size = n * int(np.prod(e.input_shape))
    x = np.sin(np.arange(size, dtype=np.float32)).reshape(n, *e.input_shape)
    out[f"logits{n}"] = e.predict_logits(x).tolist()
    reps = max(1, 20000 // n)
    blocks = []
    for _ in range(5):
        t = time.thread_time_ns()
        for _ in range(reps):
            e.predict_logits(x)
        blocks.append((time.thread_time_ns() - t) / reps / n / 1e3)
    out[f"b{n}"] = min(blocks)
print(json.dumps(out))
"""


def _env(checkout: Path, cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "EDGE_AGENT_JIT_CACHE": str(cache),
        "EDGE_AGENT_KERNELS": "aot",
        "OPENBLAS_NUM_THREADS": "1",
    }


def _build(checkout: Path, cache: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "compile-kernels"],
        cwd=checkout,
        env=_env(checkout, cache),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"compile-kernels failed in {checkout}:\n{done.stderr[-2000:]}")


def _time(checkout: Path, cache: Path, bundle: Path, bits: int) -> dict[str, Any]:
    argv = ["-c", _CHILD, str(bundle), str(bits)]
    return json_child(argv, checkout, _env(checkout, cache), f"the engine in {checkout}")


def main(argv: list[str] | None = None) -> int:
    """Print the A/B of the two checkouts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--bits", type=int, default=8)
    args = parser.parse_args(argv)
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    runs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        caches = {name: Path(tmp) / name for name in sides}
        for name, checkout in sides.items():
            _build(checkout, caches[name])
        for r in range(args.reps):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for name in order:
                bundle = args.bundle.resolve()
                runs[name].append(_time(sides[name], caches[name], bundle, args.bits))
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{args.bundle.name}, {args.bits}-bit, {args.reps} alternations; load average {load}")
    for b in ("b1", "b64"):
        old = [float(d[b]) for d in runs["old"]]
        new = [float(d[b]) for d in runs["new"]]
        print(
            f"{b}: us/sample old {min(old):.3f} / {statistics.median(old):.3f}, new "
            f"{min(new):.3f} / {statistics.median(new):.3f} (best / median); new/old "
            f"{min(old) / min(new):.3f} (best), "
            f"{statistics.median(old) / statistics.median(new):.3f} (median)"
        )
    same = all(runs["old"][0][f"logits{n}"] == runs["new"][0][f"logits{n}"] for n in (1, 64))
    print(f"same logits: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
