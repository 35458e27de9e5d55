"""The fleet benchmark: 50 agents behind one proxy, scraped by a real Prometheus server,
and one collect -> retrain -> canary -> full rollout cycle.

Every agent is a separate process with AOT kernels, its own state directory, board
identity (``board-00`` ...) and metrics port, subscribed to its board's topic at the
proxy's backend. Publisher processes replay BasicMotions with a different drift per board
(none, rotation, gain, offset, noise at varying strengths). Phases:

1. field data: the *train* split, every 2nd sample labelled;
2. ``edge-agent collect`` from all agents (the labelled logs);
3. before: the *test* split, every sample labelled: fleet accuracy before;
4. proxy throughput: blasters send real sample messages as fast as they can through the
   proxy to a counting subscriber (the agents are not subscribed to that topic);
5. ``edge-agent train --extra`` on the collected samples, then ``edge-agent rollout`` to a
   10% canary share and the rest, while the test split keeps streaming (the gates' labels);
6. after: the test split again: fleet accuracy after.

Prometheus checks: all targets up; the summed ``edge_agent_samples_predicted_total``
equals what was sent minus the counted drops and rejections (``lost_uncounted``).

    nice -n 5 python -m bench.fleet --json      # writes bench/results/fleet.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fleet_steps import retrain, settle, throughput  # noqa: E402
from bench.fleet_support import Fleet, Prometheus, ProxyProc, compile_aot  # noqa: E402
from edge_agent.fleet.collect import collect, save  # noqa: E402
from edge_agent.fleet.rollout import Rollout  # noqa: E402

BUNDLE = REPO / "edge_agent" / "defaults" / "basicmotions.eab"
KINDS = (
    ("none", ()),
    ("rotation", (30, 60, 90)),
    ("gain", (2.0, 3.0, 4.0)),
    ("offset", (1.0, 1.5, 2.0)),
    ("noise", (0.3, 0.5, 0.8)),
)


T0 = time.monotonic()


def say(msg: str) -> None:
    """Progress on stderr (the result goes to stdout)."""
    print(f"[{time.monotonic() - T0:6.0f} s] {msg}", file=sys.stderr, flush=True)


def drift_of(i: int) -> str:
    """Board ``i``'s drift: kinds in turn, strengths varying."""
    kind, strengths = KINDS[i % len(KINDS)]
    return "none" if kind == "none" else f"{kind}:{strengths[(i // len(KINDS)) % 3]}@0"


