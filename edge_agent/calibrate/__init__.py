"""Recalibration on the device, torch-free: the QCore buffer, bit-flipping rounds, the
accept-or-rollback gate, the calibration controller and QAT burst scheduling (the burst
itself runs in a child process, :mod:`edge_agent.training.burst_child`)."""
