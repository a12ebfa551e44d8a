"""`charlm forecast` on the command line: stdout carries only the forecast (or, with --backtest, its scores),
every bad input is one line on stderr with exit status 2 and nothing written, --from and --resume, --plot,
and `charlm info` on a forecaster's run."""

from __future__ import annotations

import builtins
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_bad_input import cli  # runs `charlm ARGS...` in this process: (exit status, stdout, stderr)

QUICK = ["--max-steps", "15", "-q"]


def monthly(name: str = "sales.csv", n: int = 60, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    rows = [
        f"{2015 + i // 12}-{i % 12 + 1:02d}-01,{100 + 10 * np.sin(2 * np.pi * i / 12) + i + rng.normal():.3f}"
        for i in range(n)
    ]
    Path(name).write_text("month,sales\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return name


def test_stdout_carries_only_the_forecast(monkeypatch, capsys) -> None:
    code, out, err = cli(monkeypatch, capsys, "forecast", monthly(), "--horizon", "4", "--max-steps", "15")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "timestamp\tmedian\tp10\tp90"
    assert [line.split("\t")[0] for line in lines[1:]] == ["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01"]
    for line in lines[1:]:
        median, p10, p90 = map(float, line.split("\t")[1:])
        assert p10 < median < p90
    assert "season 12" in err and "checkpoints/sales-forecast" in err  # the notes went to stderr


def test_json_and_one_number_per_line_from_stdin(monkeypatch, capsys) -> None:
    values = "\n".join(f"{np.sin(i / 2) * 5 + i * 0.1:.4f}" for i in range(50))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(values + "\n"))
    code, out, err = cli(monkeypatch, capsys, "forecast", "-", "--horizon", "3", "--json", *QUICK)
    assert code == 0 and err == ""
    d = json.loads(out)
    assert d["horizon"] == 3 and [r["step"] for r in d["rows"]] == [1, 2, 3] and d["rows"][0]["timestamp"] is None
    assert d["run"] == "checkpoints/stdin-forecast"


def test_backtest_prints_the_scores(monkeypatch, capsys) -> None:
    code, out, err = cli(monkeypatch, capsys, "forecast", monthly(), "--horizon", "6", "--backtest", *QUICK)
    assert code == 0, err
    lines = [line.split("\t") for line in out.splitlines()]
    assert lines[0] == ["metric", "charlm", "seasonal_naive"]
    assert [row[0] for row in lines[1:]] == ["MASE", "sMAPE", "CRPS", "pinball", "coverage80"]
    assert all(float(v) >= 0 for row in lines[1:] for v in row[1:])


def test_from_a_run_with_new_observations_and_info(monkeypatch, capsys) -> None:
    monthly("all.csv", n=64)
    head = Path("all.csv").read_text().splitlines()
    Path("old.csv").write_text("\n".join(head[:61]) + "\n")
    Path("new.csv").write_text("\n".join([head[0], *head[61:]]) + "\n")
    code, out, err = cli(monkeypatch, capsys, "forecast", "old.csv", "--horizon", "2", "--out", "run", *QUICK)
    assert code == 0, err
    code, again, err = cli(monkeypatch, capsys, "forecast", "--from", "run")
    assert code == 0 and again == out, err  # the saved model and the same seed: the same forecast
    code, out, err = cli(monkeypatch, capsys, "forecast", "new.csv", "--from", "run", "-q")
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()[1:]] == ["2020-05-01", "2020-06-01"]
    code, out, err = cli(monkeypatch, capsys, "info", "run")
    assert code == 0 and "forecaster      nn.GRU" in out and "60 values" in out and "season          12" in out
    code, out, err = cli(monkeypatch, capsys, "info", "run", "--json")
    assert json.loads(out)["kind"] == "forecaster"
    code, out, err = cli(monkeypatch, capsys, "sample", "run")
    assert code == 1 and "a forecaster, not a language model" in err and out == ""
    code, out, err = cli(monkeypatch, capsys, "plot", "run")
    assert code == 1 and "charlm forecast --from run --plot" in err


def test_resume(monkeypatch, capsys) -> None:
    monthly()
    assert cli(monkeypatch, capsys, "forecast", "sales.csv", "--out", "r", "--max-steps", "10", "-q")[0] == 0
    code, out, err = cli(monkeypatch, capsys, "forecast", "sales.csv", "--out", "r", "--resume", "--max-steps", "20")
    assert code == 0, err
    assert "resuming at step 10" in err and len(out.splitlines()) == 13
    assert [p.name for p in Path("r").glob("step-*")] == ["step-00000020"]


def test_plot_draws_a_png_and_refuses_to_overwrite_other_files(monkeypatch, capsys) -> None:
    pytest.importorskip("matplotlib")
    monthly()
    code, out, err = cli(monkeypatch, capsys, "forecast", "sales.csv", "--plot", "f.png", "-H", "3", *QUICK)
    assert code == 0, err
    assert Path("f.png").read_bytes().startswith(b"\x89PNG")
    code, _, err = cli(monkeypatch, capsys, "forecast", "sales.csv", "--plot", "f.png", "-H", "3", "--out", "x",
                       *QUICK)  # fmt: skip
    assert code == 0, err  # its own picture may be drawn again
    Path("notes.png").write_text("mine")
    refusals = (
        ("notes.png", "is not a PNG image charlm wrote"),
        ("sales.csv", "the input being read"),
        ("x/f.png", "is inside the run folder"),
    )
    for target, says in refusals:
        code, out, err = cli(monkeypatch, capsys, "forecast", "sales.csv", "--plot", target, *QUICK)
        assert code == 2 and says in err and out == ""
    assert Path("notes.png").read_text() == "mine"


