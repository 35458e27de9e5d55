"""What importing river's drift detectors would cost the agent: import time and peak RSS
of ``import numpy`` then ``from river.drift import PageHinkley, ADWIN``, in a fresh
process (the reason edge_agent/calibrate/drift_signal.py has its own CUSUM).

river is not a dependency: install it somewhere apart first, e.g.
``pip install --target /tmp/river river``, then
``python bench/drift_import_cost.py --path /tmp/river`` (writes
bench/results/drift_import_cost.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import resource, sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter(); r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from river.drift import ADWIN, PageHinkley
t2 = time.perf_counter(); r2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import river
print(river.__version__, t1 - t0, r1 / 1024, t2 - t1, r2 / 1024,
      sum(m.split('.')[0] in ('scipy', 'narwhals', 'pandas') for m in sys.modules))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--path", required=True, help="where river was installed (--target)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, args.path], capture_output=True, text=True, check=True
    ).stdout.split()
    res = {
        "river": out[0],
        "numpy_import_s": float(out[1]),
        "numpy_peak_rss_mb": float(out[2]),
        "river_drift_import_s": float(out[3]),
        "peak_rss_mb_after": float(out[4]),
        "river_extra_mb": float(out[4]) - float(out[2]),
        "heavy_modules": int(out[5]),
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(res, indent=1))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "drift_import_cost.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