def publishers(
    fleet: Fleet,
    front: str,
    n_pub: int,
    split: str,
    count: int,
    rate: float,
    labels_every: int,
    first_seq: int,
) -> list[subprocess.Popen[str]]:
    """Start ``n_pub`` replay processes sharing the boards out."""
    procs = []
    for k in range(n_pub):
        idx = list(range(k, len(fleet.boards), n_pub))
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.fleet_publish",
                    "replay",
                    "--endpoint",
                    front,
                    "--split",
                    split,
                    "--boards",
                    ",".join(fleet.boards[i] for i in idx),
                    "--drifts",
                    ",".join(drift_of(i) for i in idx),
                    "--count",
                    str(count),
                    "--rate",
                    str(rate),
                    "--labels-every",
                    str(labels_every),
                    "--first-seq",
                    str(first_seq),
                    "--seed",
                    str(k),
                ],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs: list[subprocess.Popen[str]]) -> dict[str, int]:
    """Wait for the publishers; what each board was sent."""
    sent: dict[str, int] = {}
    for p in procs:
        out, _ = p.communicate(timeout=900)
        if p.returncode != 0:
            raise RuntimeError(f"publisher failed: {out}")
        sent.update(json.loads(out.strip().splitlines()[-1])["sent"])
    return sent


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="eaf-", dir="/tmp"))
    res: dict[str, Any] = {"agents": args.agents}
    fleet = proxy = prom = None
    try:
        cache = Path(args.kernel_cache) if args.kernel_cache else work / "kcache"
        compile_aot(cache)
        proxy = ProxyProc(work, args.port0 - 1)
        fleet = Fleet(work, args.agents, BUNDLE, proxy.back, args.port0, cache)
        say(f"starting {args.agents} agents")
        fleet.start()
        res["startup_s"] = time.monotonic() - t_start
        say("agents ready; starting prometheus")
        prom = Prometheus(
            work,
            args.port0 - 2,
            list(zip(fleet.boards, fleet.ports, strict=True)),
            proxy.port,
            args.scrape_s,
        )
        deadline = time.monotonic() + 60
        while (up := prom.targets_up()) < args.agents and time.monotonic() < deadline:
            time.sleep(args.scrape_s / 2)  # a target counts once its first scrape is done
        res["targets_up"] = up
        say(f"{up} targets up; phase 1: field data (train split)")
        n_pub, rate, count = args.publishers, args.rate, args.count
        seq = 0
        sent = finish(publishers(fleet, proxy.front, n_pub, "train", count, rate, 2, seq))
        seq += count
        total_sent = sum(sent.values())
        say("collect")
        got = collect([fleet.status_ep(i) for i in range(args.agents)])
        save(got, work / "collected.npz")
        res["collected_samples"], res["collect_errors"] = got.samples, len(got.errors)
        s0 = settle(fleet, prom)
        say("phase 3: before (test split)")
        sent = finish(publishers(fleet, proxy.front, n_pub, "test", count, rate, 1, seq))
        seq += count
        total_sent += sum(sent.values())
        s1 = settle(fleet, prom)
        res["fleet_accuracy_before"] = (s1["correct"] - s0["correct"]) / (
            s1["labelled"] - s0["labelled"]
        )
        say("phase 4: proxy throughput")
        tp = throughput(proxy, args.blasters, args.blast_s)
        # what the proxy forwarded (its message counter); what one Python subscriber received
        # is beside it (it falls behind first: XPUB then drops for it, as PUB does)
        res["proxy_samples_per_s"] = tp["forwarded_per_s"]
        res["proxy_delivered_per_s"] = tp["samples_per_s"]
        res["proxy"] = tp
        say("phase 5: retrain")
        bundle, cpu = retrain(work, work / "collected.npz", (args.fp_steps, args.qat_steps))
        res["retrain_cpu_s"], res["train_steps"] = cpu, [args.fp_steps, args.qat_steps]
        say("rollout")
        feed = publishers(fleet, proxy.front, n_pub, "test", 10**9, rate, 1, seq)
        t0 = time.monotonic()
        report = Rollout(
            bundle,
            [fleet.status_ep(i) for i in range(args.agents)],
            canary_share=0.1,
            min_labelled=40,
            tolerance=0.05,
            gate_timeout_s=240,
            poll_s=0.5,
        ).run()
        res["rollout_s"] = time.monotonic() - t0
        for p in feed:
            p.terminate()
        sent = finish(feed)
        seq += max(sent.values()) + 1
        total_sent += sum(sent.values())
        res["rollout_ok"] = report.ok
        res["rollout"] = {
            s: sum(t.state == s for t in report.targets)
            for s in ("passed", "failed", "rolled_back", "rollback_failed")
        }
        res["rollout_events"] = report.events[-8:]
        s2 = settle(fleet, prom)
        say(f"rollout ok={report.ok}; phase 6: after (test split)")
        sent = finish(publishers(fleet, proxy.front, n_pub, "test", count, rate, 1, seq))
        total_sent += sum(sent.values())
        s3 = settle(fleet, prom)
        res["fleet_accuracy_after"] = (s3["correct"] - s2["correct"]) / (
            s3["labelled"] - s2["labelled"]
        )
        res["samples_sent"] = total_sent
        res["samples_predicted"] = s3["predicted"]
        res["samples_dropped"] = s3["dropped"]
        res["samples_rejected"] = s3["rejected"]
        res["lost_uncounted"] = total_sent - s3["predicted"] - s3["dropped"] - s3["rejected"]
        res["targets_up_end"] = prom.targets_up()
        rss = fleet.peak_rss_mb()
        res["peak_rss_mb_per_agent"] = max(rss)
        res["mean_peak_rss_mb_per_agent"] = sum(rss) / len(rss)
    finally:
        for obj in (prom, fleet, proxy):
            if obj is not None:
                obj.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["wall_s"] = time.monotonic() - t_start
    res["load_average"] = os.getloadavg()
    return res


