"""Argument types and checks the commands share: each refuses bad input before any work,
with the option's name."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_agent.endpoints import endpoint_problem
from kernels.plan.bitwidths import SUPPORTED_BITS


def bits_list(text: str) -> list[int]:
    """``--bits``: weight bit-widths, e.g. ``4`` or ``8,4,2``."""
    try:
        bits = [int(b) for b in text.split(",") if b]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--bits wants numbers like 4 or 8,4,2, got {text!r}"
        ) from None
    bad = [b for b in bits if b not in SUPPORTED_BITS]
    if not bits or bad:
        raise argparse.ArgumentTypeError(f"weight bit-widths must be 2, 3, 4 or 8, got {text!r}")
    return bits


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"want at least 1, got {value}")
    return value


def endpoint_arg(text: str) -> str:
    """A ZeroMQ endpoint option, refused by argparse when ZeroMQ would refuse it."""
    problem = endpoint_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before the work that ends in writing it, an output file that cannot be
    written: a directory, or one in a directory that is not there."""
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path}: a directory; give a file name in it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{option} {path}: no directory {path.parent}")


def seed(text: str) -> int:
    """A random seed numpy takes: 0..2^32-1."""
    value = int(text) if text.lstrip("-").isdigit() else -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"want a whole number in 0..2^32-1, got {text!r}")
    return value
