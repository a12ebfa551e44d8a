"""charlm in Python: the same text and scores as the command line, from any thread, and training that stops
cleanly when asked (from another thread, or by Ctrl-C) and resumes exactly."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import charlm
from charlm import checkpoint as ckpt_io
from charlm.cli import app
from charlm.errors import CheckpointNotFoundError, TrainingInterrupted, UnknownCharactersError, UsageError

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"hidden": 16, "layers": 2, "embed": 8, "batch_size": 4, "seq_len": 16, "lr": 1e-2, "eval_every": 6,
         "val_fraction": 0.2, "seed": 3, "device": "cpu", "dropout": 0.1, "progress": False}  # fmt: skip
CELLS = ("gru", "lstm", "rnn")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, text_maker) -> Path:
    path = tmp_path_factory.mktemp("api-corpus") / "tiny.txt"
    path.write_text(text_maker(lines=150), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> dict[str, Path]:
    """One small run of each cell, trained through charlm.train."""
    base = tmp_path_factory.mktemp("api-runs")
    out = {}
    for cell in CELLS:
        run = charlm.train(str(corpus), out=base / cell, cell=cell, max_steps=12, **SMALL)
        assert run.steps == 12 and run.stopped_by == "max_steps" and run.path == base / cell
        out[cell] = run.path
    return out


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), prog_name="charlm")
    assert result.exit_code == 0, result.output
    return result.stdout


# ---------------------------------------------------------------- the command line and the library agree


@pytest.mark.parametrize("cell", CELLS)
def test_cli_sample_is_byte_identical_to_model_sample(runs: dict[str, Path], cell: str) -> None:
    """`charlm sample` in a process of its own, and Model.sample in this one: the same bytes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = ["--length", "300", "--seed", "11", "--temperature", "0.9", "--top-k", "12", "--prime", "the "]
    cli = subprocess.run(
        [sys.executable, "-m", "charlm", "sample", str(runs[cell]), *args, "-q"],
        capture_output=True, env=env, timeout=120, check=True,
    ).stdout  # fmt: skip
    model = charlm.load(runs[cell])
    lib = model.sample(300, seed=11, temperature=0.9, top_k=12, prime="the ")
    assert cli == lib.encode("utf-8") and len(lib) == 300
    assert "".join(model.stream(300, seed=11, temperature=0.9, top_k=12, prime="the ")) == lib


@pytest.mark.parametrize("cell", CELLS)
def test_cli_samples_side_by_side_equal_the_library_list(runs: dict[str, Path], cell: str) -> None:
    model = charlm.load(str(runs[cell]))
    texts = model.sample(80, n=3, seed=5, top_p=0.9, stop="\n")
    assert isinstance(texts, list) and len(texts) == 3 and all("\n" not in t for t in texts)
    out = _cli("sample", str(runs[cell]), "--length", "80", "--num-samples", "3", "--seed", "5", "--top-p", "0.9",
               "--stop", "\n", "-q")  # fmt: skip
    assert out == "\n\n".join(texts) + "\n"
    jsonl = _cli("sample", str(runs[cell]), "--length", "80", "--num-samples", "3", "--seed", "5", "--jsonl", "-q")
    assert [json.loads(line)["text"] for line in jsonl.splitlines()] == model.sample(80, n=3, seed=5)


