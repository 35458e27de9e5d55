"""The inference bench's clock and its AMX refusal (bench/cputime.py, bench/noamx.py)."""

from __future__ import annotations

import json
import platform

import pytest
from support.fresh_python import fresh_python

_RATES = """
import json, time
from bench.cputime import interleaved

def busy():
    t0 = time.thread_time_ns()
    while time.thread_time_ns() - t0 < 200_000:
        pass

rates, info = interleaved(
    {"sleep": (lambda: time.sleep(0.002), 1), "busy": (busy, 2)}, seconds=0.02, reps=3
)
print(json.dumps({"rates": rates, "info": info}))
"""


def test_thread_cpu_rates_ignore_sleeping() -> None:
    # a case that sleeps spends wall time, not CPU time: its CPU rate must be far above
    # its wall rate, while a busy case's two rates stay close. In a fresh process, so that
    # threads left by other tests do not add to the process CPU time.
    out = json.loads(fresh_python(_RATES))
    rates, info = out["rates"], out["info"]
    assert set(rates) == {"sleep", "busy"} and info["reps"] == 3
    assert rates["sleep"]["cpu_median"] > 5 * rates["sleep"]["wall_median"]
    assert rates["busy"]["cpu_best"] >= rates["busy"]["cpu_median"] > 0
    assert rates["busy"]["cpu_median"] < 2 * 2 / 200e-6  # 2 items per ~200 us of CPU
    assert rates["busy"]["proc_over_thread"] < 1.5
    assert len(info["loadavg_start"]) == 3


@pytest.mark.skipif(platform.machine() != "x86_64", reason="AMX is x86-64 only")
def test_refuse_amx_makes_the_permission_request_fail_with_eperm() -> None:
    code = (
        "from bench.noamx import refuse_amx, request_amx, amx_state\n"
        "refuse_amx()\n"
        "print(request_amx(), amx_state()['permitted'])\n"
    )
    out = fresh_python(code)
    errno, permitted = out.split()
    assert errno == "1"  # EPERM from the filter, whether or not the CPU has AMX
    assert permitted in ("False", "None")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="AMX is x86-64 only")
def test_refuse_amx_leaves_other_arch_prctl_calls_alone() -> None:
    code = (
        "from bench.noamx import refuse_amx, amx_state\n"
        "before = amx_state()\n"
        "refuse_amx()\n"
        "print(before == amx_state() and before['supported'] is not None)\n"
    )
    out = fresh_python(code)
    assert out.strip() == "True"
