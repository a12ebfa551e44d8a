"""Every bad input ends in one line on stderr, exit status 2, no traceback, and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from charlm.cli import main

ROOT = Path(__file__).resolve().parents[2]
MARKOV = ROOT / "corpora" / "markov.txt"
TINY = ["--hidden", "16", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "-q"]


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.argv", ["charlm", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def refused(monkeypatch, capsys, *args: str, says: str | list[str], code: int = 2) -> str:
    """Run the command; check the one-line error and that the folder holds nothing new."""
    before = sorted(Path(".").rglob("*"))
    status, out, err = cli(monkeypatch, capsys, *args)
    assert status == code, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for s in [says] if isinstance(says, str) else says:
        assert s in lines[0], lines[0]
    assert sorted(Path(".").rglob("*")) == before, "something was written"
    return lines[0]


def write(name: str, data: str | bytes) -> str:
    Path(name).write_bytes(data.encode() if isinstance(data, str) else data)
    return name


def text(n: int = 5000) -> str:
    return MARKOV.read_text(encoding="utf-8")[:n]


# ---------------------------------------------------------------- the corpus


def test_corpus_missing(monkeypatch, capsys) -> None:
    refused(monkeypatch, capsys, "train", "nope.txt", says="nope.txt: no such file")


def test_corpus_is_a_directory(monkeypatch, capsys) -> None:
    os.mkdir("texts")
    refused(monkeypatch, capsys, "train", "texts", says="texts: is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a file whatever its permissions")
def test_corpus_unreadable(monkeypatch, capsys) -> None:
    write("secret.txt", text())
    os.chmod("secret.txt", 0)
    refused(monkeypatch, capsys, "train", "secret.txt", says="secret.txt: permission denied")


@pytest.mark.parametrize(
    "data,says",
    [
        ("", "is empty"),
        (" \n\t\n  \n" * 50, "holds only whitespace"),
        ("ab\ncd\n" * 3, "fewer than one training window needs (65)"),
        ("a" * 5000, "is one character repeated"),
        (b"\x00\x01\x02binary\x00" * 100, "looks like a binary file"),
        ("some text\n".encode("utf-16") * 100, "UTF-16"),
    ],
    ids=["empty", "whitespace", "too-short", "one-char", "binary", "utf-16"],
)
def test_corpus_content(monkeypatch, capsys, data, says) -> None:
    write("c.txt", data)
    refused(monkeypatch, capsys, "train", "c.txt", says=["c.txt", says])


def test_invalid_utf8_says_where_and_replace_bad_bytes_reads_it(monkeypatch, capsys) -> None:
    good = text(3000)
    write("c.txt", good.encode() + b"\nbad \xff\xfe here\n" + good.encode())
    line = good.count("\n") + 2
    refused(
        monkeypatch,
        capsys,
        "train",
        "c.txt",
        says=["c.txt: not valid UTF-8 at byte 3005", f"(line {line})", "--replace-bad-bytes"],
    )
    status, _, err = cli(monkeypatch, capsys, "train", "c.txt", "--replace-bad-bytes", "--max-steps", "2", *TINY)
    assert status == 0, err
    from charlm import checkpoint as ckpt_io

    assert "\ufffd" in ckpt_io.resolve(Path("checkpoints/c")).tokenizer.chars


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    "args,says",
    [
        (["--seq-len", "0"], "--seq-len must be positive (got 0)"),
        (["--seq-len", "-4"], "--seq-len must be positive (got -4)"),
        (["--batch-size", "0"], "--batch-size must be positive (got 0)"),
        (["--batch-size", "-1"], "--batch-size must be positive (got -1)"),
        (["--hidden", "0"], "--hidden must be at least 1 (got 0)"),
        (["--hidden", "-8"], "--hidden must be at least 1 (got -8)"),
        (["--layers", "0"], "--layers must be at least 1 (got 0)"),
        (["--layers", "-2"], "--layers must be at least 1 (got -2)"),
        (["--max-time", "soon"], "--max-time: cannot read 'soon' as a duration"),
        (["--max-time", "10 minutes"], "--max-time: cannot read '10 minutes' as a duration"),
        (["--batch-size", "1000"], "too short for 1000 streams"),
    ],
)
def test_train_options(monkeypatch, capsys, args, says) -> None:
    write("c.txt", text())
    refused(monkeypatch, capsys, "train", "c.txt", *args, says=says)


def test_out_is_a_file(monkeypatch, capsys) -> None:
    write("c.txt", text())
    write("taken", "I am a file")
    refused(monkeypatch, capsys, "train", "c.txt", "--out", "taken", says="--out taken: is a file, not a folder")
    assert Path("taken").read_text() == "I am a file"


def test_out_inside_a_file(monkeypatch, capsys) -> None:
    write("c.txt", text())
    write("taken", "I am a file")
    refused(monkeypatch, capsys, "train", "c.txt", "--out", "taken/run", says="taken is a file, not a folder")


def test_every_problem_is_reported_together(monkeypatch, capsys) -> None:
    line = refused(
        monkeypatch,
        capsys,
        "train",
        "missing.txt",
        "--hidden",
        "0",
        "--seq-len",
        "-1",
        "--max-time",
        "later",
        "--init-from",
        "nowhere",
        says=["missing.txt: no such file", "--hidden must be", "--seq-len must be", "--max-time", "--init-from"],
    )
    assert line.count(";") >= 4


def test_resume_with_nothing_to_resume(monkeypatch, capsys) -> None:
    write("c.txt", text())
    refused(monkeypatch, capsys, "train", "c.txt", "--resume", "--out", "run", says="--resume: run does not exist")
    os.mkdir("empty")
    refused(monkeypatch, capsys, "train", "c.txt", "--resume", "--out", "empty", says="empty holds no checkpoint")
    refused(monkeypatch, capsys, "train", "--resume", says="--resume: no run under checkpoints/ to resume")


def test_out_already_holding_a_run_is_not_overwritten(monkeypatch, capsys) -> None:
    write("c.txt", text())
    status, _, err = cli(monkeypatch, capsys, "train", "c.txt", "--out", "run", "--max-steps", "1", *TINY)
    assert status == 0, err
    refused(monkeypatch, capsys, "train", "c.txt", "--out", "run", *TINY, says="already holds a run")


# ---------------------------------------------------------------- sampling options and missing checkpoints


@pytest.mark.parametrize(
    "args,says",
    [
        (["--temperature", "-1"], "--temperature must be a finite number >= 0 (got -1.0)"),
        (["--temperature", "nan"], "--temperature must be a finite number >= 0 (got nan)"),
        (["--temperature", "inf"], "--temperature must be a finite number >= 0 (got inf)"),
        (["--top-p", "0"], "--top-p must be in (0, 1] (got 0.0)"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1] (got 1.5)"),
        (["--top-p", "-0.2"], "--top-p must be in (0, 1] (got -0.2)"),
        (["--top-k", "0"], "--top-k must be at least 1 (got 0)"),
        (["--top-k", "-3"], "--top-k must be at least 1 (got -3)"),
        (["--length", "-1"], "--length must be 0 or more (got -1)"),
    ],
)
def test_sample_options(monkeypatch, capsys, args, says) -> None:
    refused(monkeypatch, capsys, "sample", *args, says=says)


def test_sample_options_are_reported_together(monkeypatch, capsys) -> None:
    line = refused(monkeypatch, capsys, "sample", "--temperature", "nan", "--top-k", "0", "--length", "-5", says="")
    assert "--temperature" in line and "--top-k" in line and "--length" in line


@pytest.mark.parametrize("command", [["sample"], ["info"], ["evaluate", "c.txt"]])
def test_no_checkpoint_found_says_where_it_looked(monkeypatch, capsys, command) -> None:
    write("c.txt", text(100))
    before = sorted(Path(".").rglob("*"))
    status, _, err = cli(monkeypatch, capsys, *command)
    assert status == 2 and err.count("\n") == 1, err
    assert "none found under checkpoints/ (looked for checkpoints/*/step-*)" in err
    assert sorted(Path(".").rglob("*")) == before


def test_named_checkpoint_missing_or_empty(monkeypatch, capsys) -> None:
    refused(monkeypatch, capsys, "sample", "gone", says="gone: no such checkpoint or run folder")
    os.makedirs("runs/empty")
    write("runs/empty/notes.txt", "hello")
    refused(
        monkeypatch,
        capsys,
        "info",
        "runs/empty",
        says=["runs/empty: holds no readable checkpoint (looked for runs/empty/step-*/checkpoint.json)", "notes.txt"],
    )
    write("c.txt", text(100))
    refused(monkeypatch, capsys, "sample", "c.txt", says="c.txt: not a charlm checkpoint")


# ---------------------------------------------------------------- a real process


def test_a_real_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    write("c.txt", "")
    proc = subprocess.run(
        [sys.executable, "-m", "charlm", "train", "c.txt", "--hidden", "0", "--temperature", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "charlm", "train", "c.txt", "--hidden", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "c.txt: is empty" in proc.stderr and "--hidden must be at least 1" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
