"""Loading the kernels to run (numba-free): the AOT module if usable, else the JIT."""
