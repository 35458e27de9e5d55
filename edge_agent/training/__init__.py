"""Training side (torch): architectures, LSQ+ quantizers, FP training, QAT and export.

torch is imported only by this package and by the calibrator's QAT bursts; the agent's
inference and ingest path never imports it.
"""
