"""Inference engine: runs a bundle's quantized models on the integer kernels.

The kernels are compiled ahead of time where that was done (``edge-agent
compile-kernels``), else JIT-compiled by numba (:mod:`kernels.exec.backend`); the engine
imports numba only in the second case. Every bit-width of the bundle is laid out once at
load. The active model is one frozen :class:`EngineState` object; inference reads that
reference once per call, and :meth:`Engine.swap_weights` / :meth:`Engine.set_bits` build
a new state and assign it, so readers on other threads never see a half-updated model.
A call allocates only its logits: the kernels' scratch comes from a pool of workspaces
(one per concurrent caller, kept for the next call), and a float32 C-contiguous batch goes
to the kernels as it is; the kernels themselves reject non-finite inputs. Torch is never
imported.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping

import numpy as np

from edge_agent.bundle import SERIES_NORM, Bundle
from edge_agent.bundle_io import load_bundle
from edge_agent.data.datasets import normalize_series
from edge_agent.engine.logits import top_and_confidence
from edge_agent.engine.state import (
    EngineState,
    WeightUpdate,
    checked_codes,
    frozen_codes,
    layer_params,
)
from kernels.digest import sha256
from kernels.exec import backend
from kernels.plan import bias, program, tables, trace
from kernels.plan import weights as plan_weights

log = logging.getLogger(__name__)

_F32 = np.dtype(np.float32)

ModelKey = tuple[int, str]
"""Which integer model gave some logits: (bits, version). Two engines with the same key
give the same logits for the same inputs (the version is the content hash of the integer
weights, and of the normalization once the statistics rung moved it)."""


_NO_TRACE, _NO_TRACE_AT = np.empty(0, np.uint8), np.empty(0, np.int64)  # inference records nothing


class Engine:
    """Runs one bundle; thread-safe for concurrent inference and weight swaps.

    ``kernels`` defaults to the process's choice (:func:`kernels.exec.backend.default`). A
    ``scratch`` engine (a calibrator's private copy for trying candidate weights) logs its
    start and swaps at DEBUG, not INFO.
    """

    def __init__(
        self,
        bundle: Bundle,
        bits: int | None = None,
        kernels: backend.Kernels | None = None,
        *,
        scratch: bool = False,
    ) -> None:
        self._log_level = logging.DEBUG if scratch else logging.INFO
        self._kernels = backend.default() if kernels is None else kernels
        self._run_program = self._kernels.run_program  # bound once: read on every call
        self.input_shape: tuple[int, ...] = bundle.input_shape
        self.num_classes: int = bundle.num_classes
        self.label_names: list[str] = list(bundle.label_names)
        self.series_norm = bool(bundle.meta.get(SERIES_NORM))  # z-normalize each sample first
        self._features = int(np.prod(self.input_shape))
        self._initial: dict[int, EngineState] = {}
        for b, quant in sorted(bundle.quant.items()):
            params = layer_params(quant)
            model, weights = program.build_model(
                bundle.arch["layers"],
                self.input_shape,
                params,
                bundle.norm_mean,
                bundle.norm_std,
                quant.input_scale,
                quant.input_zp,
                quant.act_bits,
                act_offset=self._kernels.act_offset,
            )
            if model.num_outputs != self.num_classes:
                raise ValueError(
                    f"{b}-bit model gives {model.num_outputs} outputs for "
                    f"{self.num_classes} classes"
                )
            codes = tuple(frozen_codes(p.q) for p in params)
            self._initial[b] = EngineState(b, model, weights, bundle.model_version, codes)
        self._current = dict(self._initial)  # latest state per bit-width
        # kernel workspaces big enough for every bit-width's model (swaps keep the layouts);
        # list.pop and list.append are atomic, so concurrent callers never share one
        self._work_bytes = max(int(st.model.sizes[tables.W_BYTES]) for st in self._initial.values())
        self._workspaces: list[np.ndarray] = []
        self._write_lock = threading.Lock()  # serializes writers; readers never lock
        self._state = self._current[bundle.default_bits if bits is None else bits]
        log.log(
            self._log_level,
            "engine ready: %s, bit-widths %s, active %d, kernels %s (%s)",
            bundle.arch.get("name", "model"),
            sorted(self._current),
            self._state.bits,
            self.isa,
            self.backend,
        )

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], bits: int | None = None) -> Engine:
        """Load a bundle file and build an engine for it."""
        return cls(load_bundle(path), bits=bits)

    # ------------------------------------------------------------------ properties

    @property
    def bits(self) -> int:
        """Weight bit-width of the active model."""
        return self._state.bits

    @property
    def available_bits(self) -> tuple[int, ...]:
        """Bit-widths the bundle holds."""
        return tuple(sorted(self._current))

    @property
    def model_version(self) -> str:
        """Content hash of the active integer weights (changes with every swap)."""
        return self._state.version

    @property
    def model_key(self) -> ModelKey:
        """(bits, version) of the active model (see :data:`ModelKey`)."""
        st = self._state
        return st.bits, st.version

    @property
    def isa(self) -> str:
        """Instruction set the kernels were compiled for."""
        return self._kernels.isa

    @property
    def backend(self) -> str:
        """How the kernels were compiled: ``"aot"`` (ahead of time) or ``"jit"`` (numba)."""
        return self._kernels.backend

    def weight_bytes(self, bits: int | None = None) -> int:
        """Bytes of packed weights the kernels hold for one bit-width."""
        st = self._state if bits is None else self._current[bits]
        return int(st.weights.panel.nbytes)

    # ------------------------------------------------------------------ inference

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Float logits (N, classes) of float inputs (N, *input_shape) or one (*input_shape)."""
        return self._run(self._state, self._batch(x))

    def predict_logits_keyed(self, x: np.ndarray) -> tuple[np.ndarray, ModelKey]:
        """:meth:`predict_logits` and the key of the model that computed them (read in
        the same step: a swap on another thread cannot come between them)."""
        st = self._state  # the one read of the shared reference
        return self._run(st, self._batch(x)), (st.bits, st.version)

    def _batch(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the kernels take it: the common case, a float32 C-contiguous batch
        (checked cheaply: its dtype is numpy's own float32 object), as a view."""
        if (
            type(x) is np.ndarray
            and x.dtype is _F32
            and x.shape[1:] == self.input_shape
            and x.flags.c_contiguous
        ):
            return x.reshape(x.shape[0], self._features)
        return self._as_batch(x)

    def _run(
        self,
        st: EngineState,
        xs: np.ndarray,
        trace_buf: np.ndarray = _NO_TRACE,
        trace_at: np.ndarray = _NO_TRACE_AT,
    ) -> np.ndarray:
        """``xs``: C-contiguous float32 (N, features), as :meth:`_as_batch` makes it."""
        out = np.empty((xs.shape[0], self.num_classes), _F32)
        pool = self._workspaces
        work = pool.pop() if pool else np.empty(self._work_bytes, np.uint8)
        bad = self._run_program(xs, st.descriptor, out, trace_buf, trace_at, work)
        pool.append(work)
        if bad:
            raise ValueError(f"input contains NaN or infinity ({bad} of {len(xs)} samples)")
        return out

    def trace(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Float logits of a batch and every weighted layer's input codes with the zero
        point subtracted (:func:`kernels.plan.trace.layer_inputs`), from one kernel run."""
        st = self._state
        xs = self._as_batch(x)
        at, per_sample = trace.trace_plan(st.model)
        buf = np.empty(len(xs) * per_sample, np.uint8)
        out = self._run(st, xs, buf, at)
        return out, trace.layer_inputs(st.model, st.weights.ltab, buf, at, len(xs))

    def predict_classes(self, x: np.ndarray) -> np.ndarray:
        """Class indices (int64) of a batch."""
        return self.predict_logits(x).argmax(axis=1).astype(np.int64)

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """Samples as the model takes them: z-normalized per series (every channel over its
        own time or pixel axes) if the bundle was trained so, else ``x`` unchanged."""
        if not self.series_norm:
            return x
        a = np.asarray(x, dtype=np.float32)
        return normalize_series(a[None])[0] if a.shape == self.input_shape else normalize_series(a)

    def predict(self, x: np.ndarray, *, prepared: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Class indices (int64) and softmax confidences (float32) for a batch of samples as
        they arrive (:meth:`prepare` applied here) or, ``prepared``, as the model takes them
        (what :meth:`prepare` returned; :meth:`predict_logits`, :meth:`predict_classes`
        and :meth:`trace` take these)."""
        return top_and_confidence(self.predict_logits(x if prepared else self.prepare(x)))

    def _as_batch(self, x: np.ndarray) -> np.ndarray:
        a = np.asarray(x, dtype=np.float32)
        if a.shape == self.input_shape:
            a = a[None]
        if a.shape[1:] != self.input_shape:
            raise ValueError(f"input shape {a.shape} does not match (N, {self.input_shape})")
        return np.ascontiguousarray(a.reshape(a.shape[0], self._features))

    def warmup(self) -> None:
        """Run every bit-width once (the JIT compiles or loads its cache here)."""
        xs = np.zeros((1, self._features), dtype=np.float32)
        for st in list(self._current.values()):
            self._run(st, xs)

    # ------------------------------------------------------------------ updates

    def set_bits(self, bits: int) -> None:
        """Make the model of another bit-width (with its latest weights) active."""
        with self._write_lock:
            if bits not in self._current:
                raise ValueError(f"bundle has no {bits}-bit model (has {self.available_bits})")
            self._state = self._current[bits]
        log.log(self._log_level, "active bit-width: %d", bits)

    def swap_weights(
        self, update: WeightUpdate, bits: int | None = None, version: str | None = None
    ) -> str:
        """Atomically replace the integer weights of some layers; returns the new version.

        ``update`` maps weighted-layer indices to new weights, or lists one entry per
        weighted layer (``None`` keeps a layer). An entry is either signed codes (any
        signed integer dtype, shape (O, K), torch column order) or packed rows (uint8,
        (O, row_bytes), the bundle format). Bit-widths, scales and biases are unchanged.
        The new weights are laid out first; the swap itself is one reference assignment.
        """
        with self._write_lock:
            b = self._state.bits if bits is None else bits
            if b not in self._current:
                raise ValueError(f"bundle has no {b}-bit model (has {self.available_bits})")
            old = self._current[b]
            codes = checked_codes(old, update)
            weights = plan_weights.replace_layers(old.model, old.weights, codes)
            if version is None:
                h = sha256(old.version.encode())
                for i in sorted(codes):
                    h.update(i.to_bytes(4, "little") + codes[i].tobytes())
                version = h.hexdigest()[:12]
            kept = list(old.codes)
            for i, q in codes.items():
                kept[i] = frozen_codes(q)
            new = EngineState(b, old.model, weights, version, tuple(kept))
            self._current[b] = new
            if self._state.bits == b:
                self._state = new
        log.log(
            self._log_level,
            "swapped %d layer(s) of the %d-bit model: version %s",
            len(codes),
            b,
            version,
        )
        return version

    def swap_params(
        self,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        biases: Mapping[int, np.ndarray] | None = None,
        bits: int | None = None,
        version: str | None = None,
        requant: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> str:
        """Atomically replace the input normalization (per-channel float32 ``mean`` and
        ``std``), the int32 ``bias_q`` of some weighted layers (index -> (O,)) and/or the
        requantization multipliers of some hidden layers (index -> (m0, shift)) of one
        bit-width's model; returns the new version. Weights and zero points are unchanged;
        the new parameters are exactly what :mod:`edge_agent.reference` computes with (the
        statistics rung's corrections, forward-only)."""
        with self._write_lock:
            b = self._state.bits if bits is None else bits
            if b not in self._current:
                raise ValueError(f"bundle has no {b}-bit model (has {self.available_bits})")
            new = self._with_params(self._current[b], mean, std, biases, requant, version)
            self._current[b] = new
            if self._state.bits == b:
                self._state = new
        log.log(
            self._log_level, "swapped parameters of the %d-bit model: version %s", b, new.version
        )
        return new.version

    def state(self, bits: int | None = None) -> EngineState:
        """The latest model of the active (or ``bits``) bit-width, as inference reads it."""
        return self._state if bits is None else self._current[bits]

    def variant(
        self,
        base: EngineState,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        biases: Mapping[int, np.ndarray] | None = None,
        requant: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> EngineState:
        """``base`` with other parameters (as :meth:`swap_params` takes them), not made
        active: :meth:`predict_logits_with` runs it. The weight panels are shared."""
        return self._with_params(base, mean, std, biases, requant, None)

    def predict_logits_with(self, st: EngineState, x: np.ndarray) -> np.ndarray:
        """:meth:`predict_logits` on a given model state (:meth:`variant`, :meth:`state`)."""
        return self._run(st, self._as_batch(x))

    @staticmethod
    def _with_params(
        old: EngineState,
        mean: np.ndarray | None,
        std: np.ndarray | None,
        biases: Mapping[int, np.ndarray] | None,
        requant: Mapping[int, tuple[np.ndarray, np.ndarray]] | None,
        version: str | None,
    ) -> EngineState:
        """``old`` with new parameters (see :meth:`swap_params`); the version hashes them."""
        model, weights = old.model, old.weights
        h = sha256(old.version.encode())
        if mean is not None or std is not None:
            m = np.ascontiguousarray(model.mean if mean is None else mean, np.float32)
            s = np.ascontiguousarray(model.std if std is None else std, np.float32)
            if (
                m.shape != model.mean.shape
                or s.shape != model.std.shape
                or not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.all(s != 0))
            ):  # a negative std flips a channel (the statistics rung's signs)
                raise ValueError(f"normalization must be finite, shape {model.mean.shape}, std!=0")
            model = dataclasses.replace(model, mean=m, std=s)
            h.update(m.tobytes() + s.tobytes())
        if biases:
            weights = bias.replace_biases(model, weights, biases)
            for i in sorted(biases):
                h.update(i.to_bytes(4, "little") + np.asarray(biases[i], np.int32).tobytes())
        if requant:
            weights = bias.replace_requant(model, weights, requant)
            for i in sorted(requant):
                m0, sh = (np.asarray(v, np.int32).tobytes() for v in requant[i])
                h.update(i.to_bytes(4, "little") + m0 + sh)
        return EngineState(old.bits, model, weights, version or h.hexdigest()[:12], old.codes)

    def normalization(self, bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The input normalization (mean, std) float32 (C,) of the active (or ``bits``) model."""
        st = self._state if bits is None else self._current[bits]
        return st.model.mean.copy(), st.model.std.copy()

    def layer_bias(self, index: int, bits: int | None = None) -> np.ndarray:
        """Current int32 ``bias_q`` (O,) of one weighted layer."""
        st = self._state if bits is None else self._current[bits]
        return bias.layer_bias(st.model, st.weights, index)

    def layer_requant(self, index: int, bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Current requantization multiplier ``(m0, shift)`` (O,) int32 of a hidden layer."""
        st = self._state if bits is None else self._current[bits]
        return bias.layer_requant(st.weights, index)

    def layer_codes(self, index: int, bits: int | None = None) -> np.ndarray:
        """Current signed weights (O, K) int8 of one weighted layer, torch column order (a
        copy of the codes the engine keeps next to the layer's kernel panel)."""
        st = self._state if bits is None else self._current[bits]
        return st.codes[index].copy()

    def codes(self, bits: int | None = None) -> list[np.ndarray]:
        """Current signed weights of every weighted layer (:meth:`layer_codes`), as
        :meth:`edge_agent.bundle.Bundle.with_codes` takes them."""
        st = self._state if bits is None else self._current[bits]
        return [q.copy() for q in st.codes]
