"""Argument types of the kernel entry point the engine calls (numba-free).

:func:`kernels.codegen.runner.run_program` is compiled ahead of time for exactly these types
(:mod:`kernels.build.aot`). A compiled module does not check what it is given: an array of
another dtype or layout is read as if it had the compiled one. :func:`check` is the
guard, run on a model's arrays whenever the engine makes a new state.

The model's arrays and scalars (:data:`MODEL_ARGS`) reach the kernel as one int64
*descriptor* (:func:`descriptor`): three words per argument, an array's address and
shape or a scalar's value (a float32 as its bits). The compiled wrapper converts each
array argument on every call (an allocation and reference counts) and the kernel's views
of it count references atomically; a descriptor is one conversion, and the arrays the
kernel builds from it (:mod:`kernels.codegen.raw`) count none. Whoever holds a descriptor
must hold the arrays it points to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Arg:
    """One argument: a C-contiguous array of ``ndim`` dimensions, or a scalar (``ndim`` 0)."""

    name: str
    dtype: np.dtype
    ndim: int

    def pycc_type(self) -> str:
        """The argument in numba's signature syntax, e.g. ``i8[:,::1]``."""
        code = self.dtype.str[1:]  # "f4", "i8", "u1", ...
        if self.ndim == 0:
            return code
        return f"{code}[{':,' * (self.ndim - 1)}::1]"


def _arg(name: str, dtype: type, ndim: int) -> Arg:
    return Arg(name, np.dtype(dtype), ndim)


MODEL_ARGS = (
    _arg("ops", np.int64, 2),
    _arg("tens", np.int64, 2),
    _arg("ltab", np.int64, 2),
    _arg("panel", np.uint8, 1),
    _arg("bias", np.int32, 1),
    _arg("m0", np.int32, 1),
    _arg("shift", np.int32, 1),
    _arg("out_mult", np.float32, 1),
    _arg("mean", np.float32, 1),
    _arg("std", np.float32, 1),
    _arg("in_scale", np.float32, 0),
    _arg("in_zp", np.int64, 0),
    _arg("hi", np.int64, 0),
    _arg("sizes", np.int64, 1),
)
#: the entry point's arguments: samples, the model's descriptor, logits, trace, workspace
RUN_PROGRAM = (
    _arg("x", np.float32, 2),
    _arg("model", np.int64, 1),
    _arg("logits", np.float32, 2),
    _arg("trace", np.uint8, 1),
    _arg("trace_at", np.int64, 1),
    _arg("work", np.uint8, 1),
)
WORDS = 3  # descriptor words per model argument


def slot(name: str) -> int:
    """Index of the first descriptor word of the model argument ``name``."""
    return WORDS * [a.name for a in MODEL_ARGS].index(name)


def descriptor(values: Sequence[object]) -> np.ndarray:
    """The int64 descriptor of model arguments (checked first, see :func:`check`): per
    argument an array's address, rows and columns (0 for a 1-D array), or a scalar's value
    (a float as its float32 bits) and two zeros."""
    check(values)
    words = np.zeros(WORDS * len(values), np.int64)
    for i, (arg, value) in enumerate(zip(MODEL_ARGS, values, strict=True)):
        if isinstance(value, np.ndarray):
            shape = (*value.shape, 0)[:2]
            words[WORDS * i : WORDS * i + 3] = (value.ctypes.data, *shape)
        elif arg.dtype.kind == "f":
            words[WORDS * i] = int(np.float32(value).view(np.int32))  # type: ignore[arg-type]
        else:
            words[WORDS * i] = int(value)  # type: ignore[call-overload]
    return words


def pycc_signature(args: Sequence[Arg] = RUN_PROGRAM) -> str:
    """numba signature of the kernel, returning an int64 (the number of non-finite
    samples), e.g. ``i8(f4[:,::1], i8)``."""
    return f"i8({', '.join(a.pycc_type() for a in args)})"


def check(values: Sequence[object], args: Sequence[Arg] = MODEL_ARGS) -> None:
    """Raise TypeError unless ``values`` have exactly the types of ``args``."""
    if len(values) != len(args):
        raise TypeError(f"{len(values)} arguments for {len(args)}")
    for arg, value in zip(args, values, strict=True):
        if arg.ndim == 0:
            floating = arg.dtype.kind == "f"
            types = (float, np.floating) if floating else (int, np.integer)
            ok = isinstance(value, types) and not isinstance(value, bool)
            want = "a float scalar" if floating else "an integer scalar"
        else:
            ok = (
                isinstance(value, np.ndarray)
                and value.dtype == arg.dtype
                and value.ndim == arg.ndim
                and value.flags.c_contiguous
            )
            want = f"a C-contiguous {arg.ndim}-D {arg.dtype} array"
        if not ok:
            raise TypeError(f"kernel argument {arg.name!r} must be {want}, got {_describe(value)}")


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        layout = "C-contiguous" if value.flags.c_contiguous else "non-contiguous"
        return f"a {layout} {value.ndim}-D {value.dtype} array"
    return type(value).__name__
