"""watch_side at 4 bits, the default path with and without label rounds: held-out accuracy
after the drifted replay, clean accuracy (clean_b, never streamed) after it and after the
stream returned to the train domain (the real_drift bench's return case, same streams).

    python -m bench.label_return_check 0 1 2
"""

import os
import sys
import zlib
from pathlib import Path

import numpy as np

from bench import real_drift_methods as m
from bench.real_drift_data import RETURN_BACK, RETURN_DRIFT, load_split, stream_items
from bench.real_drift_train import trained


def main() -> None:
    """Command-line entry point: seeds as arguments."""
    c = Path.home() / ".cache/edge-agent-bench"
    print("loadavg", os.getloadavg())
    for seed in (int(a) for a in sys.argv[1:]):
        split = load_split("watch_side", c, seed)
        bundle, _, _ = trained(split, seed, c)

        def rng(kind: str, f: float, seed: int = seed) -> np.random.Generator:
            return np.random.default_rng([seed, zlib.crc32(f"{kind}|real|{f}".encode())])

        X, y = split.X, split.y
        data = stream_items(X, y, split.stream, 0.2, rng("real", 0.2))
        r = rng("return", 0.2)
        more = stream_items(X, y, split.stream, 0.2, r, RETURN_DRIFT)
        back = stream_items(X, y, split.clean_a, 0.2, r, RETURN_BACK)
        Xb, yb = X[split.clean_b], y[split.clean_b]
        for name, ov in (("default", {}), ("no_label", m.no_label())):
            o = m.replay(bundle, 4, data, ov, seed=seed, then=(more, back))
            assert o.returned is not None
            held = m.accuracy(o.engine, X[split.held], y[split.held])
            clean, ret = m.accuracy(o.engine, Xb, yb), m.accuracy(o.returned, Xb, yb)
            print(
                f"seed {seed} {name}: held {held:.3f} clean_b after drift {clean:.3f} "
                f"after return {ret:.3f}",
                flush=True,
            )
    print("loadavg", os.getloadavg())


if __name__ == "__main__":
    main()
