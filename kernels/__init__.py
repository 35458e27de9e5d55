"""Integer kernels for edge-agent: bit packing, fixed-point requantization and numba
layer kernels. Knows nothing of models or files; importable without torch.

Grouped by stage: :mod:`kernels.plan` (numpy-only tables, packing and layout),
:mod:`kernels.codegen` (the numba kernels), :mod:`kernels.build` (ahead-of-time build
and cache paths), :mod:`kernels.exec` (the numba-free loader that picks AOT or JIT).
"""
