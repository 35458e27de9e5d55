"""Instructions of the micro-kernels' reduction loops, compiled by LLVM for a named CPU.

    python bench/kernel_asm.py [--cpu znver3] [--triple x86_64-unknown-linux-gnu]
        [--isa avx2] [--rows 8] [--bits 8 4 3 2] [--codes] [--asm]

Builds :func:`kernels.codegen.microkernel.accumulate` (or, with ``--codes``, the AVX2 8-bit
variant that sums the codes ``q + 128``) for ``--rows`` rows into a bare function, compiles
it at -O3 for ``--cpu`` and prints, per reduction loop, its instruction count, the
multiply-add instructions and the stack (spill) accesses in it; the numbers
bench/results/kernel_ab_avx2.md quotes. Needs no such CPU: LLVM cross-compiles.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.codegen.listing import accumulate_assembly

_OPS = ("vpmaddwd", "vpmaddubsw", "vpdpbusd", "sdot", "vpermd", "vpblendd")


def loops(asm: str) -> list[list[str]]:
    """Instructions of each block that ends in a backward conditional branch."""
    found = re.findall(r"\.LBB\d+_\d+:.*?\n(.*?)\n\s*(?:j(?:ne|l|b)|b\.\w+)\s", asm, re.S)
    return [
        [ln.strip() for ln in body.splitlines() if ln.strip() and ln.strip()[0] not in "#."]
        for body in found
    ]


def main(argv: list[str] | None = None) -> int:
    """Print the loops' instruction counts per bit-width."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", default="znver3")
    parser.add_argument("--triple", default="x86_64-unknown-linux-gnu")
    parser.add_argument("--isa", default="avx2")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4, 3, 2])
    parser.add_argument("--codes", action="store_true")
    parser.add_argument("--asm", action="store_true", help="print the assembly too")
    args = parser.parse_args(argv)
    for bits in args.bits:
        asm = accumulate_assembly(args.triple, args.cpu, args.isa, bits, args.rows, args.codes)
        for n, body in enumerate(loops(asm)):
            text = "\n".join(body)
            ops = ", ".join(f"{op} {text.count(op)}" for op in _OPS if op in text)
            spills = sum("sp" in re.sub(r"^\S+", "", ln) and "(%rsp)" in ln for ln in body)
            print(
                f"{args.isa} {args.cpu} {bits}-bit {args.rows} rows{' codes' if args.codes else ''}"
                f" loop {n}: {len(body)} instructions; {ops}; stack accesses {spills}"
            )
        if args.asm:
            print(asm)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
