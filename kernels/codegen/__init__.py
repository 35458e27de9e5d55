"""The numba kernels: instruction-set choice, the JIT decorator and its cache, the
micro-kernel, GEMM, epilogue, the other ops and the whole-model interpreter."""
