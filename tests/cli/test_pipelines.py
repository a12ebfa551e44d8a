"""charlm in shell pipelines, driven through real subprocesses: exact stdout bytes, everything else on stderr."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from charlm import checkpoint as ckpt_io  # noqa: E402
from charlm.inference.evaluate import line_records, score_ids  # noqa: E402
from charlm.inference.sample import SampleOptions, sample_many, stream  # noqa: E402

SYLLABLES = ["ka", "ro", "mi", "ne", "lo", "sa", "ti", "vu", "de", "an", "el", "or"]
ANSI = b"\x1b["


def make_corpus(path: Path, lines: int, seed: int) -> str:
    rng = random.Random(seed)
    text = "".join(
        " ".join("".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(rng.randint(1, 4))) + "\n"
        for _ in range(lines)
    )
    path.write_text(text, encoding="utf-8")
    return text


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS")}
    e.update(OMP_NUM_THREADS="1", **extra)
    return e


def charlm(*args: str, cwd: Path, stdin: bytes | None = None, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "charlm", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        cwd=cwd,
        env=env(**extra_env),
        timeout=300,
    )


def popen(*args: str, cwd: Path, **kw: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "charlm", *args], cwd=cwd, env=env(), **kw)


TRAIN = ["--hidden", "16", "--embed", "8", "--seq-len", "32", "--batch-size", "8", "--lr", "0.01", "--seed", "1"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a.txt, b.txt and a tiny model trained on both from stdin, at checkpoints/tiny."""
    d = tmp_path_factory.mktemp("pipelines")
    a = make_corpus(d / "a.txt", 300, 1)
    b = make_corpus(d / "b.txt", 300, 2)
    out = d / "checkpoints" / "tiny"
    r = charlm("train", "-", "--out", str(out), *TRAIN, "--max-steps", "30", "--eval-every", "10", "--json",
               cwd=d, stdin=(a + b).encode())  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stdout)  # the whole of stdout is one JSON object
    assert r.stdout.count(b"\n") == 1 and summary["steps"] == 30 and summary["stopped_by"] == "max_steps"
    assert summary["run"] == str(out) and Path(summary["best_checkpoint"]).is_dir()
    err = r.stderr.decode()
    assert "training on cpu" in err and "validation" in err and "done: 30 steps" in err
    assert ANSI not in r.stderr  # not a terminal: no colour codes
    return d


@pytest.fixture(scope="module")
def model(work: Path):
    ck = ckpt_io.resolve(work / "checkpoints" / "tiny", "best")
    return ckpt_io.load_model(ck, "cpu")


def expected_sample(model, prime: str = "", seed: int = 3, length: int = 50, stop: str | None = None) -> str:
    m, tok = model
    return "".join(stream(m, tok, SampleOptions(length=length, seed=seed, prime=prime, stop=stop), "cpu"))


# ------------------------------------------------------------------------------------------- train


def test_train_read_both_files_from_stdin(work: Path) -> None:
    data = ckpt_io.resolve(work / "checkpoints" / "tiny", "best").meta["data"]
    both = len((work / "a.txt").read_text()) + len((work / "b.txt").read_text())
    assert data["sources"] == ["-"] and data["train_chars"] + data["val_chars"] == both


def test_train_quiet_prints_nothing_without_json(work: Path) -> None:
    r = charlm("train", "a.txt", "--out", "q", *TRAIN, "--max-steps", "3", "--eval-every", "3", "--quiet", cwd=work)
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    assert (work / "q" / "step-00000003").is_dir()


