"""Recalibration: the accept-or-rollback gate, bit-flipping rounds and QAT bursts."""
