"""Summary keys, Markdown tables, JSON and PNG of ``bench/real_drift.py``.

Recovery of a (set, bits, method) = (after - right after) / (before - right after) with
each accuracy the mean over seeds, held-out data only; a set whose drift cost less than
5 points has nothing measurable to recover (a ratio over a loss of a sample or two swings
by hundreds of percent) and is left out of the means (listed as n/a).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.real_drift_data import RENAMED_LABELS, RETURN_BACK, RETURN_DRIFT

REF = "flips_every_chunk"  # the flip path the buffer policies and round costs are measured on
METHOD_ORDER = [
    "none",
    "default",
    "no_label",
    "flips",
    "stats",
    REF,
    "buffer_random",
    "buffer_recent",
    "adabn",
    "tent",
    "torch_replay",
    "numpy_backprop",
]
MIN_LOSS = 0.05


def _mean(xs: list[float | None] | list[float]) -> float:
    vals = [x for x in xs if x is not None and x == x]
    return statistics.fmean(vals) if vals else float("nan")


def recovery(
    before: float, right_after: float, after: float, min_loss: float = MIN_LOSS
) -> float | None:
    """Share of the accuracy lost to drift that calibration won back; None when the drift
    cost less than ``min_loss`` (nothing measurable to recover: left out of the means)."""
    lost = before - right_after
    if lost < min_loss:
        return None
    return (after - right_after) / lost


def group(cases: list[dict[str, Any]], kind: str) -> dict[tuple, dict[str, dict[str, Any]]]:
    """(set, bits, drift, label_fraction) -> method -> seed-mean of every number."""
    acc: dict[tuple, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for c in cases:
        if c["kind"] != kind:
            continue
        key = (c["set"], c["bits"], c["drift"], c["label_fraction"])
        for m, row in c["methods"].items():
            acc[key][m].append(row)
    out: dict[tuple, dict[str, dict[str, Any]]] = {}
    for key, methods in acc.items():
        out[key] = {}
        for m, rows in methods.items():
            num = {k for r in rows for k, v in r.items() if isinstance(v, (int, float))}
            agg: dict[str, Any] = {k: _mean([r.get(k) for r in rows]) for k in num}
            agg["recovery"] = recovery(agg["before"], agg["right_after"], agg["after"])
            agg["seeds"] = len(rows)
            match = [
                r.get("cpu_s_to_match_flips", r.get("cpu_s_to_match_default", "absent"))
                for r in rows
            ]
            if "absent" not in match:
                agg["matched"] = sum(v is not None for v in match)
            out[key][m] = agg
    return out


def summarize(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's keys and the grouped tables."""
    real, inj = group(cases, "real"), group(cases, "injected")
    nod, sweep = group(cases, "no_drift"), group(cases, "sweep")

    def recs(g: dict, bits: int, method: str = "default") -> dict[str, float | None]:
        return {k[0]: v[method]["recovery"] for k, v in g.items() if k[1] == bits and method in v}

    r4, r2 = recs(real, 4), recs(real, 2)
    valid4 = [v for v in r4.values() if v is not None]
    per_kind: dict[str, float] = {}
    for kind in sorted({k[2] for k in inj}):
        vals = [v["default"]["recovery"] for k, v in inj.items() if k[2] == kind]
        per_kind[kind] = _mean([v for v in vals if v is not None])

    def forgot(v: dict[str, Any]) -> float:
        return 100 * (v["default"]["before"] - v["default"]["clean_after"])

    forgetting = [forgot(v) for v in inj.values()]
    forgetting += [forgot(v) for k, v in real.items() if k[0] not in RENAMED_LABELS]
    renamed = [forgot(v) for k, v in real.items() if k[0] in RENAMED_LABELS]
    drop = [100 * (v["default"]["before"] - v["default"]["after"]) for v in nod.values()]
    rounds = sum(c["methods"]["default"]["rounds"] for c in cases if c["kind"] == "no_drift")
    kept = sum(c["methods"]["default"]["kept"] for c in cases if c["kind"] == "no_drift")

    def ref(methods: dict[str, Any]) -> str:  # the QCore-buffer flip path of a build
        return REF if REF in methods else "default"

    qr = [
        (
            v[ref(v)]["recovery"],
            v["buffer_random"]["recovery"],
            v[ref(v)]["after"],
            v["buffer_random"]["after"],
        )
        for k, v in real.items()
        if k[1] == 4 and "buffer_random" in v
    ]
    ratios, whole, lower_bound, no_gain = [], [], 0, 0
    for c in cases:
        if c["kind"] != "real" or c["bits"] != 4 or "numpy_backprop" not in c["methods"]:
            continue
        d, nb = c["methods"][ref(c["methods"])], c["methods"]["numpy_backprop"]
        if nb.get("flips_no_gain"):  # nothing to reach: no ratio
            no_gain += 1
            continue
        match = nb.get("cpu_s_to_match_flips", nb.get("cpu_s_to_match_default"))
        if match is None:
            lower_bound += 1
            match = nb["cpu_s"]
        if d["rounds"]:
            ratios.append(match / max(d["cpu_per_round_s"], 1e-9))
            whole.append(match / max(d["cpu_s"], 1e-9))
    mem = [(c["round_peak_mb"], c["numpy_backprop_peak_mb"]) for c in cases if "round_peak_mb" in c]
    rets = [c["methods"]["default"]["return"] for c in cases if "return" in c["methods"]["default"]]
    ret_f = [100 * (r["before"] - r["after_return"]) for r in rets]
    adapted = [r for r in rets if r["alarms"][0] > 0]
    keys = {
        "mean_recovery_4bit": _mean(valid4),
        "min_recovery_4bit": min(valid4) if valid4 else float("nan"),
        "mean_recovery_2bit": _mean([v for v in r2.values() if v is not None]),
        "per_set_recovery_4bit": r4,
        "per_kind_recovery_4bit": per_kind,
        "max_forgetting_pts": max(forgetting) if forgetting else float("nan"),
        "forgetting_renamed_labels_pts": max(renamed) if renamed else float("nan"),
        "return_forgetting_pts": max(ret_f) if ret_f else float("nan"),
        "return_forgetting_mean_pts": _mean(ret_f),
        "return_forgetting_before_return_pts": max(
            (100 * (r["before"] - r["after_drift"]) for r in rets), default=float("nan")
        ),
        "return_realarm_fraction": (
            sum(r["alarms"][2] > r["alarms"][1] for r in adapted) / len(adapted)
            if adapted
            else float("nan")
        ),
        "return_cases": len(rets),
        "no_drift_accuracy_drop_pts": _mean(drop),
        "no_drift_kept_fraction": kept / rounds if rounds else float("nan"),
        "no_drift_rounds": rounds,
        "qcore_minus_random_pts": _mean(
            [100 * (a - b) for a, b, _, _ in qr if a is not None and b is not None]
        ),
        "qcore_minus_random_accuracy_pts": _mean([100 * (a - b) for _, _, a, b in qr]),
        "cpu_ratio_vs_torchfree_backprop": _mean(ratios),
        "cpu_ratio_vs_torchfree_backprop_whole_stream": _mean(whole),
        "cpu_ratio_cases_backprop_never_matched": lower_bound,
        "cpu_ratio_cases": len(ratios),
        "cpu_ratio_cases_flips_no_gain": no_gain,
        "memory_ratio_vs_torchfree_backprop": _mean([a / b for a, b in mem if b > 0]),
        "round_peak_mb": _mean([a for a, _ in mem]),
        "first_round_peak_mb": _mean(
            [c["first_round_peak_mb"] for c in cases if "first_round_peak_mb" in c]
        ),
        "torchfree_backprop_peak_mb": _mean([b for _, b in mem]),
    }
    return {"keys": keys, "real": real, "injected": inj, "no_drift": nod, "sweep": sweep}


