"""Inference without torch: the integer engine, its plain-numpy reference and the FP model
that gives pseudo-labels."""
