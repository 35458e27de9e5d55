"""The weight bit-widths the kernels support, in a module without numpy: the command line
checks ``--bits`` before ``train`` sets numpy's BLAS threads (OpenBLAS reads them once,
when numpy loads)."""

SUPPORTED_BITS = (2, 3, 4, 8)
