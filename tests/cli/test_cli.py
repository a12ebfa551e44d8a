"""The command line end to end: train -> sample -> evaluate -> info, through Typer's CliRunner and through real
`python -m charlm` processes. stdout carries only the payload; everything else goes to stderr."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from charlm import checkpoint as ckpt_io
from charlm.cli import app, main
from charlm.inference.evaluate import score_ids
from charlm.inference.sample import SampleOptions, stream
from charlm.model import CharGRU

runner = CliRunner()
SMALL = [
    "--hidden", "16", "--layers", "2", "--embed", "8", "--batch-size", "8", "--seq-len", "32", "--lr", "0.01",
    "--device", "cpu", "--seed", "3",
]  # fmt: skip
TRAIN_ARGS = [*SMALL, "--max-steps", "30", "--eval-every", "15"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}  # one torch thread: see conftest.py


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, prog_name="charlm")


def one_line_error(stderr: str) -> str:
    assert stderr.startswith("error: ") and stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr[len("error: ") : -1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, text_maker) -> dict:
    """A run trained through `charlm train` (CliRunner), with its corpus and what the command printed."""
    base = tmp_path_factory.mktemp("cli")
    corpus = base / "tiny.txt"
    corpus.write_text(text_maker(), encoding="utf-8")
    run = base / "run"
    result = invoke("train", str(corpus), "--out", str(run), *TRAIN_ARGS)
    assert result.exit_code == 0, result.output
    return {"run": run, "corpus": corpus, "result": result}


# ---------------------------------------------------------------- train


def test_train_writes_progress_to_stderr_only(trained: dict) -> None:
    result, run = trained["result"], trained["run"]
    assert result.stdout == ""
    err = result.stderr
    assert "training on cpu (" in err and "parameters" in err
    assert re.search(r"step 15: validation \d+\.\d{4} bits/char", err)
    assert re.search(r"step 30: validation \d+\.\d{4} bits/char", err)
    assert re.search(r"done: 30 steps in \d+s, [\d,]+ chars/s; best validation \d+\.\d{4} bits/char", err)
    assert f"sample from it with: charlm sample {run}" in err
    # step 0 is saved before the first step, so a run killed at once still leaves something to resume
    assert sorted(p.name for p in run.glob("step-*")) == ["step-00000000", "step-00000015", "step-00000030"]
    assert len(ckpt_io.read_metrics(run)) == 2


def test_train_json_summary(tmp_path: Path, tiny_corpus: Path) -> None:
    result = invoke("train", str(tiny_corpus), "--out", "run", "--json", "--quiet", *SMALL, "--max-steps", "4")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 4 and summary["stopped_by"] == "max_steps"
    assert summary["best_checkpoint"] == str(Path("run") / "step-00000004")
    assert math.isfinite(summary["best_val_bpc"])
    assert result.stderr == ""  # --quiet: nothing but errors


def test_train_default_out_never_overwrites(tiny_corpus: Path) -> None:
    args = [str(tiny_corpus), "--quiet", *SMALL, "--max-steps", "2"]
    assert invoke("train", *args).exit_code == 0
    assert invoke("train", *args).exit_code == 0
    assert sorted(p.name for p in Path("checkpoints").iterdir()) == ["tiny", "tiny-2"]


def test_train_reports_every_problem_at_once(tiny_corpus: Path) -> None:
    result = invoke("train", str(tiny_corpus), "--hidden", "0", "--lr", "-1", "--max-time", "soon")
    assert result.exit_code == 2 and result.stdout == ""
    msg = one_line_error(result.stderr)
    assert "--hidden must be at least 1" in msg and "--lr must be a positive number" in msg
    assert "--max-time: cannot read 'soon' as a duration" in msg
    assert not Path("checkpoints").exists()  # nothing written


def test_train_on_stdin(tmp_path: Path, text_maker) -> None:
    result = invoke("train", "-", "--out", "run", "--quiet", *SMALL, "--max-steps", "2", input=text_maker())
    assert result.exit_code == 0, result.output
    info = json.loads(invoke("info", "run", "--json").stdout)
    assert info["data"]["sources"] == ["-"]


# ---------------------------------------------------------------- sample


def test_sample_stdout_is_exactly_the_text(trained: dict) -> None:
    run = str(trained["run"])
    result = invoke("sample", run, "--length", "137", "--seed", "5")
    assert result.exit_code == 0 and result.stderr == ""
    assert len(result.stdout) == 137
    assert invoke("sample", run, "--length", "137", "--seed", "5").stdout == result.stdout
    assert invoke("sample", run, "--length", "137", "--seed", "6").stdout != result.stdout
    assert invoke("sample", run, "--length", "0").stdout == ""


def test_sample_matches_the_library(trained: dict) -> None:
    model, tok = ckpt_io.load_model(ckpt_io.resolve(trained["run"]))
    opts = SampleOptions(length=80, temperature=0.7, top_k=5, seed=2, prime="a dog ")
    expected = "".join(stream(model, tok, opts))
    args = ["--length", "80", "--temperature", "0.7", "--top-k", "5", "--seed", "2"]
    assert invoke("sample", str(trained["run"]), *args, "--prime", "a dog ").stdout == expected
    assert invoke("sample", str(trained["run"]), *args, "--prime", "-", input="a dog ").stdout == expected


def test_sample_several(trained: dict) -> None:
    result = invoke("sample", str(trained["run"]), "--length", "30", "--num-samples", "3", "--separator", "|||")
    assert result.exit_code == 0
    texts = result.stdout[:-1].split("|||")
    assert result.stdout.endswith("\n") and [len(t) for t in texts] == [30, 30, 30]


def test_sample_finds_the_newest_run(trained: dict) -> None:
    shutil.copytree(trained["run"], "checkpoints/mine")
    result = invoke("sample", "--length", "20", "--seed", "1")
    assert result.exit_code == 0 and len(result.stdout) == 20
    assert result.stderr == f"using {Path('checkpoints/mine/step-00000030')}\n"
    assert invoke("sample", "--length", "20", "--seed", "1", "--quiet").stderr == ""


def test_sample_usage_errors(trained: dict) -> None:
    run = str(trained["run"])
    result = invoke("sample", run, "--prime", "Jump")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--prime has 3 character(s) the model never saw in training: 'J', 'u', 'p'" in one_line_error(result.stderr)
    assert len(invoke("sample", run, "--prime", "Jump", "--skip-unknown", "--length", "9").stdout) == 9
    result = invoke("sample", run, "--temperature", "-1", "--top-p", "2")
    assert result.exit_code == 2 and result.stdout == ""
    msg = one_line_error(result.stderr)
    assert "--temperature must be" in msg and "--top-p must be in (0, 1]" in msg


def test_sample_without_any_run() -> None:
    result = invoke("sample")
    assert result.exit_code == 2 and result.stdout == ""
    assert "no checkpoint given and none found under checkpoints" in one_line_error(result.stderr)


# ---------------------------------------------------------------- evaluate


def test_evaluate_prints_one_line(trained: dict, tmp_path: Path, text_maker) -> None:
    (tmp_path / "held.txt").write_text(text_maker(lines=50, seed=9), encoding="utf-8")
    result = invoke("evaluate", str(trained["run"]), "held.txt")
    assert result.exit_code == 0 and result.stderr == ""
    m = re.fullmatch(
        r"(\d+\.\d{4}) nats/char\t(\d+\.\d{4}) bits/char\tperplexity (\d+\.\d{3})\t(\d+) chars\n", result.stdout
    )
    assert m, result.stdout
    nats, bits, ppl, chars = float(m[1]), float(m[2]), float(m[3]), int(m[4])
    assert chars == len(text_maker(lines=50, seed=9)) - 1
    assert bits == pytest.approx(nats / math.log(2), abs=2e-4)
    assert ppl == pytest.approx(math.exp(nats), rel=1e-3)


def test_evaluate_json_matches_the_library(trained: dict, tmp_path: Path, text_maker) -> None:
    text = text_maker(lines=50, seed=9)
    (tmp_path / "held.txt").write_text(text, encoding="utf-8")
    result = invoke("evaluate", str(trained["run"]), "held.txt", "--json")
    assert result.exit_code == 0
    d = json.loads(result.stdout)
    model, tok = ckpt_io.load_model(ckpt_io.resolve(trained["run"]))
    expected = score_ids(model, tok.encode(text)).to_dict()
    assert d == pytest.approx(expected)
    from_stdin = invoke("evaluate", str(trained["run"]), "-", "--json", input=text)
    assert json.loads(from_stdin.stdout) == d


def test_evaluate_uses_the_newest_run(trained: dict, tmp_path: Path, text_maker) -> None:
    shutil.copytree(trained["run"], "checkpoints/mine")
    (tmp_path / "held.txt").write_text(text_maker(lines=20, seed=4), encoding="utf-8")
    result = invoke("evaluate", "held.txt", "--json")
    assert result.exit_code == 0 and result.stderr.startswith("using ")
    assert json.loads(result.stdout)["chars"] == len(text_maker(lines=20, seed=4)) - 1


def test_evaluate_errors(trained: dict, tmp_path: Path) -> None:
    run = str(trained["run"])
    (tmp_path / "other.txt").write_text("Quite another alphabet!\n")
    result = invoke("evaluate", run, "other.txt")
    assert result.exit_code == 2 and result.stdout == ""
    msg = one_line_error(result.stderr)
    assert msg.startswith("other.txt has ") and "'Q'" in msg and "--skip-unknown" in msg
    assert invoke("evaluate", run, "other.txt", "--skip-unknown").exit_code == 0
    result = invoke("evaluate", run, "missing.txt")
    assert result.exit_code == 2 and one_line_error(result.stderr) == "missing.txt: no such file"
    result = invoke("evaluate", run, "other.txt", "third.txt")
    assert result.exit_code == 2 and "at most two arguments" in one_line_error(result.stderr)
    (tmp_path / "one.txt").write_text("a")
    assert "needs at least two" in one_line_error(invoke("evaluate", run, "one.txt").stderr)


# ---------------------------------------------------------------- info


def test_info_json(trained: dict) -> None:
    run = trained["run"]
    result = invoke("info", str(run), "--json")
    assert result.exit_code == 0 and result.stderr == ""
    d = json.loads(result.stdout)
    ck = ckpt_io.resolve(run)
    metrics = ckpt_io.read_metrics(run)
    assert d["checkpoint"] == str(ck.path)
    assert {k: d["model"][k] for k in ("hidden", "layers", "embed")} == {"hidden": 16, "layers": 2, "embed": 8}
    assert d["model"]["parameters"] == CharGRU(ck.model_config).num_params()
    assert d["vocabulary"] == "".join(ck.tokenizer.chars) and d["model"]["vocab_size"] == len(d["vocabulary"])
    assert d["step"] == ck.step
    assert d["best_val_bpc"] == pytest.approx(min(m["val_bpc"] for m in metrics))
    assert d["latest_checkpoint"] == str(run / "step-00000030")
    assert d["data"]["sources"] == [str(trained["corpus"].resolve())]
    assert d["data"]["train_chars"] + d["data"]["val_chars"] == len(trained["corpus"].read_text(encoding="utf-8"))
    assert d["training"]["seq_len"] == 32 and d["training"]["max_steps"] == 30
    assert [m["step"] for m in d["metrics"]] == [15, 30]


def test_info_text(trained: dict) -> None:
    out = invoke("info", str(trained["run"])).stdout
    assert "GRU, 2 layer(s) x 16 hidden, embedding 8" in out
    params = CharGRU(ckpt_io.resolve(trained["run"]).model_config).num_params()
    assert f"parameters      {params:,}" in out
    assert "steps trained" in out and "trained on" in out and str(trained["corpus"].resolve()) in out


def test_info_errors(tmp_path: Path) -> None:
    result = invoke("info", "nowhere")
    assert result.exit_code == 2 and result.stdout == ""
    assert one_line_error(result.stderr) == "nowhere: no such checkpoint or run folder (and no runs under checkpoints/)"


# ---------------------------------------------------------------- help and usage errors


@pytest.mark.parametrize("command", ["train", "sample", "evaluate", "info"])
def test_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0 and result.stderr == ""
    assert "Usage: charlm" in result.stdout and command in result.stdout
    click_cmd = typer.main.get_command(app).commands[command]
    for param in click_cmd.params:
        if param.param_type_name == "option":
            assert param.help, f"charlm {command} {param.opts[0]} has no help text"
    assert invoke(command, "-h").stdout == result.stdout


def test_top_level_help_and_version() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "sample", "evaluate", "info"):
        assert command in result.stdout
    assert re.fullmatch(r"charlm \d+\.\d+\.\d+\S*\n", invoke("--version").stdout)


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["sample", "--length", "many"], 2, "charlm sample: Invalid value for '--length'"),
        (["sample", "--no-such-option"], 2, "charlm sample: No such option: --no-such-option"),
        (["frobnicate"], 2, "No such command 'frobnicate'"),
        (["evaluate"], 2, "charlm evaluate: Missing argument"),
        (["train", "missing.txt", "--max-steps", "3"], 2, "missing.txt: no such file"),
        (["train", "tiny.txt", "--val-fraction", "1.5", "--device", "tpu"], 2, "--val-fraction must be in [0, 1)"),
        (["train", "tiny.txt", "--precision", "fp16"], 2, "--precision must be auto, fp32 or bf16 (got 'fp16')"),
        (["sample"], 2, "no checkpoint given and none found"),
        (["info", "tiny.txt"], 2, "tiny.txt: not a charlm checkpoint"),
    ],
)
def test_errors_are_one_line_on_stderr(argv, code, expected, tiny_corpus, monkeypatch, capsys) -> None:
    """Through main(), the real entry point: Click's own usage errors become one line too."""
    monkeypatch.setattr(sys, "argv", ["charlm", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == code
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in one_line_error(err)


def test_bare_charlm_shows_help(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["charlm"])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    assert e.value.code == 2  # Click's status for a missing command
    assert "Usage: charlm" in out and "error" not in err


# ---------------------------------------------------------------- real processes


def charlm(*args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlm", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=ENV,
        timeout=120,
    )


def test_end_to_end_in_processes(tmp_path: Path, tiny_corpus: Path) -> None:
    """train -> sample -> evaluate -> info as a user runs them, with the default run folder."""
    train = charlm("train", "tiny.txt", *TRAIN_ARGS, cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert train.stdout == ""
    assert "done: 30 steps" in train.stderr and "sample from it with: charlm sample checkpoints/tiny" in train.stderr
    assert "Traceback" not in train.stderr

    sample = charlm("sample", "--length", "250", "--seed", "1", "--temperature", "1.5", cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    assert len(sample.stdout) == 250  # only the text: no log line, no trailing newline
    assert sample.stderr == f"using {Path('checkpoints/tiny/step-00000030')}\n"
    again = charlm("sample", "checkpoints/tiny", "--length", "250", "--seed", "1", "--temperature", "1.5", cwd=tmp_path)
    assert again.stdout == sample.stdout and again.stderr == ""

    evaluate = charlm("evaluate", "checkpoints/tiny", "-", "--json", cwd=tmp_path, input=tiny_corpus.read_text())
    assert evaluate.returncode == 0 and evaluate.stderr == ""
    assert evaluate.stdout.count("\n") == 1
    scores = json.loads(evaluate.stdout)
    assert scores["chars"] == len(tiny_corpus.read_text()) - 1 and scores["bits_per_char"] > 0

    info = charlm("info", "--json", cwd=tmp_path)
    assert info.returncode == 0 and info.stderr.startswith("using ")
    d = json.loads(info.stdout)
    assert d["step"] == 30 and d["model"]["hidden"] == 16
    assert d["data"]["sources"] == [str(tiny_corpus.resolve())]


def test_python_m_charlm_works_like_charlm(tmp_path: Path) -> None:
    usage = charlm("sample", "--length", "x", cwd=tmp_path)
    assert usage.returncode == 2 and usage.stdout == ""
    assert "charlm sample: Invalid value for '--length'" in one_line_error(usage.stderr)
    helped = charlm("--help", cwd=tmp_path)
    assert helped.returncode == 0 and "Usage: charlm" in helped.stdout
    script = Path(sys.executable).with_name("charlm")
    if not script.exists():
        pytest.skip("the charlm console script is not installed next to this Python")
    for args in (["--help"], ["--version"], ["sample", "--length", "x"]):
        a = charlm(*args, cwd=tmp_path)
        b = subprocess.run([str(script), *args], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=60)
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
