"""The markdown report of ``bench/inference.py`` (what the README's inference section shows)."""

from __future__ import annotations

from typing import Any

TARGETS = (  # key, target, comparison
    ("ratio_vs_litert_int8_b1", 1.0),
    ("ratio_vs_litert_int8_b64", 1.0),
    ("ratio_vs_litert_int8_wide_b1", 1.0),
    ("ratio_vs_litert_int8_wide_b64", 1.0),
    ("ratio_vs_litert_int8_b1_noamx", 1.0),
    ("ratio_vs_litert_int8_b64_noamx", 1.0),
    ("ratio_vs_litert_int8_wide_b1_noamx", 1.0),
    ("ratio_vs_litert_int8_wide_b64_noamx", 1.0),
    ("ratio_vs_ort_int8_b1", 1.5),
    ("ratio_vs_ort_int8_b64", 1.5),
    ("ratio_vs_torch_fp32_b1", 5.0),
)


def _model_table(name: str, m: dict[str, Any]) -> list[str]:
    rates = m["rates"]
    lines = [
        f"### {name}: `{m['data']}` {m['input_shape']}, width {m['width'] or 'default'}, "
        f"{m['macs'] / 1e6:.2f} M MACs",
        "",
        "| runtime | b1 /s (CPU) | b64 /s (CPU) | b1 /s (wall) | b64 /s (wall) "
        "| engine / this, b1 | b64 | agrees with engine | accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rt, v in rates.items():
        r = m["ratios"]
        ratio = [
            "1.00x" if rt == "engine_aot_8bit" else f"{r[f'vs_{rt}_b{n}']:.2f}x" for n in (1, 64)
        ]
        agree = m["agreement"].get(rt)
        ag = (
            ("", "") if agree is None else (f"{agree['agreement']:.3f}", f"{agree['accuracy']:.3f}")
        )
        flag = (
            " (!)" if max(v["b1"]["proc_over_thread"], v["b64"]["proc_over_thread"]) > 1.05 else ""
        )
        lines.append(
            f"| {rt}{flag} | {v['b1']['cpu_median']:,.0f} | {v['b64']['cpu_median']:,.0f} "
            f"| {v['b1']['wall_median']:,.0f} | {v['b64']['wall_median']:,.0f} "
            f"| {ratio[0]} | {ratio[1]} "
            f"| {ag[0]} | {ag[1]} |"
        )
    t = m["timing"]
    lines += [
        "",
        f"- load average {t['loadavg_start'][0]:.2f} at the start of the timing, "
        f"{t['loadavg_end'][0]:.2f} at its end; {t['reps']} interleaved repetitions, "
        "median shown; best-repetition ratios: "
        + ", ".join(
            f"{k[3:]} {v:.2f}x"
            for k, v in m["ratios_best"].items()
            if k.startswith(("vs_litert", "vs_ort_int8_b"))
        ),
        f"- onnxruntime int8 format: {m['onnx_int8_format']}; ops it runs: "
        + ", ".join(f"{k} {v}" for k, v in m["onnx_ops"].items())
        + (
            f" (float ops: {', '.join(m['onnx_float_ops'])})"
            if m["onnx_float_ops"]
            else " (all int8 between the input QuantizeLinear and output DequantizeLinear)"
        ),
        "- LiteRT ops: " + (", ".join(f"{k} {v}" for k, v in m["tflite_ops"].items()) or "skipped"),
    ]
    if "ratios_noamx" in m:
        lines.append(
            "- AMX refused (child process): "
            + ", ".join(f"{k[3:]} {v:.2f}x" for k, v in m["ratios_noamx"].items())
        )
    lines.append(
        "- weight bytes: " + ", ".join(f"{b}-bit {n:,}" for b, n in m["model_bytes"].items())
    )
    return lines


def markdown(r: dict[str, Any]) -> str:
    """The whole report."""
    lines = [
        f"One thread, engine kernels `{r['kernel_isa']}` compiled ahead of time; rates are "
        "samples per second of thread CPU time (and of wall-clock time, for reference), "
        "every runtime of a model interleaved in one process. `(!)`: process CPU time "
        "exceeded thread CPU time by over 5% (a helper thread).",
        "",
        "| key | measured | target |",
        "|---|---:|---:|",
    ]
    for key, target in TARGETS:
        if key in r:
            mark = "met" if r[key] >= target else "**missed**"
            lines.append(f"| `{key}` | {r[key]:.2f} | >= {target} ({mark}) |")
    lines.append(
        f"| `engine_rss_mb` | {r['engine_rss_mb']:.1f} | < 40 "
        f"({'met' if r['engine_rss_mb'] < 40 else '**missed**'}) |"
    )
    lines.append("")
    for name, m in r["models"].items():
        lines += [*_model_table(name, m), ""]
    amx = r["amx"]["main"]
    lines.append(
        f"- AMX: CPU and kernel support tile data: {amx['supported']}; held by the timing "
        f"process after every runtime ran: {amx['permitted']}; requests for it "
        f"(`arch_prctl(ARCH_REQ_XCOMP_PERM)`, strace over a short child run of the engine, "
        f"onnxruntime and LiteRT): {amx.get('requests_seen')}"
    )
    for name, what in (("aot", "AOT kernels"), ("jit", "JIT kernels, cache warm")):
        p = r["engine_process"][name]
        lines.append(
            f"- engine-only process, {what} (imported of torch, numba, llvmlite: "
            f"{', '.join(p['imported']) or 'none'}): peak RSS {p['rss_mb']:.1f} MB; start "
            f"{p['start_s']:.2f} s, first sample {p['first_sample_ms']:.1f} ms"
        )
    build = r["aot_build_s"]
    built = "reused from the kernel cache" if build is None else f"built in {build:.1f} s"
    phases = ", ".join(f"{k} {v:.0f}" for k, v in r.get("phase_s", {}).items())
    lines += [
        f"- `import numba` alone peaks at {r['numba_import_rss_mb']:.1f} MB; the AOT module "
        f"was {built}; whole run {r['total_s']:.0f} s wall, "
        f"{r.get('total_cpu_s', float('nan')):.0f} s CPU (wall per stage, s: {phases})",
        "- GEMM 256x256x256, GMAC/s of thread CPU time: "
        + ", ".join(f"{k} {v:.1f}" for k, v in r["gemm_256_gmac_s"].items()),
    ]
    return "\n".join(lines)
