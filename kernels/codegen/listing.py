"""Assembly listings of generated IR for a named CPU, for the tests and ``bench/kernel_asm.py``.

LLVM cross-compiles, so any host can check what a kernel lowers to on a Pi or a Zen 3.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir


def emit_assembly(module: ir.Module, cpu: str, features: str = "", opt: int = 3) -> str:
    """The assembly of ``module`` (its triple set) compiled for ``cpu``."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    target = llvm.Target.from_triple(module.triple)
    machine = target.create_target_machine(cpu=cpu, features=features, opt=opt)
    parsed = llvm.parse_assembly(str(module))
    parsed.verify()
    return str(machine.emit_assembly(parsed))


def accumulate_assembly(triple: str, cpu: str, isa: str, bits: int, rows: int, codes: bool) -> str:
    """The assembly of one micro-kernel accumulate of ``rows`` rows at ``bits`` bits."""
    from kernels.codegen.microkernel import accumulate

    module = ir.Module(name="kernel_asm")
    module.triple = triple
    i8p, i64 = ir.IntType(8).as_pointer(), ir.IntType(64)
    v16 = ir.VectorType(ir.IntType(32), 16)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i8p, v16.as_pointer(), i64, i64, i64, i64, i64])
    fn = ir.Function(module, fnty, "acc")
    builder = ir.IRBuilder(fn.append_basic_block())
    a, w, out, *ints = fn.args
    sums = accumulate(builder, a, w, list(ints), bits, rows, isa, codes=codes)
    for r, s in enumerate(sums):
        builder.store(s, builder.gep(out, [ir.Constant(i64, r)]))
    builder.ret_void()
    return emit_assembly(module, cpu)