def markdown(r: dict[str, Any]) -> str:
    tp = r["proxy"]
    return "\n".join(
        [
            "# Fleet benchmark (`python -m bench.fleet --json`)",
            "",
            f"{r['agents']} agents (AOT kernels), one proxy, Prometheus scraping all; "
            f"wall {r['wall_s']:.0f} s (start-up {r['startup_s']:.0f} s), load average "
            f"{', '.join(f'{v:.1f}' for v in r['load_average'])}.",
            "",
            "| key | value |",
            "|---|---|",
            *[
                f"| {k} | {r[k]} |"
                for k in (
                    "targets_up",
                    "samples_sent",
                    "samples_predicted",
                    "samples_dropped",
                    "samples_rejected",
                    "lost_uncounted",
                    "rollout_ok",
                    "fleet_accuracy_before",
                    "fleet_accuracy_after",
                    "peak_rss_mb_per_agent",
                    "proxy_samples_per_s",
                    "proxy_delivered_per_s",
                )
            ],
            "",
            f"Proxy: {tp['sent']} samples sent by the blasters in {tp['wall_s']:.1f} s, "
            f"{tp['forwarded']:.0f} forwarded ({tp['forwarded_per_s']:.0f}/s), {tp['received']} "
            f"received by the subscriber ({tp['samples_per_s']:.0f}/s); proxy CPU "
            f"{tp['proxy_cpu_s']:.1f} s ({100 * tp['proxy_cpu_share']:.0f}% of one core; "
            "the proxy's CPU includes the 1 s drain after the window).",
            f"Rollout: {r['rollout']} in {r['rollout_s']:.0f} s; retraining took "
            f"{r['retrain_cpu_s']:.0f} s CPU ({r['train_steps'][0]} FP + {r['train_steps'][1]} "
            "QAT steps).",
            "",
        ]
    )


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--agents", type=int, default=50)
    p.add_argument("--publishers", type=int, default=5)
    p.add_argument("--count", type=int, default=200, help="samples per board per phase")
    p.add_argument("--rate", type=float, default=20.0, help="samples/s per board")
    p.add_argument("--blasters", type=int, default=2)
    p.add_argument("--blast-s", type=float, default=10.0)
    p.add_argument("--scrape-s", type=float, default=2.0)
    # fewer than `train`'s 1200 + 600 (the shipped model's): on a shared 2-core machine the
    # full training alone takes longer than the benchmark's 15-minute budget
    p.add_argument("--fp-steps", type=int, default=300)
    p.add_argument("--qat-steps", type=int, default=150)
    p.add_argument("--port0", type=int, default=19600, help="first agent metrics port")
    p.add_argument("--kernel-cache", default="", help="reuse a kernel cache (AOT built)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args()
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C: run()'s finally stops the agents,
    # the proxy and Prometheus instead of leaving them behind
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    r = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "fleet" if args.agents == 50 else f"fleet_{args.agents}"
    (args.out / f"{name}.json").write_text(json.dumps(r, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(r))
    print(json.dumps(r, indent=2) if args.json else markdown(r))
    return 0 if r["lost_uncounted"] == 0 and r["targets_up"] == r["agents"] else 1


if __name__ == "__main__":
    sys.exit(main())
