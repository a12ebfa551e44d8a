"""Imports run one way through the whole package, and `import charlm` loads nothing until a name is used."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import charlm

PACKAGE = Path(charlm.__file__).parent
# The stages, lowest first. A module may import from its own stage and from the stages below it; stages in
# one row are peers and import neither each other nor anything above them.
LAYERS = [
    {"errors"},
    {"config", "tokenizer", "device"},
    {"model", "data"},
    {"checkpoint"},
    {"outfile"},  # the one rule for options that write files: it knows run folders
    {"inference", "interpret", "onnx_export"},
    {"training"},
    {"series"},  # the forecaster trains with training's hooks; ui describes its runs
    {"ui"},
    {"api"},
    {"serve"},  # the server loads and runs its model through the Python API
    {"cli"},
    {"__main__"},
]
LAYER = {stage: i for i, row in enumerate(LAYERS) for stage in row}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(module: str) -> set[str]:
    """The charlm modules `module` imports, anywhere in it (functions and TYPE_CHECKING blocks included)."""
    is_package = MODULES[module].name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "charlm"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package this module is in
                here = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            if base.split(".")[0] != "charlm":
                continue
            for a in node.names:  # `from charlm import checkpoint` imports the module charlm.checkpoint
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return found - {module}


GRAPH = {m: _imports(m) for m in MODULES if m != "charlm"}  # the package itself imports nothing until asked


def _stage(module: str) -> str:
    return module.split(".")[1] if "." in module else "charlm"


def test_every_stage_imports_only_its_own_and_those_below() -> None:
    assert {_stage(m) for m in GRAPH} <= set(LAYER), "a new stage: give it its place in LAYERS"
    wrong = []
    for module, imported in GRAPH.items():
        for other in imported:
            a, b = _stage(module), _stage(other)
            if b == "charlm" or a == b:  # the package's own names (__version__), or within one stage
                continue
            if LAYER[b] >= LAYER[a]:
                wrong.append(f"{module} -> {other}")
    assert not wrong, "imports against the direction of the stages: " + ", ".join(sorted(wrong))


def test_no_module_imports_one_that_imports_it() -> None:
    def visit(path: tuple[str, ...]) -> None:
        for nxt in sorted(GRAPH.get(path[-1], ())):
            assert nxt not in path, "import cycle: " + " -> ".join([*path, nxt])
            if nxt not in done:
                visit((*path, nxt))
        done.add(path[-1])

    done: set[str] = set()
    for m in sorted(GRAPH):
        visit((m,))


def test_benchmark_scripts_import_one_way() -> None:
    """The scripts share helpers through benchmarks/common.py; none imports a script that imports it."""
    folder = PACKAGE.parent / "benchmarks"
    scripts = {p.stem: p for p in folder.glob("*.py")}
    graph = {}
    for name, path in scripts.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name in scripts}
            elif isinstance(node, ast.ImportFrom) and node.module in scripts:
                found.add(node.module)
        graph[name] = found
    assert graph["common"] == set() and "common" in graph["inference"] and "inference" in graph["run_all"]
    for name in graph:
        seen, todo = set(), list(graph[name])
        while todo:
            other = todo.pop()
            assert other != name, f"benchmarks/{name}.py imports itself through {other}"
            if other not in seen:
                seen.add(other)
                todo += graph[other]


def test_the_package_names_load_lazily_and_all_lists_them() -> None:
    assert sorted(charlm.__all__) == sorted(["__version__", *charlm._LAZY])
    assert set(charlm._LAZY.values()) <= {"charlm.api", "charlm.errors", "charlm.series.forecast", "charlm.series.run"}
    assert all(name in dir(charlm) for name in charlm.__all__)
    code = (
        "import sys, charlm\n"
        "assert 'charlm.api' not in sys.modules and 'torch' not in sys.modules and 'numpy' not in sys.modules\n"
        "assert charlm.CharlmError.__module__ == 'charlm.errors' and 'charlm.api' not in sys.modules\n"
        "charlm.load\n"
        "assert 'charlm.api' in sys.modules and 'torch' not in sys.modules\n"
        "try:\n    charlm.nothing\nexcept AttributeError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "module 'charlm' has no attribute 'nothing'\n"