@pytest.mark.parametrize("cell", CELLS)
def test_cli_scores_equal_the_library_scores(runs: dict[str, Path], cell: str, tmp_path: Path, text_maker) -> None:
    text = text_maker(lines=40, seed=9)
    (tmp_path / "held.txt").write_text(text, encoding="utf-8")
    model = charlm.load(runs[cell], device="cpu")
    score = model.score(text)
    assert json.loads(_cli("evaluate", str(runs[cell]), str(tmp_path / "held.txt"), "--json", "-q")) == (
        score.to_dict()
    )
    assert score.chars == len(text) - 1 and score.bits_per_char == pytest.approx(score.nats_per_char / math.log(2))
    lines = _cli("evaluate", str(runs[cell]), str(tmp_path / "held.txt"), "--per-line", "--jsonl", "-q")
    rows = model.score_lines(text)
    assert [json.loads(line) for line in lines.splitlines()] == [r.to_dict() for r in rows]
    assert model.score_lines(text.splitlines()) == rows  # a text, or its lines


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_cli_units_and_explain_equal_the_library(runs: dict[str, Path], cell: str, text_maker) -> None:
    text = text_maker(lines=20, seed=2)
    model = charlm.load(runs[cell])
    found = model.units(text, regex="cat", top=3)
    cli = json.loads(_cli("units", str(runs[cell]), "--text", text, "--regex", "cat", "--top", "3", "--json", "-q"))
    assert cli == {k: [s.to_dict() for s in v] if not isinstance(v, str) else v for k, v in found.items()}
    view = model.explain(text[:60], top_k=3)
    doc = json.loads(_cli("explain", str(runs[cell]), "--text", text[:60], "--top-k", "3", "--json", "-q"))
    assert doc["bits_per_char"] == view.bits_per_char and doc["chars"] == len(view.chars) - 1
    assert doc["records"] == view.records() and view.chars == list(text[:60])
    page = view._repr_html_()  # what a notebook shows: the explain page, in a frame of its own
    assert page.startswith('<iframe srcdoc="&lt;!DOCTYPE html&gt;') and "charlm-data" in page


# ---------------------------------------------------------------- one model, many threads


def _work(model: charlm.Model, i: int, text: str) -> tuple:
    return (
        model.sample(120, seed=i, temperature=0.8),
        model.sample(60, n=3, seed=100 + i),
        model.score(text[i * 50 :]).nats,
        [r.bits for r in model.score_lines(text.splitlines()[i : i + 10])],
        model.explain(text[i : i + 40]).bits[1:],
    )


@pytest.mark.parametrize("cell", ["gru", "lstm"])  # NumPy sampling, and torch sampling
def test_eight_threads_at_once_give_what_one_after_another_gives(runs: dict[str, Path], cell: str, text_maker) -> None:
    model, text = charlm.load(runs[cell]), text_maker(lines=60, seed=4)
    alone = [_work(model, i, text) for i in range(8)]
    start = threading.Barrier(8, timeout=60)

    def at_once(i: int) -> tuple:
        start.wait()  # all eight begin together
        return _work(model, i, text)

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(at_once, range(8)))
    assert together == alone
    assert len({a[0] for a in alone}) == 8  # the seeds differ, so the texts do: the comparison means something


# ---------------------------------------------------------------- loading, and its errors


def test_load_takes_str_and_paths_and_describes_the_model(runs: dict[str, Path]) -> None:
    model = charlm.load(str(runs["gru"]))
    latest = charlm.load(runs["gru"] / "step-00000012" / "model.safetensors", which="latest")
    assert latest.step == 12 and model.path == ckpt_io.resolve(runs["gru"], "best").path
    text = repr(model)
    c = model.config
    assert f"GRU, {c.layers} layers x {c.hidden} hidden" in text and f"{c.vocab_size} characters" in text
    assert f"{model.parameters:,} parameters" in text and f"best {model.best_bits_per_char:.4f} bits/char" in text
    assert model.parameters == model.module.num_params()  # counted from the weights file, without torch
    assert model.info["model"]["parameters"] == model.parameters
    assert model.tokenizer.vocab_size == c.vocab_size and model.checkpoint.step == model.step


