"""Side by side: the agent's default path in several ``bench/real_drift.py`` runs.

For every (set, drift, seed) case at 4 bits with labels on 20% of the stream, the
default path's held-out accuracy after calibration and its forgetting (points lost on
clean held-out samples) in each run; then each run's per-kind recovery, watch_side's
recovery and largest forgetting. A before/after check of one change on the same cached
bundles (runs on other machines train other bundles: compare only runs of one cache).

    python -m bench.real_drift --sets watch_side --seeds 0 --bits 4 --methods default \\
        --kinds injected,real --out /tmp/before --json
    (change the agent, run again with --out /tmp/after)
    python -m bench.real_drift_compare /tmp/before/real_drift.json /tmp/after/real_drift.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

Case = tuple[str, str, int]


def default_path(run: dict[str, Any]) -> dict[Case, tuple[float, float, float, float]]:
    """(set, drift, seed) -> before, right after, after, clean after of the default path."""
    out = {}
    for c in run["cases"]:
        m = c["methods"].get("default")
        if (
            c["bits"] == 4
            and c["label_fraction"] == 0.2
            and c["kind"] in ("injected", "real")
            and m
        ):
            out[(c["set"], c["drift"], c["seed"])] = (
                m["before"],
                m["right_after"],
                m["after"],
                m["clean_after"],
            )
    return out


def table(runs: dict[str, dict[str, Any]]) -> str:
    """The side-by-side text (see module)."""
    cases = {name: default_path(r) for name, r in runs.items()}
    keys = sorted({k for c in cases.values() for k in c}, key=lambda k: (k[1], k[0], k[2]))
    head = " | ".join(f"{Path(n).stem[:15]:>15s}" for n in runs)
    lines = [f"{'set/drift/seed':32s} before right |  {head}   (after, forgetting pts)"]
    for k in keys:
        first = next(c[k] for c in cases.values() if k in c)
        cells = []
        for c in cases.values():
            if k in c:
                b, _, a, clean = c[k]
                cells.append(f"{100 * a:6.1f} {100 * (b - clean):+6.1f}  ")
            else:
                cells.append(" " * 15)
        lines.append(
            f"{'/'.join(map(str, k)):32s} {100 * first[0]:6.1f} {100 * first[1]:5.1f} |  "
            + " | ".join(cells)
        )
    for name, r in runs.items():
        side = (r.get("per_set_recovery_4bit") or {}).get("watch_side")
        kinds = {k: round(v, 3) for k, v in (r.get("per_kind_recovery_4bit") or {}).items()}
        lines.append(
            f"{name}: per_kind_recovery_4bit {kinds}; watch_side {side and round(side, 3)}; "
            f"mean_recovery_4bit {r.get('mean_recovery_4bit')}; "
            f"max_forgetting_pts {r.get('max_forgetting_pts')}"
        )
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="real_drift.json files")
    args = ap.parse_args()
    print(table({str(p): json.loads(p.read_text()) for p in args.runs}))


if __name__ == "__main__":
    main()
