"""``edge-agent demo``: the whole loop on one machine, in under a minute.

Starts the agent as a subprocess (ipc sockets in a temporary directory), replays the
bundled BasicMotions test split through the publisher with a drift injected part-way,
labels every K-th sample, prints a live status line, and ends with a table of accuracy
before the drift, after it, and after recalibration (once the agent reports accepted
calibrations), plus a PNG of rolling accuracy with the drift and calibrations marked.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from edge_agent.cli.args import check_output_file
from edge_agent.client import ClientError, Publisher, StatusClient, StreamItem, replay, stream
from edge_agent.data.drift import kinds_help
from edge_agent.service.config import local_config_text

DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "defaults" / "basicmotions.eab"
STOP_WAIT_S = 15.0  # as the unit's TimeoutStopSec
SETTLE_S = 30.0  # after the stream, the longest wait for calibration work in flight
ROLLING = 50


@dataclass
class Trace:
    """What the demo observed: predictions by sequence number and calibration rounds."""

    pred: dict[int, int] = field(default_factory=dict)
    version: dict[int, str] = field(default_factory=dict)  # model_version per prediction
    rounds: list[dict[str, Any]] = field(default_factory=list)  # status' rounds, in order
    calibrations: list[tuple[int, bool]] = field(default_factory=list)  # (seq, kept)

    def mark_rounds(self) -> None:
        """Every round at the sample where it took effect: a kept one where the prediction
        stream's model_version changes, a rolled-back one at the sample the agent had
        predicted last when it ended (both exact to the sample, not to a status poll)."""
        seqs = sorted(self.version)
        changes = [b for a, b in itertools.pairwise(seqs) if self.version[a] != self.version[b]]
        kept = [r["seq"] for r in self.rounds if r["kept"]]
        # two rounds kept between two predictions show as one change: use the agent's seq
        kept_at = changes + kept[len(changes) :]
        self.calibrations = sorted(
            [(s, True) for s in kept_at] + [(r["seq"], False) for r in self.rounds if not r["kept"]]
        )


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent demo``."""
    parser.add_argument(
        "--bundle",
        type=Path,
        default=DEFAULT_BUNDLE,
        help="model bundle (default: the bundled BasicMotions model)",
    )
    parser.add_argument(
        "--data", help="data set to replay (default: the one the bundle was trained on)"
    )
    parser.add_argument("--count", type=int, default=3000, help="samples (default 3000)")
    parser.add_argument("--rate", type=float, default=300.0, help="samples/s (default 300)")
    parser.add_argument(
        "--drift",
        default=None,
        metavar="KIND[:STRENGTH]@N",
        help="drift to inject (default rotation@1000; gain for series of fewer than 3 "
        "channels, rotate for images; at a third of a --count under 3000); " + kinds_help(),
    )
    parser.add_argument(
        "--labels-every",
        type=int,
        default=5,
        metavar="K",
        help="label every K-th sample (default 5)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=Path("demo-accuracy.png"),
        help="PNG to write (default demo-accuracy.png)",
    )
    parser.add_argument("--seed", type=int, default=0, help="stream seed (default 0)")


