"""Where a flip round's CPU and peak memory go, measured as ``bench/real_drift.py`` does.

Replays one real-drift set's stream (the same cut, seed and labels as the benchmark's
4-bit real case) through the controller on the every-chunk flip path, with thread CPU
time and the tracemalloc peak attributed to phases: the stream side (prescore and
``observe`` of every sample), the QCore buffer update, the round's features, the flip
network, the candidates' traced passes, the gate's evaluations, weight copies and swaps.
A phase's time is exclusive (a phase inside another is not counted twice); its peak is
the highest traced memory, above what was allocated when the job started, reached while
it was the innermost phase.

    python -m bench.round_profile --set watch_side --seed 0 [--json]

Memory runs with tracemalloc on (slower); CPU runs without it, ``--reps`` times,
min and median per phase.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import zlib  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from bench.real_drift_data import load_split, stream_items  # noqa: E402

LABEL_FRACTION = 0.2  # as bench/real_drift.py


class Phases:
    """Exclusive thread CPU and innermost-phase memory peaks of wrapped callables."""

    def __init__(self, memory: bool) -> None:
        self.memory = memory
        self.cpu: dict[str, float] = defaultdict(float)
        self.peak: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[str] = []
        self._t = 0.0
        self._base = 0
        self.active = False  # only inside a job (the stream side calls the same functions)

    def reset(self, memory: bool) -> None:
        """Forget what was counted; measure memory from now on or not."""
        self.memory = memory
        self.cpu.clear()
        self.peak.clear()
        self.calls.clear()

    def _switch(self) -> None:
        """Charge the time (and peak) since the last switch to the innermost phase."""
        now = time.thread_time()
        top = self._stack[-1] if self._stack else "other"
        self.cpu[top] += now - self._t
        self._t = now
        if self.memory:
            peak = tracemalloc.get_traced_memory()[1] - self._base
            self.peak[top] = max(self.peak[top], peak)
            tracemalloc.reset_peak()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count what runs inside as ``name`` (minus inner phases)."""
        if not self.active:
            yield
            return
        self._switch()
        self._stack.append(name)
        self.calls[name] += 1
        try:
            yield
        finally:
            self._switch()
            self._stack.pop()

    def start_job(self) -> None:
        """A new job: peaks from here are measured above what is allocated now."""
        self.active = True
        self._t = time.thread_time()
        if self.memory:
            self._base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()

    def end_job(self) -> None:
        """The job is over: the rest of its time goes to "other"."""
        self._switch()
        self.active = False

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """Replace ``owner.attr`` (a function or method) by a timed version."""
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            # a name with "{}" is an engine pass: which phase asked for it goes in
            where = self._stack[-1] if self._stack else "round"
            with self.phase(name.format(where.split(" <- ")[-1])):
                return fn(*a, **k)

        setattr(owner, attr, timed)


def instrument(p: Phases) -> None:
    """Wrap the round's parts (module attributes as flip_round and the controller see them)."""
    from edge_agent.calibrate import controller, flip_round, gate, qcore
    from edge_agent.engine.engine import Engine

    p.wrap(qcore.QCoreBuffer, "update", "buffer update")
    p.wrap(flip_round, "layer_trace", "features: layer traces")
    p.wrap(flip_round, "layer_feature", "features: per-weight")
    p.wrap(flip_round.FlipNet, "propose", "flip net forward")
    p.wrap(flip_round, "select_flips", "select + apply flips")
    p.wrap(flip_round, "apply_flips", "select + apply flips")
    p.wrap(flip_round.BitFlipCalibrator, "deployed_codes", "weight copies")
    p.wrap(flip_round.BitFlipCalibrator, "residuals", "weight copies")
    p.wrap(Engine, "layer_codes", "weight copies")
    p.wrap(Engine, "swap_weights", "weight swaps (pack)")
    p.wrap(Engine, "trace", "engine trace <- {}")
    p.wrap(flip_round, "suffix_pass", "candidates from first changed layer")
    p.wrap(Engine, "predict_logits", "engine predict <- {}")
    p.wrap(gate, "guard_base", "gate: training-domain check")
    p.wrap(flip_round.BitFlipCalibrator, "_now_and_new", "gate: held-out, recent, unseen")
    p.wrap(flip_round.BitFlipCalibrator, "_candidate_pass", "candidates")
    p.wrap(controller.CalibrationController, "_base_check", "gate: training-domain check")
    p.wrap(controller.RoutedPredictor, "predict_logits", "gate: training-domain check")


