"""The agent process's latency settings: a short GIL switch interval and a frozen
start-up heap (edge_agent.service.runtime)."""

from __future__ import annotations

import gc
import sys

from edge_agent.service.runtime import GIL_SWITCH_S, tune_for_latency


def test_tuning_shortens_the_switch_interval_and_freezes_the_heap() -> None:
    old = sys.getswitchinterval()
    try:
        assert old > GIL_SWITCH_S  # Python's default (5 ms): the tuning changes it
        tune_for_latency()
        assert abs(sys.getswitchinterval() - GIL_SWITCH_S) < 1e-9
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the imported modules' objects at least
        # a full collection now walks only what came after start-up
        assert len(gc.get_objects()) < frozen
    finally:
        gc.unfreeze()
        sys.setswitchinterval(old)
