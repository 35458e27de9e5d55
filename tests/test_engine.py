"""Engine vs the numpy reference, bit for bit; swaps, bit-width switching, no torch."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.bundle import SERIES_NORM, WEIGHTED_OPS, Bundle, LayerQuant, QuantModel
from edge_agent.data.datasets import normalize_series
from edge_agent.engine import reference
from edge_agent.engine.engine import Engine
from kernels.exec import backend
from kernels.plan import layout, tables
from kernels.plan import weights as plan_weights
from kernels.plan.fixedpoint import quantize_multipliers
from kernels.plan.packing import pack_rows, qrange

ROOT = Path(__file__).resolve().parents[1]
BITS = (8, 4, 3, 2)

SENSOR = {
    "name": "sensor",
    "input_shape": [6, 37],
    "num_classes": 5,
    "layers": [
        {
            "op": "conv1d",
            "in_ch": 6,
            "out_ch": 19,
            "kernel": 5,
            "stride": 1,
            "padding": 2,
            "relu": True,
        },
        {"op": "maxpool1d", "kernel": 2, "stride": 2},
        {
            "op": "conv1d",
            "in_ch": 19,
            "out_ch": 33,
            "kernel": 3,
            "stride": 2,
            "padding": 1,
            "relu": False,
        },
        {"op": "avgpool1d", "kernel": 3, "stride": 2},
        {
            "op": "conv1d",
            "in_ch": 33,
            "out_ch": 20,
            "kernel": 3,
            "stride": 1,
            "padding": 1,
            "relu": True,
        },
        {"op": "gap"},
        {"op": "linear", "in_features": 20, "out_features": 5, "relu": False},
    ],
}
IMAGE = {
    "name": "image",
    "input_shape": [3, 9, 7],
    "num_classes": 3,
    "layers": [
        {
            "op": "conv2d",
            "in_ch": 3,
            "out_ch": 17,
            "kernel": [3, 3],
            "stride": [1, 1],
            "padding": [1, 1],
            "relu": True,
        },
        {"op": "maxpool2d", "kernel": [2, 2], "stride": [2, 2]},
        {
            "op": "conv2d",
            "in_ch": 17,
            "out_ch": 9,
            "kernel": [2, 3],
            "stride": [1, 2],
            "padding": [0, 1],
            "relu": False,
        },
        {"op": "avgpool2d", "kernel": [2, 1], "stride": [1, 1]},
        {"op": "flatten"},
        {"op": "linear", "in_features": 36, "out_features": 21, "relu": True},
        {"op": "linear", "in_features": 21, "out_features": 3, "relu": False},
    ],
}
CONV_HEAD = {
    "name": "convhead",
    "input_shape": [4, 11],
    "num_classes": 6,
    "layers": [
        {
            "op": "conv1d",
            "in_ch": 4,
            "out_ch": 8,
            "kernel": 3,
            "stride": 1,
            "padding": 0,
            "relu": True,
        },
        {
            "op": "conv1d",
            "in_ch": 8,
            "out_ch": 6,
            "kernel": 9,
            "stride": 1,
            "padding": 0,
            "relu": False,
        },
    ],
}
POOLS = {
    "name": "pools",
    "input_shape": [5, 41],
    "num_classes": 4,
    "layers": [
        {
            "op": "conv1d",
            "in_ch": 5,
            "out_ch": 18,
            "kernel": 4,
            "stride": 3,
            "padding": 1,
            "relu": True,
        },
        {"op": "maxpool1d", "kernel": 3, "stride": 2},  # overlapping windows: not fused
        {"op": "maxpool1d", "kernel": 2, "stride": 1},
        {
            "op": "conv1d",
            "in_ch": 18,
            "out_ch": 21,
            "kernel": 1,
            "stride": 1,
            "padding": 2,
            "relu": False,
        },
        {"op": "maxpool1d", "kernel": 2, "stride": 2},  # fused into the epilogue, odd length
        {"op": "flatten"},
        {"op": "linear", "in_features": 21 * 4, "out_features": 9, "relu": True},
        {"op": "linear", "in_features": 9, "out_features": 4, "relu": False},
    ],
}
ARCHS = {"sensor": SENSOR, "image": IMAGE, "convhead": CONV_HEAD, "pools": POOLS}


def _weighted(spec: dict[str, Any]) -> list[tuple[int, tuple[int, ...]]]:
    out = []
    for op in spec["layers"]:
        if op["op"] == "linear":
            out.append((op["out_features"], (op["out_features"], op["in_features"])))
        elif op["op"] in ("conv1d", "conv2d"):
            ks = op["kernel"] if isinstance(op["kernel"], list) else [op["kernel"]]
            out.append((op["out_ch"], (op["out_ch"], op["in_ch"], *ks)))
    return out


def random_bundle(
    spec: dict[str, Any], seed: int = 0, act_bits: int = 8, bits: tuple[int, ...] = BITS
) -> Bundle:
    """A valid bundle with random integer parameters at every bit-width."""
    rng = np.random.default_rng(seed)
    top = (1 << act_bits) - 1
    quant = {}
    ops = _weighted(spec)
    for b in bits:
        layers = []
        zp = int(rng.integers(0, top + 1))
        in_scale = 0.05
        for i, (o, shape) in enumerate(ops):
            k = int(np.prod(shape[1:]))
            lo, hi = qrange(b)
            q = rng.integers(lo, hi + 1, (o, k)).astype(np.int8)
            ws = rng.uniform(0.01, 0.05, o).astype(np.float32)
            bias = rng.integers(-3000, 3000, o).astype(np.int32)
            if i == len(ops) - 1:
                mult = (ws * in_scale).astype(np.float32)
                layers.append(
                    LayerQuant(
                        b, k, pack_rows(q, b), ws, bias, in_scale, zp, None, None, None, None, mult
                    )
                )
            else:
                out_zp = int(rng.integers(0, top // 3))
                m0, sh = quantize_multipliers(rng.uniform(2e-4, 3e-2, o) * 8 / (8 + k))
                layers.append(
                    LayerQuant(
                        b, k, pack_rows(q, b), ws, bias, in_scale, zp, 0.1, out_zp, m0, sh, None
                    )
                )
                zp = out_zp
        quant[b] = QuantModel(b, act_bits, 0.05, int(rng.integers(0, top + 1)), layers)
    c = spec["input_shape"][0]
    fp = [(np.zeros(shape, np.float32), np.zeros(o, np.float32)) for o, shape in ops]
    return Bundle(
        spec,
        fp,
        [f"c{i}" for i in range(spec["num_classes"])],
        rng.normal(0, 0.2, c).astype(np.float32),
        rng.uniform(0.5, 2.0, c).astype(np.float32),
        quant,
        bits[0],
    )


def _inputs(spec: dict[str, Any], n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 4, (n, *spec["input_shape"])).astype(np.float32)


@pytest.fixture(scope="module")
def engines() -> dict[str, tuple[Bundle, Engine]]:
    out = {}
    for name, spec in ARCHS.items():
        bundle = random_bundle(spec, act_bits=6 if name == "convhead" else 8)
        out[name] = (bundle, Engine(bundle))
    return out


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("batch", [1, 5, 37])  # 37: several chunks of samples
def test_engine_equals_reference(
    engines: dict[str, tuple[Bundle, Engine]], arch: str, bits: int, batch: int
) -> None:
    bundle, engine = engines[arch]
    engine.set_bits(bits)
    x = _inputs(ARCHS[arch], batch, seed=bits * 10 + batch)
    got = engine.predict_logits(x)
    want = reference.forward(
        bundle.arch["layers"], bundle.quant[bits], bundle.norm_mean, bundle.norm_std, x
    )
    assert got.dtype == np.float32 and got.shape == (batch, bundle.num_classes)
    np.testing.assert_array_equal(got, want)


def assert_trace_equals_reference(bundle: Bundle, engine: Engine, x: np.ndarray) -> None:
    """The engine's traced layer inputs, as patches, are the reference's, bit for bit."""
    want: list[np.ndarray] = []
    reference.forward(
        bundle.arch["layers"],
        bundle.quant[engine.bits],
        bundle.norm_mean,
        bundle.norm_std,
        x,
        lambda i, cols, acc: want.append(cols),
    )
    logits, inputs = engine.trace(x)
    np.testing.assert_array_equal(logits, engine.predict_logits(x))
    weighted = [op for op in bundle.arch["layers"] if op["op"] in WEIGHTED_OPS]
    assert len(inputs) == len(want) == len(weighted)
    for i, (op, got, cols) in enumerate(zip(weighted, inputs, want, strict=True)):
        got_cols = reference.layer_patches(op, got.astype(np.int64)).reshape(cols.shape)
        np.testing.assert_array_equal(got_cols, cols, err_msg=f"layer {i} ({op['op']})")


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_trace_records_every_weighted_layers_input(
    engines: dict[str, tuple[Bundle, Engine]], arch: str, bits: int
) -> None:
    bundle, engine = engines[arch]
    engine.set_bits(bits)
    for batch in (1, 37):  # 37: several chunks of samples
        assert_trace_equals_reference(bundle, engine, _inputs(ARCHS[arch], batch, seed=bits))


def test_sums_that_may_wrap_pool_after_requantizing() -> None:
    """Biases near the int32 limit: no max of int32 sums before requantizing (it could
    wrap); the engine still follows the reference's wrapping arithmetic bit for bit."""
    bundle = random_bundle(SENSOR, seed=11, bits=(8,))
    layer = bundle.quant[8].layers[0]
    sign = np.where(np.arange(layer.bias_q.size) % 2 == 0, 1, -1)
    layer.bias_q = (sign * (2**31 - 1000)).astype(np.int32)
    engine = Engine(bundle)
    assert engine._state.model.ops[0, tables.F_MAP + tables.M_PREMAX] == 0
    x = _inputs(SENSOR, 9)
    want = reference.forward(
        SENSOR["layers"], bundle.quant[8], bundle.norm_mean, bundle.norm_std, x
    )
    np.testing.assert_array_equal(engine.predict_logits(x), want)


