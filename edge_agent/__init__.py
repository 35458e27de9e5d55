"""edge-agent: on-device continual calibration of low-bit quantized classifiers."""

__version__ = "0.1.0"
