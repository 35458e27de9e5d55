"""Whether ``seattle_weather``'s drift renamed its labels: the weather type the record
gives wet days (precipitation > 0) and dry days in the train domain's years (2012-13) and
the drifted domain's (2014-15), and the precipitation itself. If the same inputs are
named differently later on, the clean part's old labels are no longer what a user of the
later record calls right, and a model that learns the new names must lose them
(``bench/real_drift_report.py`` reports that loss apart from ``max_forgetting_pts``).

    python -m bench.seattle_labels    # -> bench/results/seattle_labels.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.real_drift_sources import SEATTLE_CLASSES, seattle_record


def _counts(labels: np.ndarray) -> dict[str, int]:
    n = np.bincount(labels, minlength=len(SEATTLE_CLASSES))
    return dict(zip(SEATTLE_CLASSES, n.tolist(), strict=True))


def label_counts(cache: Path) -> dict[str, dict[str, object]]:
    """Per period: days, mean precipitation (mm), and the type counts of wet and dry days."""
    rec = seattle_record(cache)
    out: dict[str, dict[str, object]] = {}
    for name, part in (("2012-13", slice(0, rec.change)), ("2014-15", slice(rec.change, None))):
        rain, labels = rec.values[part, 0], rec.labels[part]
        wet = rain > 0
        out[name] = {
            "days": len(labels),
            "mean_precipitation": round(float(rain.mean()), 2),
            "wet_days": _counts(labels[wet]),
            "dry_days": _counts(labels[~wet]),
        }
    return out


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--out", type=Path, default=Path("bench/results/seattle_labels.json"))
    args = ap.parse_args()
    res = label_counts(args.cache)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