def test_plot_without_matplotlib_says_what_to_install(monkeypatch, capsys) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monthly()
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, out, err = cli(monkeypatch, capsys, "forecast", "sales.csv", "--plot", "f.png", *QUICK)
    assert code == 1 and "pip install 'charlm[plot]'" in err and len(err.strip().splitlines()) == 1
    assert not Path("checkpoints").exists()  # said before training, not after


BAD = [
    ("sales,n\n1,a\n2,3\n", ["--column", "n"], "line 2: 'a' in column 'n' is not a number"),
    ("sales\n1\n2\n", ["--column", "units"], "no column named 'units'"),
    ("\n".join(str(i % 5) for i in range(20)), ["--season", "5", "--horizon", "12"], "at least 22 are needed"),
    ("v\n" + "3\n" * 30, [], "all 30 values are equal"),
    ("v\n" + "".join(f"{i % 7}\n" for i in range(30)).replace("\n4\n", "\nnan\n", 1), [], "line(s) 6; --fill"),
    ("v\n" + "".join(f"{i % 7}\n" for i in range(30)) + "inf\n", [], "infinite value(s) at line(s) 32"),
    ("t,v\n" + "".join(f"2020-01-{d:02d},{d % 3}\n" for d in (2, 1, *range(3, 29))), [], "not in order: line 3"),
    ("t,v\n" + "".join(f"2020-01-{d:02d},{d % 3}\n" for d in (1, 1, *range(2, 29))), [], "repeats the timestamp"),
]


@pytest.mark.parametrize(("text", "args", "says"), BAD)
def test_bad_input_is_one_line_and_touches_nothing(monkeypatch, capsys, text, args, says) -> None:
    Path("s.csv").write_text(text, encoding="utf-8")
    before = sorted(Path(".").rglob("*"))
    code, out, err = cli(monkeypatch, capsys, "forecast", "s.csv", *args, *QUICK)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
    assert sorted(Path(".").rglob("*")) == before and Path("s.csv").read_text(encoding="utf-8") == text


def test_fill_interpolates_what_was_refused(monkeypatch, capsys) -> None:
    text = "v\n" + "".join(f"{i % 7 + 0.1 * i}\n" for i in range(40)).replace("\n4.0\n", "\nnan\n", 1)
    Path("s.csv").write_text(text)
    code, out, err = cli(monkeypatch, capsys, "forecast", "s.csv", "--fill", "-H", "2", *QUICK)
    assert code == 0 and len(out.splitlines()) == 3, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--from", "run", "--max-steps", "3"], "without training; drop --max-steps"),
        ([], "give a SERIES"),
        (["s.csv", "--likelihood", "poisson"], "--likelihood must be one of gaussian, student-t, quantile"),
        (["s.csv", "--max-time", "soon"], "--max-time"),
        (["s.csv", "--resume"], "--resume needs --out"),
        (["missing.csv"], "missing.csv: no such file"),
    ],
)
def test_bad_options(monkeypatch, capsys, args, says) -> None:
    Path("s.csv").write_text("v\n" + "".join(f"{i % 7 + 0.1 * i}\n" for i in range(40)))
    code, out, err = cli(monkeypatch, capsys, "forecast", *args, "-q")
    assert code == 2 and out == "" and says in err and len(err.strip().splitlines()) == 1, err
    assert not Path("checkpoints").exists()


def test_a_real_process_keeps_stdout_for_the_forecast(tmp_path: Path) -> None:
    monthly()
    proc = subprocess.run(
        [sys.executable, "-m", "charlm", "forecast", "sales.csv", "-H", "2", "--max-steps", "5"],
        capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "timestamp\tmedian\tp10\tp90" and len(proc.stdout.splitlines()) == 3
    assert "training the forecaster" in proc.stderr and "Traceback" not in proc.stderr


ROOT = Path(__file__).resolve().parents[2]


def test_ctrl_c_keeps_a_checkpoint_to_resume_from() -> None:
    import os
    import signal
    import time

    monthly(n=240)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlm", "forecast", "sales.csv", "--out", "r", "--max-time", "2m", "-H", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    while b"training the forecaster" not in seen:  # training has begun: interrupt it
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    err = seen + err
    assert proc.returncode == 130 and out == b"", err
    assert b"continue with: charlm forecast --resume --out r" in err and b"Traceback" not in err
    saved = [p.name for p in Path("r").glob("step-*")]
    assert len(saved) == 1
    done = subprocess.run(
        [sys.executable, "-m", "charlm", "forecast", "sales.csv", "--out", "r", "--resume", "--max-steps", "400",
         "-q"], capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and len(done.stdout.splitlines()) == 4, done.stderr
