"""AMX availability: what the CPU offers, what this process was granted, and a way to refuse it.

Linux gives a process AMX tile state only after ``arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)``; oneDNN, onnxruntime's MLAS and XNNPACK ask for it before using
their AMX kernels and fall back to AVX-512 VNNI when refused. :func:`refuse_amx`
installs a seccomp filter on the calling process that answers that one request with
EPERM (everything else is allowed), so a child process started with it measures the
anchors as they would run on a CPU without AMX (a Raspberry Pi has none).
"""

from __future__ import annotations

import ctypes
import os
import platform

ARCH_GET_XCOMP_SUPP = 0x1021
ARCH_GET_XCOMP_PERM = 0x1022
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18
_NR_ARCH_PRCTL = 158  # x86-64
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06
_EPERM = 1


class _Filter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    ]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _xcomp(code: int) -> int | None:
    """The xfeature mask ``arch_prctl(code)`` reports, or None where the call fails."""
    if platform.machine() != "x86_64":
        return None
    mask = ctypes.c_uint64(0)
    if _libc().syscall(_NR_ARCH_PRCTL, code, ctypes.byref(mask)) != 0:
        return None
    return mask.value


def amx_state() -> dict[str, bool | None]:
    """Whether the CPU and kernel support AMX tile data, and whether this process holds it."""
    supp, perm = _xcomp(ARCH_GET_XCOMP_SUPP), _xcomp(ARCH_GET_XCOMP_PERM)
    bit = 1 << XFEATURE_XTILEDATA
    return {
        "supported": None if supp is None else bool(supp & bit),
        "permitted": None if perm is None else bool(perm & bit),
    }


def refuse_amx() -> None:
    """Make ``arch_prctl(ARCH_REQ_XCOMP_PERM, ...)`` fail with EPERM in this process from now on.

    Applies to the calling thread and threads it starts later: call it first thing in a
    fresh child process, before any library is loaded.
    """
    if platform.machine() != "x86_64":
        return  # no AMX to refuse
    code = [
        (_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_JEQ_K, 0, 5, _AUDIT_ARCH_X86_64),
        (_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (_JEQ_K, 0, 3, _NR_ARCH_PRCTL),
        (_LD_W_ABS, 0, 0, 16),  # low word of args[0]
        (_JEQ_K, 0, 1, ARCH_REQ_XCOMP_PERM),
        (_RET_K, 0, 0, _RET_ERRNO | _EPERM),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    filters = (_Filter * len(code))(*[_Filter(*c) for c in code])
    prog = _Prog(len(code), filters)
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def request_amx() -> int:
    """Ask for AMX tile data as the libraries do: 0 when granted, else the errno."""
    if platform.machine() != "x86_64":
        return -1
    libc = _libc()
    if libc.syscall(_NR_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0:
        return 0
    return ctypes.get_errno() or -1


if __name__ == "__main__":
    before = amx_state()
    granted = request_amx()
    why = os.strerror(granted) if granted > 0 else "ok"
    print(f"pid {os.getpid()}: {before}, request -> {granted} ({why})")
    refuse_amx()
    again = request_amx()
    print(f"after refuse_amx: request -> {again} ({os.strerror(again) if again > 0 else 'ok'})")
