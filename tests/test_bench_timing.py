"""The inference bench's clock and its AMX refusal (bench/cputime.py, bench/noamx.py)."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cputime import interleaved

REPO = Path(__file__).resolve().parents[1]


def test_thread_cpu_rates_ignore_sleeping() -> None:
    # a case that sleeps spends wall time, not CPU time: its CPU rate must be far above
    # its wall rate, while a busy case's two rates stay close
    def busy() -> None:
        t0 = time.thread_time_ns()
        while time.thread_time_ns() - t0 < 200_000:
            pass

    rates, info = interleaved(
        {"sleep": (lambda: time.sleep(0.002), 1), "busy": (busy, 2)}, seconds=0.02, reps=3
    )
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
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO)},
    )
    errno, permitted = done.stdout.split()
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
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip() == "True"
