"""Build plans for the compiled kernels (numpy only): bit packing, fixed-point
requantization, the op and tensor tables, panel layout and the argument ABI."""
