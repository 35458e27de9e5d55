"""What the agent's and the proxy's processes import: never torch, and numba only when
the engine JIT-compiles its kernels. The proxy's unit sets ``MemoryDenyWriteExecute=yes``,
under which importing numba fails ("cannot allocate executable memory"): a kernel compiled
with numba in ``calibrate/`` once made the whole CLI fail to build there."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_and_the_agent_modules_import_neither_numba_nor_torch() -> None:
    code = (
        "import sys\n"
        "from edge_agent.cli import build_parser\n"
        "build_parser()\n"
        "import edge_agent.service.agent, edge_agent.fleet.proxy_main\n"
        "import edge_agent.calibrate.controller, edge_agent.calibrate.drift_reference\n"
        "bad = sorted({'numba', 'llvmlite', 'torch'} & set(sys.modules))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
