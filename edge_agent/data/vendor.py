"""Rebuild the vendored ``.npz`` data sets from the raw public files.

Usage: ``python -m edge_agent.data.vendor SHARED_DATA_DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_agent.data.datasets import VENDORED_DIR, load_digits_csv, load_ts_pair, save_npz


def main(argv: list[str] | None = None) -> int:
    """Convert BasicMotions, GunPoint and digits into ``edge_agent/data/vendored``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m edge_agent.data.vendor SHARED_DATA_DIR\n")
        return 2
    src = Path(args[0])
    sets = {
        "basicmotions": load_ts_pair(src / "uea" / "BasicMotions_TRAIN.ts"),
        "gunpoint": load_ts_pair(src / "uea" / "GunPoint_TRAIN.ts"),
        "digits": load_digits_csv(src / "digits.csv.gz"),
    }
    for name, ds in sets.items():
        save_npz(ds, VENDORED_DIR / f"{name}.npz")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