KEY_DOC = """Key definitions: `mean_recovery_4bit` / `min_recovery_4bit` / `mean_recovery_2bit`: the
agent's default path on the real-drift sets (mean / least over sets; sets whose drift cost
< {min_loss:.0f} points are left out); `per_kind_recovery_4bit`: injected kinds, mean over
sets (seed 0); `max_forgetting_pts`: the default path's largest forgetting over every
(set, bits, drift), but the real drift of a set whose drift renamed the labels of inputs
that look alike (`seattle_weather`: its clean part keeps the old names): its loss there is
`forgetting_renamed_labels_pts`; `no_drift_*`: the default path in the no-drift control
(accuracy drop
on its scoring half, share of rounds kept). `return_forgetting_pts`: the default path at 4
bits (real sets and injected kinds) after its drifted replay goes on with {ret_drift} more
drifted samples and then {ret_back} clean train-domain samples: the largest drop in
accuracy on clean held-out samples (`clean_b`, never streamed) from before the drift to
the end (`..._mean_pts` the mean, `..._before_return_pts` the same drop measured when the
drift was still there); `return_realarm_fraction`: share of those runs with an alarm
during the drift that raised another once the stream came back. `flips_every_chunk` is a
flip round on every chunk, without the drift trigger, the statistics and the label rung
(the agent's path before they came), with the QCore draw (the agent's own paths use its
configured draw, `buffer_draw`, random by default); `no_label` is the default path without
the label rung, and `flips` / `stats` (each rung alone) run without it too; the buffer
policies and a round's cost are measured on `flips_every_chunk`, since with the drift
trigger a stream may give no round at all. `qcore_minus_random_pts`: 100 x (recovery with
the QCore buffer - with a random buffer) on that path, mean over real-drift sets at 4 bits
(`..._accuracy_pts`: the same in held-out accuracy points);
`cpu_ratio_vs_torchfree_backprop`: thread CPU the numpy last-layer back-propagation needs
to first reach that path's held-out accuracy (its one engine pass over the labelled
samples and the QCore, its steps, and at each checkpoint, every 5 steps, the requantized
layer swapped into its engine; all of its steps where it never does, counted in
`..._never_matched`) over the CPU of one of its rounds (the chunk's buffer update and the
round; the per-sample stream side is not a round's), mean over the 4-bit real-drift cases
where that path gained held-out accuracy over no calibration (`cpu_ratio_cases`; where it
gained nothing, no calibration reaches it at no cost and there is no ratio:
`..._flips_no_gain`); `..._whole_stream`: the same CPU over that path's CPU for the whole
stream (every round and the stream side); `memory_ratio_vs_torchfree_backprop`:
tracemalloc peak of a round (`round_peak_mb`: the largest over a replay's rounds after its
first, above what was allocated before it; `first_round_peak_mb`: the first, which also
builds the neighbour widths' engines the controller keeps) over that of the numpy
back-propagation run (its engine built before it). onnxruntime on-device training is not
the torch-free reference: `onnxruntime-training` (1.19.2) has x86-64 wheels only on PyPI, none for
aarch64, so a board cannot install it."""


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None (strict JSON), tuples as lists."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def _pct(v: float | None) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}"