def test_load_errors_carry_what_there_is(runs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    shutil.copytree(runs["gru"], tmp_path / "checkpoints" / "mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError) as e:
        charlm.load("nothing")
    assert e.value.path == Path("nothing") and e.value.available == [Path("checkpoints/mine")]
    assert str(e.value) == "nothing: no such checkpoint or run folder (runs under checkpoints/: checkpoints/mine)"
    assert charlm.load().path.parent == Path("checkpoints/mine")  # None: the newest run under ./checkpoints

    with pytest.raises(UsageError, match="^which must be best or latest"):
        charlm.load(runs["gru"], which="last")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="^path must be a path"):
        charlm.load(12)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="^device must be auto, cpu, cuda or mps"):
        charlm.load(runs["gru"], device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(charlm.CharlmError, match="^device cuda: no CUDA GPU is available here"):
            charlm.load(runs["gru"], device="cuda")


def test_sampling_errors_name_the_parameters(runs: dict[str, Path]) -> None:
    model = charlm.load(runs["gru"])
    with pytest.raises(UsageError) as e:
        model.sample(-1, n=0, temperature=float("nan"))
    assert str(e.value) == (
        "temperature must be a finite number >= 0 (got nan); length must be 0 or more (got -1); "
        "n must be at least 1 (got 0)"
    )
    with pytest.raises(UnknownCharactersError) as u:
        model.stream(10, prime="the Q")  # raised at the call, before any text
    assert u.value.chars == ["Q"] and str(u.value).startswith("prime has 1 character(s)")
    assert "(use skip_unknown to drop them)" in str(u.value)
    assert model.sample(10, prime="the Q", skip_unknown=True, seed=1) == model.sample(10, prime="the ", seed=1)
    with pytest.raises(UsageError, match="^the text: needs at least two"):
        model.score("a")


def test_sampling_a_gru_on_a_cpu_never_imports_torch(runs: dict[str, Path]) -> None:
    code = (
        "import sys, charlm\n"
        f"m = charlm.load({str(runs['gru'])!r}, device='cpu')\n"
        "print(repr(m)); print(m.sample(50, seed=2)); print(m.sample(20, n=2, seed=2))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert charlm.load(runs["gru"], device="cpu").sample(50, seed=2) in done.stdout


# ---------------------------------------------------------------- training from a program


def test_train_from_another_thread_stops_cleanly_when_asked(corpus: Path, tmp_path: Path) -> None:
    stop, seen, handlers = threading.Event(), [], []

    def on_event(kind: str, info: dict) -> None:
        seen.append(kind)
        if kind == "step":
            handlers.append(signal.getsignal(signal.SIGINT))
            if info["step"] == 5:
                stop.set()

    result: list = []
    worker = threading.Thread(
        target=lambda: result.append(charlm.train(corpus, out=tmp_path / "bg", max_steps=10**6, stop=stop,
                                                  on_event=on_event, **SMALL))  # fmt: skip
    )
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive() and result, "training did not stop"
    run = result[0]
    assert run.stopped_by == "stop" and run.steps == 5 and run.interrupted
    assert ckpt_io.resolve(run.path, "latest").step == 5  # it saved where it stopped
    assert set(handlers) == {signal.default_int_handler}  # no signal handler installed from that thread
    assert seen[-1] == "done" and not ckpt_io.is_locked(run.path)
    again = charlm.train(corpus, out=run.path, resume=True, max_steps=8, **{**SMALL, "progress": False})
    assert again.steps == 8


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return ckpt_io.read_tensors(ckpt_io.step_dir(run, step))


def test_ctrl_c_stops_after_a_checkpoint_that_resumes_exactly(corpus: Path, tmp_path: Path) -> None:
    whole = charlm.train(corpus, out=tmp_path / "whole", max_steps=14, **SMALL)

    def interrupt_at_4(kind: str, info: dict) -> None:
        if kind == "step" and info["step"] == 4:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C, or a notebook's interrupt, sends the main thread

    with pytest.raises(TrainingInterrupted) as e:
        charlm.train(corpus, out=tmp_path / "cut", max_steps=14, on_event=interrupt_at_4, **SMALL)
    assert isinstance(e.value, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    run = e.value.run
    assert run.stopped_by == "SIGINT" and run.steps == 4 and "resume=True" in str(e.value)
    assert ckpt_io.resolve(run.path, "latest").step == 4
    resumed = charlm.train(corpus, out=run.path, resume=True, max_steps=14, **SMALL)
    assert resumed.steps == 14
    a, b = _weights(whole.path, 14), _weights(resumed.path, 14)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    assert whole.metrics[-1]["val_bpc"] == resumed.metrics[-1]["val_bpc"]


def test_a_keyboard_interrupt_anywhere_leaves_a_run_that_resumes_exactly(corpus: Path, tmp_path: Path) -> None:
    """KeyboardInterrupt raised in the middle of training (here by a callback) ends it at once; the checkpoints
    on disk are whole, and resuming from the last gives what an uninterrupted run gives."""
    whole = charlm.train(corpus, out=tmp_path / "whole", max_steps=14, **SMALL)

    def raise_at_9(kind: str, info: dict) -> None:
        if kind == "step" and info["step"] == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        charlm.train(corpus, out=tmp_path / "cut", max_steps=14, on_event=raise_at_9, **SMALL)
    assert not ckpt_io.is_locked(tmp_path / "cut") and ckpt_io.resolve(tmp_path / "cut", "latest").step == 6
    resumed = charlm.train(corpus, out=tmp_path / "cut", resume=True, max_steps=14, **SMALL)
    a, b = _weights(whole.path, 14), _weights(resumed.path, 14)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_options_are_keywords_with_the_cli_defaults(corpus: Path, tmp_path: Path) -> None:
    run = charlm.train([str(corpus)], out=str(tmp_path / "r"), max_steps=3, hidden=12, layers=1, batch_size=4,
                       seq_len=16, eval_every=3, progress=False, device="cpu")  # fmt: skip
    ck = run.model.checkpoint
    shape = (ck.model_config.hidden, ck.model_config.embed, ck.train_config.seed, ck.train_config.keep)
    assert shape == (12, 64, 1337, 3)
    assert ck.train_config.patience == 3 and ck.train_config.val_fraction == 0.1 and ck.model_config.cell == "gru"
    assert run.metrics[-1]["step"] == 3 and run.model.step == 3
    with pytest.raises(UsageError) as e:
        charlm.train(corpus, out=tmp_path / "bad", hidden=0, lr=-1.0, max_time="soon", progress=False)
    assert e.value.params == ["max_time", "lr", "hidden"]
    assert "hidden must be at least 1 (got 0)" in str(e.value) and "--" not in str(e.value)
    with pytest.raises(UsageError, match="^corpus must be a path"):
        charlm.train([corpus, 7], progress=False)  # type: ignore[list-item]


def test_train_takes_every_option_of_charlm_train_with_its_default() -> None:
    import inspect

    import typer

    from charlm.config import ModelConfig, TrainConfig

    cli = {p.name: p for p in typer.main.get_command(app).commands["train"].params}
    only_cli = {"corpus", "json_out", "quiet"}  # the command's own: its arguments, and what it prints
    lib = inspect.signature(charlm.train).parameters
    assert set(cli) - only_cli <= set(lib)
    m, t = ModelConfig(vocab_size=1), TrainConfig()
    for name, p in lib.items():
        if p.default == "auto":  # chosen for each run, as `charlm train --help` says
            assert "[default: auto]" in (cli[name].help or ""), name
        elif hasattr(t, name) or hasattr(m, name):
            assert p.default == getattr(t, name, getattr(m, name, None)), name


def test_warnings_reach_python_when_nothing_displays_them(runs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "new.txt").write_text("the cat sees the moon.\n" * 40 + "Zebras!\n", encoding="utf-8")
    with pytest.warns(charlm.CharlmWarning, match=r"^init_from: the vocabulary grows by 2 character\(s\) .*\('!Z'\)"):
        charlm.train(tmp_path / "new.txt", out=tmp_path / "ft", init_from=runs["gru"], max_steps=2, progress=False,
                     batch_size=2, seq_len=16, eval_every=2, device="cpu")  # fmt: skip


def test_progress_is_live_in_a_notebook_with_widgets(monkeypatch) -> None:
    from rich.console import Console

    from charlm.ui import progress

    notebook = Console(force_jupyter=True)
    monkeypatch.setattr(progress, "_has_widgets", lambda: True)
    assert progress.TrainDisplay(notebook, notebook=True).live
    assert not progress.TrainDisplay(notebook).live  # the command line's display stays as it was
    monkeypatch.setattr(progress, "_has_widgets", lambda: False)
    assert not progress.TrainDisplay(notebook, notebook=True).live  # then a plain line every few seconds