def demo_main(args: argparse.Namespace) -> int:
    """Run the demo; return the exit status."""
    from edge_agent.bundle_io import load_bundle
    from edge_agent.data import load_dataset
    from edge_agent.data.datasets import trained_data_spec
    from edge_agent.data.drift import Drift

    if args.count < 1 or args.labels_every < 0 or args.rate < 0:
        raise ValueError("--count must be >= 1, --labels-every and --rate >= 0")
    check_output_file(args.plot, "--plot")  # found now, not after the whole run
    drift = Drift.parse(args.drift) if args.drift else None
    bundle = load_bundle(args.bundle)
    args.data = args.data or trained_data_spec(bundle.meta)
    ds = load_dataset(args.data)
    if ds.input_shape != bundle.input_shape:
        raise ValueError(
            f"{args.data}: samples have shape {ds.input_shape}, the model in "
            f"{args.bundle} takes {bundle.input_shape}"
        )
    if drift is None:
        args.drift = default_drift(ds.input_shape, args.count)
        drift = Drift.parse(args.drift)
    drift.check(ds.input_shape, args.count)
    with tempfile.TemporaryDirectory(prefix="ea-demo-", dir="/tmp") as tmp:
        d = Path(tmp)
        config = d / "agent.toml"
        config.write_text(local_config_text(d, args.bundle.resolve(), '[log]\nlevel = "warning"\n'))
        log = open(d / "agent.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.service", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            status_ep = f"ipc://{d}/run/status.sock"
            _wait_ready(proc, status_ep, d / "agent.log")
            trace = _run_stream(args, ds, drift, d, status_ep)
        finally:
            proc.terminate()
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:  # a stop should take well under this
                proc.kill()
                proc.wait()
                print(f"the agent did not stop within {STOP_WAIT_S:.0f} s: killed", file=sys.stderr)
            log.close()
    y = _truth(ds, args)
    _print_table(trace, y, drift.start, args)
    _plot(trace, y, drift, args.plot)
    return 0


def default_drift(shape: tuple[int, ...], count: int) -> str:
    """The demo's drift for samples of ``shape``: one that changes them (rotation turns
    3-axis triplets), from sample 1000 or a third of a shorter stream."""
    kind = "rotate" if len(shape) == 3 else ("rotation" if shape[0] >= 3 else "gain")
    return f"{kind}@{min(1000, count // 3)}"


def _wait_ready(proc: subprocess.Popen[bytes], status_ep: str, log: Path) -> None:
    print("starting the agent (model load and JIT warm-up)...", file=sys.stderr)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the agent exited:\n{log.read_text()}")
        try:
            with StatusClient(status_ep, 1.0) as c:
                c.request("ping")
            return
        except ClientError:
            time.sleep(0.2)
    raise RuntimeError("the agent did not become ready within 180 s")


def _truth(ds: Any, args: argparse.Namespace) -> np.ndarray:
    return np.array([it.y for it in stream(ds.X_test, ds.y_test, args.count, args.seed)])


def _run_stream(args: argparse.Namespace, ds: Any, drift: Any, d: Path, status_ep: str) -> Trace:
    trace = Trace()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"pred/")
    sub.connect(f"ipc://{d}/out.sock")
    time.sleep(0.3)
    done = threading.Event()

    def receive() -> None:
        while not done.is_set() or sub.poll(0):
            if sub.poll(50):
                p = msgpack.unpackb(sub.recv_multipart()[1])
                trace.pred[p["seq"]] = p["class"]
                trace.version[p["seq"]] = p["model_version"]

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    items = stream(
        ds.X_test,
        ds.y_test,
        args.count,
        args.seed,
        drift.transform(args.seed),
        drift.start,
        args.labels_every,
    )
    stop = threading.Event()
    try:
        with Publisher(f"ipc://{d}/in.sock") as pub, StatusClient(status_ep) as status:
            sender = threading.Thread(
                target=replay, args=(pub, _until(stop, items), args.rate, "demo")
            )
            sender.start()
            try:
                seen = 0
                while sender.is_alive():
                    time.sleep(1.0)
                    seen, _ = _poll(status, trace, seen, args.count, drift.start)
                deadline = time.monotonic() + 10
                while len(trace.pred) < args.count and time.monotonic() < deadline:
                    time.sleep(0.05)
                _settle(status, trace, seen, args.count, drift.start)
            finally:  # Ctrl-C included: the sender stops before its socket closes
                stop.set()
                sender.join()
    finally:
        done.set()
        receiver.join()
        sub.close()
        ctx.term()
    trace.mark_rounds()
    print(file=sys.stderr)
    return trace


def _until(stop: threading.Event, items: Iterator[StreamItem]) -> Iterator[StreamItem]:
    """``items`` until ``stop`` is set."""
    for it in items:
        if stop.is_set():
            return
        yield it


def _poll(
    status: StatusClient, trace: Trace, seen: int, count: int, drift_at: int
) -> tuple[int, dict[str, Any]]:
    """One status poll: the live line, and the rounds finished since the last poll; the
    rounds seen so far and the calibration's status."""
    st = status.request("status")
    cal = st["calibration"]
    new = cal["done"] - seen
    if new > 0:
        trace.rounds.extend(cal.get("rounds", [])[-new:])
    _live_line(st, count, drift_at)
    return max(seen, cal["done"]), cal