def replay(split: Any, bundle: Any, seed: int, p: Phases | None) -> dict[str, Any]:
    """The benchmark's every-chunk replay of the 4-bit real case; per job (CPU s, peak)."""
    import dataclasses

    from bench import real_drift_methods as m
    from edge_agent.calibrate.calibration_config import CalibrationConfig
    from edge_agent.calibrate.controller import CalibrationController
    from edge_agent.engine.engine import Engine

    rng = np.random.default_rng([seed, zlib.crc32(f"real|real|{LABEL_FRACTION}".encode())])
    data = stream_items(split.X, split.y, split.stream, LABEL_FRACTION, rng)
    # the benchmark's flip path: every chunk, the QCore draw (where this build has a choice)
    names = {f.name for f in dataclasses.fields(CalibrationConfig)}
    draw = {"buffer_draw": "qcore"} if "buffer_draw" in names else {}
    cfg = dataclasses.replace(CalibrationConfig(), **m.every_chunk(), **draw)
    ctl = CalibrationController(bundle, cfg)
    engine = Engine(bundle, bits=4)
    stream_cpu, rounds, jobs = 0.0, [], 0
    t0 = time.thread_time()
    ctl.prescore(data.X)
    stream_cpu += time.thread_time() - t0
    for i in range(len(data.y)):
        ctl.predictor(engine, count=True).predict(data.X[i][None])
        t0 = time.thread_time()
        ctl.observe(data.X[i], int(data.y[i]) if data.labelled[i] else None, i)
        stream_cpu += time.thread_time() - t0
        while ctl.due():
            jobs += 1
            if p is not None:
                p.start_job()
            t0 = time.thread_time()
            result = ctl.run(engine)
            cpu = time.thread_time() - t0
            if p is not None:
                p.end_job()
            if result is not None:
                rounds.append(cpu)
    return {"stream_cpu_s": stream_cpu, "round_cpu_s": rounds, "jobs": jobs}


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--set", default="watch_side")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/edge-agent-bench")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--cpu-only", action="store_true", help="rounds' CPU alone (no phases: any build)"
    )
    args = ap.parse_args()
    from bench.real_drift_train import trained

    split = load_split(args.set, args.cache, args.seed)
    bundle, _, _ = trained(split, args.seed, args.cache)
    load0 = os.getloadavg()
    plain = [replay(split, bundle, args.seed, None) for _ in range(args.reps)]
    if args.cpu_only:
        per = [min(r) for r in zip(*(q["round_cpu_s"] for q in plain), strict=True)]
        print(
            json.dumps(
                {
                    "set": args.set,
                    "seed": args.seed,
                    "rounds": len(per),
                    "round_cpu_s_min_median_mean": [
                        min(per),
                        statistics.median(per),
                        sum(per) / len(per),
                    ],
                    "stream_cpu_s_min": min(q["stream_cpu_s"] for q in plain),
                    "loadavg": [load0, os.getloadavg()],
                }
            )
        )
        return
    p = Phases(memory=False)
    instrument(p)
    timed = replay(split, bundle, args.seed, p)
    cpu = dict(p.cpu)
    p.reset(memory=True)
    tracemalloc.start()
    replay(split, bundle, args.seed, p)
    tracemalloc.stop()
    peak = dict(p.peak)
    per_round = [min(r) for r in zip(*(q["round_cpu_s"] for q in plain), strict=True)]
    n = len(per_round)
    out = {
        "set": args.set,
        "seed": args.seed,
        "rounds": n,
        "jobs": plain[0]["jobs"],
        "round_cpu_s_min_median": [min(per_round), statistics.median(per_round)],
        "round_cpu_s_mean": sum(per_round) / n,
        "stream_cpu_s_min": min(q["stream_cpu_s"] for q in plain),
        "phases_cpu_s_per_round": {k: v / n for k, v in sorted(cpu.items())},
        "instrumented_round_cpu_s_mean": sum(timed["round_cpu_s"]) / n,
        "phases_peak_mb": {k: v / 2**20 for k, v in sorted(peak.items())},
        "loadavg": [load0, os.getloadavg()],
    }
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"{args.set} seed {args.seed}: {n} rounds of {out['jobs']} jobs; round CPU min "
        f"{min(per_round) * 1e3:.1f} ms, median {statistics.median(per_round) * 1e3:.1f} ms, "
        f"mean {out['round_cpu_s_mean'] * 1e3:.1f} ms; stream side "
        f"{out['stream_cpu_s_min'] * 1e3:.0f} ms in all; load {load0} -> {os.getloadavg()}"
    )
    print(f"{'phase':34s} {'ms/round':>9s} {'peak MB':>8s}")
    for k in sorted(cpu, key=lambda k: -cpu[k]):
        print(f"{k:34s} {cpu[k] / n * 1e3:9.2f} {peak.get(k, 0.0) / 2**20:8.2f}")


if __name__ == "__main__":
    main()
