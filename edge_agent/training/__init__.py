"""Training side (torch): architectures, LSQ+ quantizers, FP training, QAT, export, QCore
miss tracking, flipper training and QAT bursts with their child process.

torch is imported only by this package; the agent's inference, ingest and calibration path
never imports it (tests/test_layout.py checks).
"""
