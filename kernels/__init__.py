"""Integer kernels for edge-agent: bit packing, fixed-point requantization and numba
layer kernels. Knows nothing of models or files; importable without torch."""
