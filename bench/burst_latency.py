"""The agent's inference latency while its own QAT bursts run (the real agent, end to end).

Starts the agent as a subprocess on the bundled model, first with QAT bursts off, then
with bursts on and every energy limit off (the policy always allows a burst; bursts come
every ``--interval`` seconds). Each agent gets the same stream of BasicMotions test
samples (every second one labelled) over ipc at ``--rate`` samples/s for ``--seconds``;
the status socket is polled every 0.1 s for the burst state. With bursts on, every
prediction is put in the class of the burst state at the time it was received: ``burst``
(any part of a burst: gathering its pool and spawning the child, the child running -
torch import, coreset selection, training, export - and gating the candidate) or
``idle`` (none of it; the agent's flip-bit calibration rounds, which pause during
bursts, run then).

Reports p50 / p99 of the agent's latency (sample received -> prediction published, the
``latency_ms`` of every prediction) and of the end-to-end latency (send -> prediction
received) without bursts and in both classes with bursts, the p99 ratio during bursts /
without bursts, and the bursts' counters and CPU seconds. Between bursts, the agent's
latency is also split into the first ``AFTER_S`` seconds after a burst ends (the agent
swaps the accepted model in, saves it and restarts its calibration there) and later, and
the flip rounds of both agents are counted.

    python -m bench.burst_latency                       # 100 samples/s, 180 s per agent
    python -m bench.burst_latency --json                # one JSON object
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.agent_process import REPO, Agent, PredictionSink
from edge_agent.client import Publisher, replay, stream
from edge_agent.data import load_dataset
from edge_agent.service.config import local_config_text
from edge_agent.service.metrics import percentiles

DEFAULT_BUNDLE = REPO / "edge_agent" / "defaults" / "basicmotions.eab"
AFTER_S = 5.0  # "just after a burst": the first seconds after one ends


def _config(d: Path, bundle: Path, bursts: bool, interval_s: float) -> Path:
    path = d / "agent.toml"
    path.write_text(
        local_config_text(
            d,
            bundle,
            f"""
[energy]
burst_min_battery_percent = false
burst_max_temp_c = false
burst_max_load_per_cpu = false
burst_forbid_throttled = false
[bursts]
enabled = {str(bursts).lower()}
energy_poll_s = 0.5
switch_bits = false
[bursts.scheduler]
interval_s = {interval_s}
[log]
level = "info"
""",
        )
    )
    return path


class BurstStateLog:
    """A thread sampling the agent's burst state: ``(time, busy)`` every ``period_s``."""

    def __init__(self, agent: Agent, period_s: float = 0.1) -> None:
        self.samples: list[tuple[float, bool]] = []
        self._agent = agent
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            busy = self._agent.status()["bursts"].get("state", "idle") != "idle"
            self.samples.append((time.time(), busy))

    def busy_at(self, times: np.ndarray) -> np.ndarray:
        """Whether a burst was under way at each of ``times`` (the last state before it)."""
        if not self.samples:
            return np.zeros(len(times), dtype=bool)
        t = np.array([s[0] for s in self.samples])
        state = np.array([s[1] for s in self.samples])
        i = np.searchsorted(t, times, side="right") - 1
        return np.where(i >= 0, state[np.clip(i, 0, None)], False)

    def since_burst(self, times: np.ndarray) -> np.ndarray:
        """Seconds from the end of the last burst before each of ``times`` (inf: none yet)."""
        ends = [
            t
            for (t, b), (_, prev) in zip(self.samples[1:], self.samples, strict=False)
            if prev and not b
        ]
        if not ends:
            return np.full(len(times), np.inf)
        e = np.array(ends)
        i = np.searchsorted(e, times, side="right") - 1
        return np.where(i >= 0, times - e[np.clip(i, 0, None)], np.inf)

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


def _pcts(v: np.ndarray) -> dict[str, Any]:
    return {"n": len(v), **percentiles(v)}