def test_train_sigterm_exits_143_and_says_how_to_resume(work: Path) -> None:
    p = popen("train", "a.txt", "--out", "sig", *TRAIN, "--max-time", "5m", cwd=work,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert p.stderr is not None
    lines = [p.stderr.readline()]  # calibration and the automatic choice come first, then "training on ..."
    while b"training on" not in lines[-1] and lines[-1]:
        lines.append(p.stderr.readline())
    assert b"training on" in lines[-1], lines
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143 and out == b""
    assert b"--resume" in err and b"Traceback" not in err


# ------------------------------------------------------------------------------------------ sample


def test_sample_without_checkpoint_says_which_on_stderr_unless_quiet(work: Path, model) -> None:
    r = charlm("sample", "--length", "50", "--seed", "3", cwd=work)
    assert r.returncode == 0 and r.stdout.decode() == expected_sample(model)
    assert r.stderr.decode() == f"using {Path('checkpoints', 'tiny', 'step-00000030')}\n"
    q = charlm("sample", "--length", "50", "--seed", "3", "--quiet", cwd=work)
    assert (q.stdout, q.stderr) == (r.stdout, b"")


def test_sample_prime_from_stdin(work: Path, model) -> None:
    r = charlm("sample", "checkpoints/tiny", "--prime", "-", "--length", "40", "--seed", "5", cwd=work,
               stdin=b"karo mi")  # fmt: skip
    assert r.returncode == 0 and r.stderr == b""
    assert r.stdout.decode() == expected_sample(model, prime="karo mi", seed=5, length=40)


def test_sample_stop_and_num_samples(work: Path, model) -> None:
    m, tok = model
    opts = SampleOptions(length=60, seed=7, stop="\n")
    texts = sample_many(m, tok, opts, 3, "cpu")
    r = charlm("sample", "checkpoints/tiny", "--length", "60", "--seed", "7", "--stop", "\n", "--num-samples", "3",
               "--separator", "\n", cwd=work)  # fmt: skip
    assert r.returncode == 0 and r.stderr == b""
    assert r.stdout.decode() == "\n".join(texts) + "\n" and all("\n" not in t for t in texts)
    d = charlm("sample", "checkpoints/tiny", "--length", "60", "--seed", "7", "--num-samples", "3", cwd=work)
    assert d.stdout.decode() == "\n\n".join(sample_many(m, tok, SampleOptions(length=60, seed=7), 3, "cpu")) + "\n"


def test_sample_jsonl_one_record_per_sample(work: Path, model) -> None:
    m, tok = model
    texts = sample_many(m, tok, SampleOptions(length=30, seed=2), 4, "cpu")
    r = charlm("sample", "checkpoints/tiny", "--length", "30", "--seed", "2", "--num-samples", "4", "--jsonl",
               cwd=work)  # fmt: skip
    assert r.returncode == 0 and r.stderr == b""
    lines = r.stdout.decode().splitlines()
    assert [json.loads(line) for line in lines] == [{"sample": i, "text": t} for i, t in enumerate(texts)]


def test_sample_into_head_ends_quietly(work: Path, model) -> None:
    cmd = f"{sys.executable} -m charlm sample checkpoints/tiny --length 10000000 --seed 3 | head -c 100"
    r = subprocess.run(["bash", "-c", cmd + "; echo ${PIPESTATUS[0]} >&2"], capture_output=True, cwd=work, env=env())
    assert r.stderr == b"0\n"  # charlm's status, and nothing else on stderr
    assert r.stdout == expected_sample(model, length=100).encode()[:100]


def test_sample_streams_text_as_it_is_generated(work: Path, model) -> None:
    """The first text reaches the reader while the sample is far from done, long before a full 8 KiB buffer."""
    p = popen("sample", "checkpoints/tiny", "--length", "10000000", "--seed", "3", cwd=work,
              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert p.stdout is not None
        first = os.read(p.stdout.fileno(), 1 << 16)
        assert p.poll() is None  # still generating its ten million characters
        assert 0 < len(first) < 8192
        assert expected_sample(model, length=len(first)).encode().startswith(first)
    finally:
        p.kill()
        p.wait()


def test_interactive_continues_each_line(work: Path, model) -> None:
    r = charlm("sample", "checkpoints/tiny", "--interactive", "--length", "25", "--seed", "10", cwd=work,
               stdin=b"karo\nmi ne\n")  # fmt: skip
    assert r.returncode == 0 and r.stderr == b""
    want = expected_sample(model, "karo", 10, 25) + "\n" + expected_sample(model, "mi ne", 11, 25) + "\n"
    assert r.stdout.decode() == want


def test_interactive_answers_each_line_before_the_next_arrives(work: Path, model) -> None:
    p = popen("sample", "checkpoints/tiny", "-i", "--length", "20", "--seed", "4", "--stop", "\n", cwd=work,
              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(b"sa\n")
    p.stdin.flush()
    assert p.stdout.readline().decode() == expected_sample(model, "sa", 4, 20, "\n") + "\n"  # model kept loaded
    p.send_signal(signal.SIGINT)  # Ctrl-C while it waits for the next line
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and b"Traceback" not in err


# ---------------------------------------------------------------------------------------- evaluate


def test_evaluate_stdin_and_json(work: Path, model) -> None:
    m, tok = model
    text = (work / "b.txt").read_text()
    want = score_ids(m, tok.encode(text), "cpu")
    r = charlm("evaluate", "checkpoints/tiny", "-", "--json", cwd=work, stdin=text.encode())
    assert r.returncode == 0 and r.stderr == b"" and r.stdout.count(b"\n") == 1
    got = json.loads(r.stdout)
    assert got["chars"] == want.chars and got["bits_per_char"] == pytest.approx(want.bits_per_char, rel=1e-6)
    plain = charlm("evaluate", "checkpoints/tiny", "-", cwd=work, stdin=text.encode())
    assert plain.stdout.decode() == (
        f"{want.loss:.4f} nats/char\t{want.bits_per_char:.4f} bits/char\tperplexity {want.perplexity:.3f}\t"
        f"{want.chars} chars\n"
    )


def test_evaluate_per_line_records(work: Path, model) -> None:
    m, tok = model
    text = "karo mi\n\nsa ti vu\nkarokaro\n"
    scores = line_records(m, tok, text, False, "cpu")
    want = "".join(f"{s.bits_per_char:.4f}\t{s.bits:.2f}\t{s.chars}\t{line}\n" for line, s in scores)
    r = charlm("evaluate", "--per-line", "checkpoints/tiny", "-", cwd=work, stdin=text.encode())
    assert r.returncode == 0 and r.stderr == b""
    assert r.stdout.decode() == want
    rows = [line.split("\t") for line in r.stdout.decode().splitlines()]
    assert [row[3] for row in rows] == ["karo mi", "", "sa ti vu", "karokaro"]
    assert [int(row[2]) for row in rows] == [7, 0, 8, 8] and rows[1][0] == "nan"
    j = charlm("evaluate", "--per-line", "--jsonl", "--quiet", "-", cwd=work, stdin=text.encode())  # newest run
    assert j.returncode == 0 and j.stderr == b""
    recs = [json.loads(line) for line in j.stdout.decode().splitlines()]
    assert [r["text"] for r in recs] == ["karo mi", "", "sa ti vu", "karokaro"] and recs[1]["bits_per_char"] is None
    assert [f"{r['bits']:.2f}" for r in recs] == [row[1] for row in rows]


def test_evaluate_per_line_into_head_ends_quietly(work: Path) -> None:
    many = make_corpus(work / "many.txt", 20000, 3)
    p = popen("evaluate", "--per-line", "checkpoints/tiny", "many.txt", cwd=work,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert p.stdout is not None
    first = p.stdout.readline()
    p.stdout.close()  # `| head -1`
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0 and err == b""
    assert first.decode().endswith("\t" + many.split("\n")[0] + "\n")


# -------------------------------------------------------------------------------- info, plot, errors


def test_info_json_and_curve(work: Path) -> None:
    r = charlm("info", "checkpoints/tiny", "--json", cwd=work)
    assert r.returncode == 0 and r.stderr == b"" and r.stdout.count(b"\n") == 1
    d = json.loads(r.stdout)
    assert d["step"] == 30 and [m["step"] for m in d["metrics"]] == [10, 20, 30]
    q = charlm("info", "--quiet", cwd=work)  # the newest run, without saying so
    assert q.returncode == 0 and q.stderr == b""
    text = q.stdout.decode()
    curve = [line for line in text.splitlines() if "val bpc" in line]
    assert len(curve) == 1 and sum(c in "▁▂▃▄▅▆▇█" for c in curve[0]) == 3


def test_plot_writes_a_png(work: Path) -> None:
    pytest.importorskip("matplotlib")
    r = charlm("plot", "checkpoints/tiny", "-o", "curve.png", cwd=work)
    assert r.returncode == 0 and r.stdout == b"" and r.stderr == b"wrote curve.png\n"
    assert (work / "curve.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    s = charlm("plot", "-o", "-", "--quiet", cwd=work)
    assert s.stdout.startswith(b"\x89PNG\r\n\x1a\n") and s.stderr == b""


def test_plot_without_matplotlib_says_how_to_get_it(work: Path, tmp_path: Path) -> None:
    fake = tmp_path / "matplotlib"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    r = charlm("plot", "checkpoints/tiny", "-o", "x.png", cwd=work, PYTHONPATH=str(tmp_path))
    assert r.returncode == 1 and r.stdout == b"" and not (work / "x.png").exists()
    assert r.stderr.count(b"\n") == 1 and b"pip install 'charlm[plot]'" in r.stderr


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["sample", "checkpoints/tiny", "--length", "-1"], 2),
        (["evaluate", "checkpoints/tiny", "missing.txt"], 2),
        (["sample", "no/such/run"], 2),
        (["evaluate", "--jsonl", "checkpoints/tiny", "a.txt"], 2),
    ],
)
def test_errors_are_one_line_on_stderr(work: Path, args: list[str], code: int) -> None:
    r = charlm(*args, cwd=work)
    assert r.returncode == code and r.stdout == b""
    assert r.stderr.startswith(b"error: ") and r.stderr.count(b"\n") == 1


def test_no_color_means_no_escape_codes(work: Path) -> None:
    forced = charlm("sample", "--no-such-option", cwd=work, FORCE_COLOR="1")
    assert ANSI in forced.stderr  # the check below can fail
    plain = charlm("sample", "--no-such-option", cwd=work, FORCE_COLOR="1", NO_COLOR="1")
    assert ANSI not in plain.stderr and plain.stderr.startswith(b"error: ")


def test_version_and_completion(work: Path) -> None:
    from charlm import __version__

    v = charlm("--version", cwd=work)
    assert (v.returncode, v.stdout, v.stderr) == (0, f"charlm {__version__}\n".encode(), b"")
    c = charlm(cwd=work, _CHARLM_COMPLETE="complete_bash", COMP_WORDS="charlm sa", COMP_CWORD="1")
    assert c.returncode == 0 and c.stdout.split() == [b"sample"]
    # --show-completion takes no value: it prints the script for the shell it runs under (found from the
    # parent processes), so it runs under bash here, whatever runs the tests.
    shown = f"{sys.executable} -m charlm --show-completion && true"  # not exec: bash stays the parent
    s = subprocess.run(["bash", "-c", shown], capture_output=True, cwd=work, env=env(), timeout=60)
    assert s.returncode == 0 and b"_CHARLM_COMPLETE=complete_bash" in s.stdout, s.stderr