def _rtxt(v: float | None) -> str:
    return "n/a" if v is None or v != v else f"{v:.0%}"


def table(g: dict[tuple, dict[str, dict[str, float]]], title: str) -> str:
    """Markdown: one row per (set, bits, drift, labels, method)."""
    lines = [
        f"### {title}",
        "",
        "| set | bits | drift | labels | method | before | right after | after | "
        "recovery | forgetting pts | CPU s | rounds kept | CPU s/round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(g, key=lambda k: (k[0], -k[1], k[2], k[3])):
        s, bits, drift, frac = key
        for m in [m for m in METHOD_ORDER if m in g[key]]:
            v = g[key][m]
            rounds = f"{v['kept']:.1f}/{v['rounds']:.1f}" if v.get("rounds") else "-"
            per = f"{v['cpu_per_round_s']:.3f}" if v.get("rounds") else "-"
            lines.append(
                f"| {s} | {bits} | {drift} | {frac:.0%} | {m} | {_pct(v['before'])} | "
                f"{_pct(v['right_after'])} | {_pct(v['after'])} | {_rtxt(v['recovery'])} | "
                f"{100 * (v['before'] - v['clean_after']):+.1f} | {v['cpu_s']:.2f} | {rounds} | "
                f"{per} |"
            )
    return "\n".join(lines)


def method_summary(g: dict, bits: int) -> str:
    """Mean recovery per method over the sets (bits)."""
    methods = [m for m in METHOD_ORDER if any(m in v for k, v in g.items() if k[1] == bits)]
    lines = [
        "| method | " + " | ".join(sorted({k[0] for k in g if k[1] == bits})) + " | mean |",
        "|---|" + "---|" * (len({k[0] for k in g if k[1] == bits}) + 1),
    ]
    for m in methods:
        vals = [(k[0], v[m]["recovery"]) for k, v in sorted(g.items()) if k[1] == bits and m in v]
        lines.append(
            f"| {m} | "
            + " | ".join(_rtxt(r) for _, r in vals)
            + f" | {_rtxt(_mean([r for _, r in vals if r is not None]))} |"
        )
    return "\n".join(lines)


def kind_summary(g: dict) -> str:
    """Mean recovery per method and injected kind (4-bit, over the sets with a loss)."""
    kinds = sorted({k[2] for k in g if k[1] == 4})
    methods = [m for m in METHOD_ORDER if any(m in v for v in g.values())]
    lines = ["| method | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for m in methods:
        cells = []
        for kind in kinds:
            vals = [v[m]["recovery"] for k, v in g.items() if k[1] == 4 and k[2] == kind and m in v]
            cells.append(_rtxt(_mean([r for r in vals if r is not None])))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Recovery per method: real-drift sets (4-bit) and injected kinds (4-bit); a set or
    kind whose drift cost under MIN_LOSS is marked n/a."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(METHOD_ORDER[1:])}
    fig, axes = plt.subplots(1, 2, figsize=(15, 5))
    panels = (
        (summary["real"], 0, "real drift, 4-bit (mean over seeds)"),
        (summary["injected"], 2, "injected kinds, 4-bit (mean over sets, seed 0)"),
    )
    for ax, (g, by, title) in zip(axes, panels, strict=True):
        cats = sorted({k[by] for k in g if k[1] == 4})
        methods = [
            m
            for m in METHOD_ORDER
            if m != "none" and any(m in v for k, v in g.items() if k[1] == 4)
        ]
        w = 0.8 / max(1, len(methods))
        for j, m in enumerate(methods):
            ys = [
                _mean(
                    [
                        v[m]["recovery"]
                        for k, v in g.items()
                        if k[1] == 4 and k[by] == c and m in v and v[m]["recovery"] is not None
                    ]
                )
                for c in cats
            ]
            xs = [i + j * w for i in range(len(cats))]
            ax.bar(xs, [0 if y != y else y for y in ys], w, label=m, color=colors[m])
            for x, y in zip(xs, ys, strict=True):
                if y != y and j == len(methods) // 2:
                    ax.text(x, 0.02, "n/a", ha="center", fontsize=8)
        ax.set_xticks([i + 0.4 - w / 2 for i in range(len(cats))], cats, rotation=20)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel("recovery (share of the lost accuracy won back)")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def return_table(cases: list[dict[str, Any]]) -> str:
    """The default path when the drift goes away (4-bit), per set and drift (seed mean)."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for c in cases:
        r = c["methods"]["default"].get("return")
        if r is not None:
            rows[(c["set"], c["drift"])].append(r)
    lines = [
        "### The drift goes away (default path, 4-bit; clean held-out accuracy)",
        "",
        "| set | drift | before | drift still there | after the return | forgetting pts "
        "| alarms: drift / more drift / return |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, drift), rs in sorted(rows.items()):
        b, d, a = (_mean([r[k] for r in rs]) for k in ("before", "after_drift", "after_return"))
        al = [
            f"{r['alarms'][0]}/{r['alarms'][1] - r['alarms'][0]}/{r['alarms'][2] - r['alarms'][1]}"
            for r in rs
        ]
        lines.append(
            f"| {name} | {drift} | {_pct(b)} | {_pct(d)} | {_pct(a)} | {100 * (b - a):.1f} "
            f"| {', '.join(al)} |"
        )
    return "\n".join(lines)


def write_outputs(
    out: Path,
    summary: dict[str, Any],
    cases: list[dict[str, Any]],
    provenance: dict[str, Any],
    run: dict[str, Any],
) -> None:
    """real_drift.md / .json / .png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    k = summary["keys"]
    head = [
        "# Real-drift benchmark (`python -m bench.real_drift --json`)",
        "",
        f"Mode {run['mode']}; sets {', '.join(run['sets'])}; seeds {run['seeds']}; bits "
        f"{run['bits']}; wall {run['wall_s']:.0f} s with {run['jobs']} workers on "
        f"{run['cpus']} CPUs; load average {run['loadavg_start'][0]:.1f} at start, "
        f"{run['loadavg_end'][0]:.1f} at end; statistics rung: {run['stats_rung']}.",
        "",
        "Recovery = (after - right after) / (before - right after): *before* is the "
        "integer engine's accuracy on clean train-domain samples never trained on, *right "
        "after* and *after* on drifted held-out samples never streamed (no label of theirs "
        "was ever seen), each the mean over seeds; n/a where the drift cost under "
        f"{100 * MIN_LOSS:.0f} points. Forgetting = before - accuracy on the same clean "
        "samples after calibration.",
        "",
        KEY_DOC.format(min_loss=100 * MIN_LOSS, ret_drift=RETURN_DRIFT, ret_back=RETURN_BACK),
        "",
        "## Keys",
        "",
        "```json",
        json.dumps(jsonable(k), indent=1, default=str),
        "```",
        "",
        "## Recovery per method, real drift, 4-bit",
        "",
        method_summary(summary["real"], 4),
        "",
        "## Recovery per method and injected kind, 4-bit (mean over sets)",
        "",
        kind_summary(summary["injected"]),
        "",
    ]
    prov = [
        "## Data sets (details: bench/real_drift_sets.md)",
        "",
        "| set | source | drift | fit / clean / stream / held | skipped |",
        "|---|---|---|---|---|",
    ]
    for name, p in sorted(provenance.items()):
        sz = p.get("sizes", {})
        prov.append(
            f"| {name} | {p.get('package', '?')} {p.get('version', '')} | "
            f"{p.get('drift', '?')} | {sz.get('fit')} / {sz.get('clean')} / "
            f"{sz.get('stream')} / {sz.get('held')} | "
            f"{'; '.join(p.get('skipped', [])) or '-'} |"
        )
    body = [
        *prov,
        "",
        table(summary["real"], "Real drift (labels on 20% of the stream)"),
        "",
        table(summary["sweep"], "Label sweep (4-bit, seed 0)"),
        "",
        table(summary["no_drift"], "No-drift control (clean train-domain stream)"),
        "",
        table(summary["injected"], "Injected drifts (4-bit, seed 0, halves of the clean part)"),
        "",
        return_table(cases),
        "",
    ]
    (out / "real_drift.md").write_text("\n".join(head + body) + "\n")
    jsummary = {
        name: {"|".join(map(str, key)): v for key, v in g.items()}
        for name, g in summary.items()
        if name != "keys"
    }
    (out / "real_drift.json").write_text(
        json.dumps(
            jsonable(
                {**k, "run": run, "provenance": provenance, "tables": jsummary, "cases": cases}
            ),
            indent=1,
            default=str,
        )
    )
    plot(summary, out / "real_drift.png")
