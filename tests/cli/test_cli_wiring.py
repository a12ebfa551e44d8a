"""How the command line is put together: every command listed, imports running one way, every setting delivered."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

import charlm.cli
from charlm import checkpoint as ckpt_io
from charlm.cli import app
from charlm.config import ModelConfig, TrainConfig

COMMANDS = ["train", "sample", "evaluate", "info", "plot", "explain", "units", "compare", "export", "serve", "forecast"]
CLI_DIR = Path(charlm.cli.__file__).parent
MODULES = sorted(p.stem for p in CLI_DIR.glob("*.py"))


def test_help_lists_every_command_in_order() -> None:
    assert list(typer.main.get_command(app).commands) == COMMANDS
    result = CliRunner().invoke(app, ["--help"], prog_name="charlm")
    assert result.exit_code == 0
    panel = result.stdout.split("Commands", 1)[1]  # rows "│ name  help", help continuing under itself
    assert [row.split()[1] for row in panel.splitlines() if row.startswith("│ ") and row[2] != " "] == COMMANDS


def _cli_imports(module: str) -> set[str]:
    """The charlm.cli modules `module` imports, anywhere in it ("__init__" for the package itself)."""
    found = set()
    for node in ast.walk(ast.parse((CLI_DIR / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "charlm.cli":
            found |= {a.name if a.name in MODULES else "__init__" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("charlm.cli."):
            found.add(node.module.removeprefix("charlm.cli."))
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("charlm.cli.") for a in node.names if a.name.startswith("charlm.cli.")}
    return found


def test_cli_imports_run_one_way() -> None:
    """__init__ -> app -> commands -> options/output: nothing imports a module that (indirectly) imports it."""
    graph = {m: _cli_imports(m) for m in MODULES}
    assert graph["__init__"] == {"app"}
    assert graph["options"] == set() and graph["output"] == set()
    for command in ("train", "sample", "evaluate", "info", "explain"):
        assert graph[command] <= {"options", "output"}, command

    def follow(path: tuple[str, ...]) -> None:
        for n in graph[path[-1]]:
            assert n not in path, f"import cycle: {' -> '.join([*path, n])}"
            follow((*path, n))

    for m in MODULES:
        follow((m,))


def test_each_cli_module_imports_first_without_torch() -> None:
    """Imported first in a fresh interpreter, every module loads; `charlm --help` never waits for torch."""
    code = "import importlib, sys; importlib.import_module(sys.argv[1]); assert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CLI_DIR.parents[1]), os.environ.get("PYTHONPATH", "")])}
    for m in MODULES:
        name = "charlm.cli" if m == "__init__" else f"charlm.cli.{m}"
        done = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, (name, done.stderr)


# Every train option that sets a ModelConfig or TrainConfig field: its value here, and the value the field gets.
SETTINGS = {
    "cell": ("lstm", "lstm"),
    "patience": ("5", 5),
    "hidden": ("12", 12),
    "layers": ("3", 3),
    "embed": ("6", 6),
    "dropout": ("0.1", 0.1),
    "seq_len": ("16", 16),
    "batch_size": ("4", 4),
    "lr": ("0.02", 0.02),
    "lr_schedule": ("cosine", "cosine"),
    "min_lr_ratio": ("0.2", 0.2),
    "decay_fraction": ("0.3", 0.3),
    "weight_decay": ("0.05", 0.05),
    "ema": ("0.99", 0.99),
    "max_steps": ("2", 2),
    "max_time": ("10m", 600.0),
    "val_fraction": ("0.25", 0.25),
    "eval_every": ("2", 2),
    "save_every": ("1", 1),
    "keep": ("1", 1),
    "seed": ("5", 5),
    "device": ("cpu", "cpu"),
    "precision": ("fp32", "fp32"),
}


def test_every_train_setting_reaches_its_config(tiny_corpus: Path) -> None:
    defaults = {**dataclasses.asdict(ModelConfig(vocab_size=9)), **dataclasses.asdict(TrainConfig())}
    assert all(defaults.get(name) != expected for name, (_, expected) in SETTINGS.items())  # each one tells
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    fields = model_fields | {f.name for f in dataclasses.fields(TrainConfig)}
    options = {p.name for p in typer.main.get_command(app).commands["train"].params}
    assert set(SETTINGS) == options & fields  # a new setting is listed here, a renamed field fails here
    argv = [x for name, (given, _) in SETTINGS.items() for x in (f"--{name.replace('_', '-')}", given)]
    result = CliRunner().invoke(app, ["train", str(tiny_corpus), "--out", "run", "-q", *argv], prog_name="charlm")
    assert result.exit_code == 0, result.output
    ck = ckpt_io.resolve(Path("run"), "last")
    for name, (_, expected) in SETTINGS.items():
        got = getattr(ck.model_config if name in model_fields else ck.train_config, name)
        assert got == expected, name