def test_predict_and_single_sample(engines: dict[str, tuple[Bundle, Engine]]) -> None:
    _, engine = engines["sensor"]
    x = _inputs(SENSOR, 4)
    logits = engine.predict_logits(x)
    classes, conf = engine.predict(x)
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))
    assert classes.dtype == np.int64 and conf.dtype == np.float32
    assert np.all((conf > 0) & (conf <= 1))
    np.testing.assert_array_equal(engine.predict_logits(x[0]), logits[:1])
    with pytest.raises(ValueError):
        engine.predict_logits(np.zeros((2, 6, 36), np.float32))
    with pytest.raises(ValueError):
        engine.predict_logits(np.full((1, 6, 37), np.nan, np.float32))


def test_non_finite_inputs_are_rejected_by_the_kernels(
    engines: dict[str, tuple[Bundle, Engine]],
) -> None:
    """NaN or an infinity anywhere in any sample, on the fast path (float32 C-contiguous)
    and the converting one (float64), fails the call with a message; the engine goes on."""
    _, engine = engines["sensor"]
    x = _inputs(SENSOR, 5)
    good = engine.predict_logits(x)
    for bad in (np.nan, np.inf, -np.inf):
        for s, c, t in ((0, 0, 0), (4, 5, 36), (2, 3, 17)):
            y = x.copy()
            y[s, c, t] = bad
            with pytest.raises(ValueError, match=r"NaN or infinity \(1 of 5 samples\)"):
                engine.predict_logits(y)
            with pytest.raises(ValueError, match="NaN or infinity"):
                engine.predict_logits(y.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(2 of 5"):
        engine.trace(np.where(np.arange(5)[:, None, None] % 2 == 1, np.nan, x))
    big = np.float32(3e38)  # finite extremes are codes at the clamps, not errors
    engine.predict_logits(np.full((1, 6, 37), big, np.float32))
    np.testing.assert_array_equal(engine.predict_logits(x), good)


def test_views_and_workspaces(engines: dict[str, tuple[Bundle, Engine]]) -> None:
    """Strided views take the converting path; sequential calls of any batch size reuse
    one workspace; the kernels allocate their own when given none."""
    bundle, engine = engines["sensor"]
    engine.set_bits(8)
    x = _inputs(SENSOR, 40)
    want = reference.forward(
        bundle.arch["layers"], bundle.quant[8], bundle.norm_mean, bundle.norm_std, x
    )
    np.testing.assert_array_equal(engine.predict_logits(x[::2]), want[::2])
    for n in (1, 40, 3, 17):
        np.testing.assert_array_equal(engine.predict_logits(x[:n]), want[:n])
    assert len(engine._workspaces) == 1
    assert engine._workspaces[0].nbytes == engine._state.model.sizes[tables.W_BYTES]
    out = np.empty((3, bundle.num_classes), np.float32)
    xs = np.ascontiguousarray(x[:3].reshape(3, -1))
    empty = np.empty(0, np.uint8)
    bad = engine._kernels.run_program(
        xs, *engine._state.args, out, empty, empty.view(np.int64), empty
    )
    assert bad == 0
    np.testing.assert_array_equal(out, want[:3])


def test_weights_and_workspace_layout_on_cache_lines(
    engines: dict[str, tuple[Bundle, Engine]],
) -> None:
    """Weights start on 64-byte lines, after a swap too; a workspace at any offset gives
    the same logits (the kernel starts its layout on a line inside it)."""
    bundle, engine = engines["sensor"]
    engine.set_bits(8)
    st = engine._state
    swapped = plan_weights.replace_layers(st.model, st.weights, {0: st.codes[0]})
    for w in (st.weights, swapped):
        assert all(a.ctypes.data % 64 == 0 for a in (w.panel, w.bias, w.m0, w.shift))
    x = _inputs(SENSOR, 20)
    want = reference.forward(
        bundle.arch["layers"], bundle.quant[8], bundle.norm_mean, bundle.norm_std, x
    )
    xs = np.ascontiguousarray(x.reshape(20, -1))
    size = int(st.model.sizes[tables.W_BYTES])
    buf = np.empty(size + 64, np.uint8)
    empty = np.empty(0, np.uint8)
    for off in (0, 16, 40, 63):
        out = np.empty((20, bundle.num_classes), np.float32)
        work = buf[off : off + size]
        engine._kernels.run_program(xs, *st.args, out, empty, empty.view(np.int64), work)
        np.testing.assert_array_equal(out, want)


def test_the_kernel_writes_nothing_past_its_workspace(kernels: backend.Kernels) -> None:
    """A linear layer after gap with a full block of 16 outputs decodes 16 rows of weights
    into the int64 scratch, the workspace's last part: the plan must leave room for them
    (they once ran 64 bytes past it, into whatever the caller's buffer held next)."""
    spec = {**SENSOR, "num_classes": 16}
    spec["layers"] = [*SENSOR["layers"][:-1], {**SENSOR["layers"][-1], "out_features": 16}]
    bundle = random_bundle(spec, seed=3, bits=(8,))
    engine = Engine(bundle, kernels=kernels)
    st = engine._state
    x = _inputs(SENSOR, 4)
    want = reference.forward(
        bundle.arch["layers"], bundle.quant[8], bundle.norm_mean, bundle.norm_std, x
    )
    size = int(st.model.sizes[tables.W_BYTES])
    empty = np.empty(0, np.uint8)
    for off in (0, 16, 40, 63):
        buf = np.full(size + 128, 0xA5, np.uint8)
        out = np.empty((4, 16), np.float32)
        engine._kernels.run_program(
            np.ascontiguousarray(x.reshape(4, -1)),
            *st.args,
            out,
            empty,
            empty.view(np.int64),
            buf[off : off + size],
        )
        np.testing.assert_array_equal(out, want)
        assert np.all(buf[off + size :] == 0xA5), f"written past the workspace (offset {off})"


def test_concurrent_callers_never_share_a_workspace(kernels: backend.Kernels) -> None:
    bundle = random_bundle(SENSOR, seed=5, bits=(8,))
    engine = Engine(bundle, kernels=kernels)
    inputs = [_inputs(SENSOR, n, seed=n) for n in (1, 7, 16, 33)]
    expected = [engine.predict_logits(x) for x in inputs]
    errors: list[BaseException] = []

    def infer(i: int) -> None:
        try:
            for _ in range(150):
                np.testing.assert_array_equal(engine.predict_logits(inputs[i]), expected[i])
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=infer, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 1 <= len(engine._workspaces) <= len(inputs)


def test_properties_and_bit_switch(engines: dict[str, tuple[Bundle, Engine]]) -> None:
    bundle, engine = engines["image"]
    engine.set_bits(4)
    assert engine.bits == 4 and engine.available_bits == tuple(sorted(BITS))
    assert engine.input_shape == (3, 9, 7) and engine.num_classes == 3
    assert engine.model_version == bundle.model_version
    assert engine.weight_bytes(4) * 2 <= engine.weight_bytes(8) + 64 * 4
    with pytest.raises(ValueError):
        engine.set_bits(5)


def test_scratch_engine_logs_its_start_and_swaps_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bundle = random_bundle(IMAGE, seed=3, bits=(4,))
    codes = {
        0: np.zeros((bundle.quant[4].layers[0].out_features, bundle.quant[4].layers[0].k), np.int8)
    }
    caplog.set_level(logging.DEBUG, logger="edge_agent.engine.engine")
    for scratch, level in ((False, logging.INFO), (True, logging.DEBUG)):
        caplog.clear()
        Engine(bundle, scratch=scratch).swap_weights(codes)
        assert [r.levelno for r in caplog.records] == [level, level]


@pytest.fixture(params=["jit", "aot"])
def kernels(request: pytest.FixtureRequest) -> backend.Kernels:
    """Each kernel backend: numba's JIT, and the AOT module built for the test session."""
    if request.param == "aot":
        aot: backend.Kernels = request.getfixturevalue("aot_kernels")
        return aot
    return backend.load("jit")


def test_swap_weights_matches_reference_and_layer_codes(kernels: backend.Kernels) -> None:
    bundle = random_bundle(IMAGE, seed=3, bits=(4,))
    engine = Engine(bundle, kernels=kernels)
    assert engine.backend == kernels.backend
    rng = np.random.default_rng(5)
    before = engine.model_version
    new_q = [
        rng.integers(-8, 8, (lq.out_features, lq.k)).astype(np.int8)
        for lq in bundle.quant[4].layers
    ]
    version = engine.swap_weights({0: new_q[0], 3: pack_rows(new_q[3], 4)})
    assert version != before and engine.model_version == version
    np.testing.assert_array_equal(engine.layer_codes(0), new_q[0])
    np.testing.assert_array_equal(engine.layer_codes(3), new_q[3])
    for i in (0, 3):  # the reference sees the same update through the bundle
        bundle.quant[4].layers[i].packed = pack_rows(new_q[i], 4)
    x = _inputs(IMAGE, 3)
    want = reference.forward(IMAGE["layers"], bundle.quant[4], bundle.norm_mean, bundle.norm_std, x)
    np.testing.assert_array_equal(engine.predict_logits(x), want)
    with pytest.raises(ValueError):
        engine.swap_weights({1: np.full((9, 17 * 6), 8, np.int16)})
    with pytest.raises(IndexError):
        engine.swap_weights({7: new_q[0]})


def test_swap_is_atomic_under_concurrent_inference(kernels: backend.Kernels) -> None:
    bundle = random_bundle(SENSOR, seed=7, bits=(8,))
    engine = Engine(bundle, kernels=kernels)
    x = _inputs(SENSOR, 2)
    rng = np.random.default_rng(9)
    sets = [
        [
            rng.integers(-128, 128, (lq.out_features, lq.k)).astype(np.int8)
            for lq in bundle.quant[8].layers
        ]
        for _ in range(3)
    ]
    expected = []
    for codes in sets:
        engine.swap_weights(list(codes))
        expected.append(engine.predict_logits(x))
    stop = threading.Event()
    seen: list[np.ndarray] = []
    errors: list[BaseException] = []

    def infer() -> None:
        try:
            while not stop.is_set():
                seen.append(engine.predict_logits(x))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=infer) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(60):
        engine.swap_weights(list(sets[i % 3]))
    stop.set()
    for t in threads:
        t.join()
    assert not errors and seen
    for out in seen:  # every result comes from exactly one complete set of weights
        assert any(np.array_equal(out, e) for e in expected)


def _run_snippet(code: str, env: dict[str, str]) -> str:
    full_env = {**os.environ, **env}
    # emulated boards (tests/arm64) compile every kernel in the child: they raise this
    timeout = float(os.environ.get("EDGE_AGENT_TEST_SUBPROCESS_TIMEOUT_S", "300"))
    # -P: the child imports edge_agent and kernels from where this process does (the
    # installed package on a board), not from the checkout in its cwd; numba's on-disk
    # cache is keyed by the kernels' file paths, so the child reuses this one's kernels
    done = subprocess.run(
        [sys.executable, "-P", "-c", code],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_engine_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_engine import random_bundle, SENSOR\n"
        "from edge_agent.bundle_io import save_bundle\n"
        f"save_bundle(random_bundle(SENSOR, bits=(8,)), {str(tmp_path / 'b.eab')!r})\n"
        "for m in [m for m in sys.modules if m.startswith(('test_engine', 'pytest', '_pytest'))]:\n"
        "    del sys.modules[m]\n"
        "from edge_agent.engine.engine import Engine\n"
        f"e = Engine.from_path({str(tmp_path / 'b.eab')!r})\n"
        "e.predict(np.zeros((1, 6, 37), np.float32))\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    assert _run_snippet(code, {}).strip() == "[]"


def reference_snippet(isa: str, archs: list[str], n: int) -> str:
    """Child-process code: the engine with ``isa``'s kernels equals the reference on ``n``
    samples of each of ``archs`` at every bit-width; prints ``ok``."""
    return (
        "import sys, numpy as np\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_engine import random_bundle, _inputs, ARCHS\n"
        "from edge_agent.engine import reference\n"
        "from edge_agent.engine.engine import Engine\n"
        f"for arch in {archs!r}:\n"
        "    b = random_bundle(ARCHS[arch])\n"
        "    e = Engine(b)\n"
        f"    assert e.isa == {isa!r}, e.isa\n"
        f"    x = _inputs(ARCHS[arch], {n})\n"
        "    for bits in (8, 4, 3, 2):\n"
        "        e.set_bits(bits)\n"
        "        want = reference.forward(b.arch['layers'], b.quant[bits], b.norm_mean,\n"
        "                                 b.norm_std, x)\n"
        "        assert np.array_equal(e.predict_logits(x), want), (arch, bits)\n"
        "print('ok')\n"
    )


def test_generic_kernels_equal_reference(tmp_path: Path) -> None:
    """The portable (non-VNNI) micro-kernel path, compiled in a child process."""
    env = {"EDGE_AGENT_KERNEL_ISA": "generic", "EDGE_AGENT_JIT_CACHE": str(tmp_path / "jit")}
    assert _run_snippet(reference_snippet("generic", ["image"], 3), env).strip() == "ok"


def _codes_from_panels(engine: Engine, index: int, bits: int) -> np.ndarray:
    """A layer's signed codes rebuilt from its kernel panel (what layer_codes once did)."""
    st = engine._current[bits]
    w_off, b, k, o = (int(v) for v in st.weights.ltab[index, :4])
    size = layout.panel_nbytes(o, k, b)
    kernel_q = layout.from_panel(st.weights.panel[w_off : w_off + size], o, k, b)
    perm = plan_weights.kernel_order(st.model.slots[index], np.arange(k, dtype=np.int64)[None, :])[
        0
    ]
    q = np.empty_like(kernel_q)
    q[:, perm] = kernel_q
    return q


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_kept_codes_equal_the_panels_through_swaps(arch: str) -> None:
    spec = ARCHS[arch]
    bundle = random_bundle(spec, seed=13, bits=(8, 4))
    engine = Engine(bundle, bits=4)
    rng = np.random.default_rng(2)

    def check() -> None:
        for b in engine.available_bits:
            codes = engine.codes(b)
            for i in range(len(bundle.quant[b].layers)):
                want = _codes_from_panels(engine, i, b)
                np.testing.assert_array_equal(engine.layer_codes(i, b), want)
                np.testing.assert_array_equal(codes[i], want)
                assert engine.layer_codes(i, b).dtype == np.int8

    check()
    layers = bundle.quant[4].layers
    new = [rng.integers(-8, 8, (lq.out_features, lq.k)).astype(np.int8) for lq in layers]
    mine = new[0].copy()
    engine.swap_weights({0: mine, len(layers) - 1: pack_rows(new[-1], 4)})
    mine[:] = 0  # the engine keeps its own copy
    got = engine.layer_codes(0)
    got[:] = 1  # and hands out copies
    check()
    engine.swap_params(biases={0: engine.layer_bias(0) + 1})
    engine.set_bits(8)
    engine.swap_weights([None, *(rng.integers(-128, 128, lq.shape) for lq in engine.codes()[1:])])
    check()


def test_bundle_with_codes_packs_the_engines_codes() -> None:
    bundle = random_bundle(SENSOR, seed=4, bits=(8, 4))
    engine = Engine(bundle, bits=4)
    rng = np.random.default_rng(3)
    new = [
        rng.integers(-8, 8, (lq.out_features, lq.k)).astype(np.int8)
        for lq in bundle.quant[4].layers
    ]
    engine.swap_weights(new)
    before = [lq.packed.copy() for lq in bundle.quant[4].layers]
    saved = bundle.with_codes(4, engine.codes())
    assert saved is not bundle and saved.quant[8] is bundle.quant[8]
    for lq, q in zip(saved.quant[4].layers, new, strict=True):
        np.testing.assert_array_equal(lq.packed, pack_rows(q, 4))
    for lq, packed in zip(bundle.quant[4].layers, before, strict=True):  # original untouched
        np.testing.assert_array_equal(lq.packed, packed)
    reloaded = Engine(saved, bits=4)
    x = _inputs(SENSOR, 4)
    np.testing.assert_array_equal(reloaded.predict_logits(x), engine.predict_logits(x))
    assert reloaded.model_version != Engine(bundle, bits=4).model_version


def test_predict_normalizes_per_series_exactly_as_the_agent_did() -> None:
    plain = random_bundle(SENSOR, seed=6, bits=(8, 4))
    series = dataclasses.replace(plain, meta={**plain.meta, SERIES_NORM: True})
    rng = np.random.default_rng(8)
    X = (_inputs(SENSOR, 12) * rng.uniform(1e-3, 1e3, (12, 1, 1))).astype(np.float32)
    X[3, 1] = 5.0  # a flat channel becomes zeros
    want_x = normalize_series(X)  # what service/model.py's prepare did before predict
    for bits in (8, 4):
        engine, before = Engine(series, bits=bits), Engine(plain, bits=bits)
        assert engine.series_norm and not before.series_norm
        np.testing.assert_array_equal(engine.prepare(X), want_x)
        np.testing.assert_array_equal(engine.prepare(X[0]), want_x[0])
        want = before.predict(want_x)
        for got in (engine.predict(X), engine.predict(want_x, prepared=True)):
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(engine.predict(X[5])[0], want[0][5:6])
        np.testing.assert_array_equal(engine.predict_classes(want_x), want[0])
        # without the meta key nothing changes
        assert before.prepare(X) is X
        np.testing.assert_array_equal(before.predict(X)[1], before.predict(X, prepared=True)[1])
