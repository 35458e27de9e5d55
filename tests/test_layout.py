"""The package layout holds the torch boundary and the direction of imports.

Layers, highest first: cli and fleet > service > calibrate > engine > kernels; ingest, bundle
(``bundle``, ``bundle_io``, ``container``), contracts, data and energy sit beside them.
training (the only torch side) may import anything but service and cli; only cli's train
and evaluate commands import training, lazily inside functions.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import edge_agent
import kernels

ROOT = Path(__file__).resolve().parent.parent
TORCH_FREE = ("ingest", "engine", "calibrate", "service", "data")
TORCH_FREE_MODULES = (
    "bundle",
    "bundle_io",
    "container",
    "contracts",
    "energy",
    "energy_sources",
    "client",
)
# fleet (proxy, collect, rollout) is a client of agents, beside cli
RANKS = {"kernels": 0, "engine": 1, "calibrate": 2, "service": 3, "cli": 4, "fleet": 4}
# What a package may not import (beside the rank order above).
FORBIDDEN = {
    "ingest": {"service", "calibrate", "engine", "training", "cli"},
    "engine": {"calibrate", "service", "training", "cli", "ingest"},
    "calibrate": {"service", "training", "cli"},
    "kernels": {"edge_agent"},
    "data": {"service", "calibrate", "training", "cli"},
    "bundle": {"service", "calibrate", "engine", "training", "cli", "ingest"},
    "training": {"service", "cli"},
    "contracts": {"service", "calibrate", "engine", "training", "cli", "ingest", "bundle", "data"},
}


def _modules() -> list[str]:
    names = []
    for pkg in (edge_agent, kernels):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            names.append(info.name)
    return names


def _group(module: str) -> str:
    """The layout group of a module: kernels, bundle, or edge_agent's first sub-name."""
    parts = module.split(".")
    if parts[0] == "kernels":
        return "kernels"
    if len(parts) == 1:
        return "edge_agent"
    if parts[1] in ("bundle", "bundle_io", "container"):
        return "bundle"
    return parts[1]


def _sources() -> list[tuple[str, Path]]:
    out = []
    for top in ("edge_agent", "kernels"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((".".join(parts), path))
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, whether the import is inside a function) for every import."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, in_function))
                found.extend((f"{child.module}.{alias.name}", in_function) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def test_torch_free_packages_import_without_torch() -> None:
    names = [
        m
        for m in _modules()
        if not m.endswith("__main__")
        and (
            m.startswith("kernels")
            or _group(m) in TORCH_FREE
            or (m.split(".")[-1] in TORCH_FREE_MODULES and m.count(".") == 1)
        )
    ]
    assert any(m.startswith("edge_agent.service") for m in names)
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", "importing the torch-free packages imported torch"


def test_only_training_imports_torch() -> None:
    bad = []
    for module, path in _sources():
        if _group(module) == "training":
            continue
        for name, lazy in _imports(path):
            if name.split(".")[0] != "torch":
                continue
            if _group(module) == "cli" and lazy:
                continue  # the train command, lazily
            bad.append(f"{module} imports {name}")
    assert not bad, bad


def test_imports_run_one_way() -> None:
    known = {m for m, _ in _sources()}
    bad = []
    for module, path in _sources():
        src = _group(module)
        for name, lazy in _imports(path):
            if name not in known or name == module:
                continue
            dst = _group(name)
            if src == dst or name == "edge_agent":
                continue
            if dst == "cli" and module.endswith(".__main__"):
                continue  # an entry point, like the console script
            if dst == "cli":
                bad.append(f"{module} -> {name} (nothing imports cli but entry points)")
            elif src == "cli" and dst == "training" and not lazy:
                bad.append(f"{module} -> {name} (cli imports training only lazily)")
            elif src in RANKS and dst in RANKS and RANKS[dst] > RANKS[src]:
                bad.append(f"{module} -> {name} (a lower layer imports a higher one)")
            elif dst in FORBIDDEN.get(src, set()):
                bad.append(f"{module} -> {name}")
            elif dst == "training" and src not in ("training", "cli"):
                bad.append(f"{module} -> {name} (only cli reaches training)")
    assert not bad, bad
