"""Process-wide interpreter settings for the agent's latency (called once it has started).

- **GIL switch interval**: a thread that wants the GIL waits until the holder reaches the
  interpreter's next check, at most ``sys.getswitchinterval()`` (5 ms by default) of pure
  Python. The calibration thread runs long Python stretches (QCore updates, rounds), so
  every batch the inference thread handles during a round could wait up to 5 ms for it;
  at 0.5 ms that wait is bounded ten times lower, for a few more switches per second.
  ``bench/gil_stall.py`` measures both and found no difference: a thread waking beside
  the calibration is 5 ms late at p99 with either, as late as beside a busy process that
  shares no GIL, i.e. the OS's wake-up latency on a shared core dominates (a thread
  of the fair class waits for the scheduler's tick; ``[inference] realtime_priority``,
  :mod:`edge_agent.service.scheduling`, takes the inference thread out of that wait).
- **gc.freeze()**: everything allocated by start-up (modules, the engine, numba's and
  numpy's objects: most of the heap) moves to the permanent generation, so the full
  collections that still happen while serving scan only what was allocated since
  (``bench/process_cost.py`` reports the longest collection pause).
"""

from __future__ import annotations

import gc
import sys

GIL_SWITCH_S = 0.0005


def tune_for_latency() -> None:
    """Shorten the GIL switch interval and freeze the start-up heap (see the module)."""
    sys.setswitchinterval(GIL_SWITCH_S)
    gc.collect()
    gc.freeze()