def stream_through_agent(
    bundle: Path, rate: float, seconds: float, bursts: bool, interval_s: float
) -> dict[str, Any]:
    """One agent (bursts on or off), one labelled stream: latencies by burst state."""
    d = Path(tempfile.mkdtemp(prefix="ebl-", dir="/tmp"))
    ds = load_dataset("basicmotions")
    count = int(rate * seconds)
    agent = Agent(
        _config(d, bundle, bursts, interval_s), f"ipc://{d}/run/status.sock", d / "agent.log"
    )
    with agent:
        sink = PredictionSink(agent.endpoints["output"][0])
        states = BurstStateLog(agent)
        with Publisher(agent.endpoints["ingest"][0]) as pub:
            replay(
                pub,
                stream(ds.X_test, ds.y_test, count, seed=0, labels_every=2),
                rate,
                sensor="bench",
            )
        sink.wait_for(count, 30.0)
        sink.close()
        states.close()
        st = agent.status()
    recv = np.array([g[0] for g in sink.got])
    agent_ms = np.array([g[1]["latency_ms"] for g in sink.got])
    e2e_ms = (recv - np.array([g[1]["ts"] for g in sink.got])) * 1e3
    during = states.busy_at(recv)
    soon = ~during & (states.since_burst(recv) < AFTER_S)
    return {
        "lost": count - len(sink.got),
        "agent_ms": {
            "idle": _pcts(agent_ms[~during]),
            "burst": _pcts(agent_ms[during]),
            "idle_after_burst": _pcts(agent_ms[soon]),
            "idle_later": _pcts(agent_ms[~during & ~soon]),
        },
        "e2e_ms": {"idle": _pcts(e2e_ms[~during]), "burst": _pcts(e2e_ms[during])},
        "bursts": {k: v for k, v in st["bursts"].items() if k != "last"},
        "calibration_rounds": {k: st["calibration"].get(k) for k in ("done", "accepted")},
        "last_burst": st["bursts"].get("last"),
    }


def run(bundle: Path, rate: float, seconds: float, interval_s: float) -> dict[str, Any]:
    """The same stream through an agent without bursts, then through one with bursts."""
    off = stream_through_agent(bundle, rate, seconds, False, interval_s)
    on = stream_through_agent(bundle, rate, seconds, True, interval_s)
    base, burst = off["agent_ms"]["idle"]["p99"], on["agent_ms"]["burst"]["p99"]
    return {
        "rate_hz": rate,
        "seconds": seconds,
        "count": int(rate * seconds),
        "cpus": os.cpu_count(),
        "load_avg_1m_end": os.getloadavg()[0],
        "bursts_off": off,
        "bursts_on": on,
        "p99_ratio_burst_vs_no_bursts": burst / base if base and burst else None,
    }


def _cell(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def markdown(r: dict[str, Any]) -> str:
    """The result as a Markdown table with a caption."""
    on, off = r["bursts_on"], r["bursts_off"]
    b = on["bursts"]
    lines = [
        f"Agent latency with and without QAT bursts: the same {r['count']} BasicMotions samples "
        f"(every second one labelled) at {r['rate_hz']:.0f}/s over ipc to an agent with bursts "
        f"off, then to one with bursts on; {r['cpus']} CPUs, load average at the end "
        f"{r['load_avg_1m_end']:.1f}. Bursts started {b.get('started')}, accepted "
        f"{b.get('accepted')}, rolled back {b.get('rolled_back')}, "
        f"CPU {b.get('cpu_s_total', 0):.1f} s in all; lost {off['lost']} / {on['lost']}.",
        "",
        "| latency ms (p50 / p99) | bursts off | bursts on, between bursts "
        "| bursts on, during a burst |",
        "|---|---|---|---|",
    ]
    for key, name in (
        ("agent_ms", "agent (received -> published)"),
        ("e2e_ms", "end to end (sent -> received)"),
    ):
        cells = [off[key]["idle"], on[key]["idle"], on[key]["burst"]]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{_cell(c['p50'])} / {_cell(c['p99'])} (n {c['n']})" for c in cells)
            + " |"
        )
    split = [on["agent_ms"][k] for k in ("idle_after_burst", "idle_later")]
    rounds = [x["calibration_rounds"] for x in (off, on)]
    lines += [
        "",
        f"Agent latency between bursts, the first {AFTER_S:g} s after a burst "
        f"ends / later (p50 / p99): "
        + " | ".join(f"{_cell(c['p50'])} / {_cell(c['p99'])} (n {c['n']})" for c in split),
        "Flip rounds (done, accepted): bursts off "
        + ", ".join(map(str, rounds[0].values()))
        + "; bursts on "
        + ", ".join(map(str, rounds[1].values()))
        + ".",
    ]
    ratio = r["p99_ratio_burst_vs_no_bursts"]
    lines += [
        "",
        "p99 of the agent latency during bursts / without bursts: "
        f"{'n/a' if ratio is None else f'{ratio:.2f}'} (target <= 1.20)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print and write the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    p.add_argument("--rate", type=float, default=100.0, help="samples/s (default 100)")
    p.add_argument(
        "--seconds", type=float, default=180.0, help="stream length per agent (default 180)"
    )
    p.add_argument("--interval", type=float, default=30.0, help="seconds between burst starts")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    r = run(args.bundle, args.rate, args.seconds, args.interval)
    md = markdown(r)
    print(json.dumps(r) if args.json else md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "burst_latency.md").write_text(md + "\n")
    (args.out / "burst_latency.json").write_text(json.dumps(r, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