def _settle(status: StatusClient, trace: Trace, seen: int, count: int, drift_at: int) -> None:
    """Poll until the calibration has no job in flight or waiting (at most
    :data:`SETTLE_S`): on a busy machine the niced calibration thread may still be on the
    round the drift triggered when the stream ends, and the table would miss it."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        seen, cal = _poll(status, trace, seen, count, drift_at)
        if not (cal.get("busy") or cal.get("jobs_waiting")) or time.monotonic() > deadline:
            return
        time.sleep(0.2)


def _live_line(st: dict[str, Any], count: int, drift_at: int) -> None:
    s, acc = st["samples"], st["accuracy"]["rolling"]
    phase = "after drift" if s["predicted"] >= drift_at else "before drift"
    print(
        f"\r{s['predicted']:>6}/{count} predicted ({phase}), "
        f"{st['prediction_rate_per_s']:6.0f}/s, rolling accuracy "
        f"{'  n/a' if acc is None else f'{acc:5.3f}'}, "
        f"calibrations {st['calibration']['accepted']}/{st['calibration']['done']}, "
        f"p99 {st['latency_ms']['p99'] or 0:.2f} ms   ",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _accuracy(trace: Trace, y: np.ndarray, lo: int, hi: int) -> tuple[float | None, int]:
    seqs = [s for s in range(lo, hi) if s in trace.pred]
    if not seqs:
        return None, 0
    return float(np.mean([trace.pred[s] == y[s] for s in seqs])), len(seqs)


def _print_table(trace: Trace, y: np.ndarray, drift_at: int, args: argparse.Namespace) -> None:
    # the first calibration the agent accepted after the drift began
    accepted = [seq for seq, ok in trace.calibrations if ok and seq > drift_at]
    recal_at = accepted[0] if accepted else None
    rows = [
        ("before drift", *_accuracy(trace, y, 0, drift_at)),
        ("after drift", *_accuracy(trace, y, drift_at, recal_at or len(y))),
    ]
    if recal_at is not None:
        rows.append(("after recalibration", *_accuracy(trace, y, recal_at, len(y))))
    print(
        f"\n{args.data}, drift {args.drift}, every {args.labels_every}th sample labelled, "
        f"{len(trace.pred)}/{len(y)} predicted"
    )
    print(f"{'phase':<22}{'accuracy':>10}{'samples':>9}")
    for name, acc, n in rows:
        print(f"{name:<22}{'n/a' if acc is None else f'{acc:.3f}':>10}{n:>9}")
    if recal_at is None:
        print(f"{'after recalibration':<22}{'n/a':>10}  (no calibration accepted after the drift)")
    kept = [seq for seq, ok in trace.calibrations if ok]
    print(
        f"calibration rounds: {len(trace.calibrations)} ({len(kept)} kept"
        + (f", at sample{'s' if len(kept) > 1 else ''} {', '.join(map(str, kept))}" if kept else "")
        + ")"
    )


def _plot(trace: Trace, y: np.ndarray, drift: Any, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed (pip install 'edge-agent[demo]'): no plot", file=sys.stderr
        )
        return
    if not trace.pred:
        print("no predictions came back: no plot", file=sys.stderr)
        return
    seqs = np.array(sorted(trace.pred))
    hit = np.array([trace.pred[s] == y[s] for s in seqs], dtype=np.float64)
    window = max(1, min(ROLLING, len(hit)))  # a short run: its whole length
    rolling = np.convolve(hit, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(seqs[window - 1 :], rolling, lw=1.2, label=f"rolling accuracy ({window})")
    ax.axvline(drift.start, color="tab:red", ls="--", label=f"drift: {drift.kind}")
    labelled: set[bool] = set()
    for seq, ok in trace.calibrations:
        label = None if ok in labelled else ("calibration kept" if ok else "rolled back")
        labelled.add(ok)
        ax.axvline(seq, color="tab:green" if ok else "tab:gray", ls=":", label=label)
    ax.set_xlabel("stream sample")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
