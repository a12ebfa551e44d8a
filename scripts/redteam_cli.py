"""Red-team cases for what charlm writes and how: stdout that cannot be written, rich markup and terminal escape
sequences in user text, seeds, sampling bounds, locales, durations and very long lines.

    CASES: list[tuple[str, bool, Callable[[Path, Path], str | None]]]   # (name, fast, fn)

Each fn(workdir, run) gets a private empty working folder and a copy of a tiny trained run, runs charlm in a
child process, and returns None when charlm behaved (a clean refusal: one `error:` line on stderr, a non-zero
exit, no traceback, nothing of the user's touched; or the right output) or a string saying what went wrong.
A case is fast when it takes under about two seconds.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ESCAPES = "\x1b[2J\x1b]0;title\x07"  # clear the screen; set the window title


@dataclass
class Ran:
    code: int | str  # the exit status, or why there is none ("timed out")
    out: bytes
    err: str


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS", "PYTHONWARNINGS")}
    e.update(PYTHONPATH=str(ROOT), NO_COLOR="1", OMP_NUM_THREADS="1")
    e.update(extra)
    return e


def charlm(
    args: list[str],
    cwd: Path,
    stdin: bytes = b"",
    stdout: int | None = subprocess.PIPE,
    close_stdout: bool = False,
    timeout: float = 120,
    **extra_env: str,
) -> Ran:
    """`charlm ARGS` in a child process; `stdout` a file descriptor to write to, or closed."""
    try:
        p = subprocess.run(
            [sys.executable, "-m", "charlm", *args],
            input=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env(**extra_env),
            timeout=timeout,
            preexec_fn=(lambda: os.close(1)) if close_stdout else None,
        )
    except subprocess.TimeoutExpired:
        return Ran("timed out", b"", "")
    return Ran(p.returncode, p.stdout or b"", p.stderr.decode("utf-8", "replace"))


def refused(r: Ran, says: str = "", code: int | None = None) -> str | None:
    """None when `r` is a clean refusal: non-zero status, exactly one `error:` line, no traceback."""
    lines = r.err.strip().splitlines()
    if isinstance(r.code, str) or r.code == 0:
        return f"{'accepted (exit 0)' if r.code == 0 else r.code}; stderr: {r.err.strip()[-300:]!r}"
    if code is not None and r.code != code:
        return f"exit {r.code}, not {code}: {r.err.strip()[-300:]!r}"
    if "Traceback" in r.err or len(lines) != 1 or not lines[0].startswith("error: "):
        return f"not one error line (exit {r.code}): {r.err.strip()[-400:]!r}"
    if says not in lines[0]:
        return f"the error does not say {says!r}: {lines[0]!r}"
    return None


def worked(r: Ran) -> str | None:
    if r.code != 0:
        return f"exit {r.code}: {r.err.strip()[-400:]!r}"
    if "Traceback" in r.err or "Warning" in r.err:
        return f"a traceback or warning at exit 0: {r.err.strip()[-400:]!r}"
    return None


def raw_controls(data: str) -> str | None:
    """The first control character (other than newline and tab) in `data`, as its repr, or None."""
    bad = [c for c in data if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0]
    return repr(bad[0]) if bad else None


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def untouched(before: dict[str, tuple[int, int]], folder: Path) -> str | None:
    after = snapshot(folder)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return f"files changed: {changed[:5]}" if changed else None


def vocab(run: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from charlm import checkpoint as ckpt_io

    return "".join(ckpt_io.resolve(run).tokenizer.chars)


def model_of(folder: Path, chars: str) -> Path:
    """An untrained tiny GRU checkpoint whose vocabulary is `chars` (to explain or sample any character)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from charlm import checkpoint as ckpt_io
    from charlm.config import ModelConfig, TrainConfig
    from charlm.model import CharGRU
    from charlm.tokenizer import CharTokenizer

    tok = CharTokenizer(chars)
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(vocab_size=tok.vocab_size, hidden=8, embed=4, layers=1))
    meta = {"model": model.config.to_dict(), "train": TrainConfig().to_dict(), "vocab": tok.to_dict(), "step": 1}
    ckpt_io.save(folder, meta, model.state_dict(), {})
    return folder


def text_of(run: Path, n: int = 400) -> str:
    """A text of `n` characters the run's model knows."""
    chars = [c for c in vocab(run) if c != "\n"]
    return "".join(chars[(i * 7) % len(chars)] for i in range(n))


def first_bytes(args: list[str], cwd: Path, n: int, within: float) -> bytes:
    """The first `n` bytes `charlm ARGS` writes on stdout, or what it wrote in `within` seconds; then it is
    ended (as `| head -c N` would end it)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "charlm", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=cwd, env=env()
    )
    timer = threading.Timer(within, p.kill)
    timer.start()
    try:
        return p.stdout.read(n)  # type: ignore[union-attr]
    finally:
        timer.cancel()
        p.kill()
        p.wait()


Case = Callable[[Path, Path], "str | None"]
CASES: list[tuple[str, bool, Case]] = []


def case(name: str, fast: bool) -> Callable[[Case], Case]:
    def add(fn: Case) -> Case:
        CASES.append((name, fast, fn))
        return fn

    return add


# ---------------------------------------------------------------- stdout that cannot be written


# every command that writes to stdout, and whether it runs in under ~2 s (with no torch to load)
STDOUT_COMMANDS = {
    "version": True,
    "help": True,
    "sample": True,
    "sample-many": True,
    "sample-jsonl": True,
    "info": False,
    "info-json": False,
    "evaluate": False,
    "evaluate-per-line": False,
    "explain": False,
    "units": False,
}


def _command(name: str, work: Path, run: Path) -> list[str]:
    (work / "t.txt").write_text(text_of(run), encoding="utf-8")
    r = str(run)
    return {
        "version": ["--version"],
        "help": ["--help"],
        "sample": ["sample", r, "--length", "50"],
        "sample-many": ["sample", r, "--length", "50", "--num-samples", "3"],
        "sample-jsonl": ["sample", r, "--length", "50", "--jsonl"],
        "info": ["info", r],
        "info-json": ["info", r, "--json"],
        "evaluate": ["evaluate", r, "t.txt"],
        "evaluate-per-line": ["evaluate", r, "t.txt", "--per-line"],
        "explain": ["explain", r, "t.txt"],
        "units": ["units", r, "t.txt"],
    }[name]


def _stdout_case(command: str, closed: bool) -> Case:
    def fn(work: Path, run: Path) -> str | None:
        args = _command(command, work, run)
        if closed:
            return refused(charlm(args, work, close_stdout=True), "standard output is closed")
        with open("/dev/full", "wb") as full:
            return refused(charlm(args, work, stdout=full.fileno()), "No space left on device")

    return fn


for _name, _fast in STDOUT_COMMANDS.items():
    if os.path.exists("/dev/full"):
        CASES.append((f"stdout-full-{_name}", _fast, _stdout_case(_name, closed=False)))
    CASES.append((f"stdout-closed-{_name}", _fast, _stdout_case(_name, closed=True)))


# ---------------------------------------------------------------- rich markup in user strings


@case("markup-out-folder-hint", False)
def _(work: Path, run: Path) -> str | None:
    (work / "c.txt").write_text(text_of(run, 3000), encoding="utf-8")
    for out in ("exp[lr=0.01]", "a[/]b", "[bold]x"):
        tiny = ["--hidden", "8", "--layers", "1", "--batch-size", "2", "--seq-len", "8", "--max-steps", "2"]
        r = charlm(["train", "c.txt", "--out", out, *tiny, "--device", "cpu"], work)
        if problem := worked(r):
            return f"--out {out!r}: {problem}"
        quoted = "'" + out + "'"
        if f"sample from it with: charlm sample {quoted}" not in r.err:
            return f"--out {out!r}: the closing hint names another folder: {r.err.strip().splitlines()[-1]!r}"
    return None


@case("markup-units-regex", False)
def _(work: Path, run: Path) -> str | None:
    (work / "t.txt").write_text(text_of(run), encoding="utf-8")
    for regex in ("[/]", "\\[/]", "[bold]a"):
        r = charlm(["units", str(run), "t.txt", "--regex", regex], work)
        if problem := worked(r):
            return f"--regex {regex!r}: {problem}"
        if f"regex {regex}" not in r.out.decode():
            return f"--regex {regex!r} is not shown as written"
    return None


@case("markup-html-path", False)
def _(work: Path, run: Path) -> str | None:
    (work / "t.txt").write_text(text_of(run), encoding="utf-8")
    (work / "p[").mkdir()  # `[/]` in a path is a folder whose name ends in `[`
    r = charlm(["explain", str(run), "t.txt", "--html", "p[/]x.html"], work)
    if problem := worked(r):
        return problem
    return None if "wrote p[/]x.html" in r.err else f"the page's name is not shown as written: {r.err!r}"


@case("markup-corpus-path", False)
def _(work: Path, run: Path) -> str | None:
    before = snapshot(work)
    for args in (["train", "c[/]x.txt"], ["sample", "r[/]un"]):
        if problem := refused(charlm(args, work), args[1]):
            return f"{args}: {problem}"
    return untouched(before, work)


@case("markup-in-a-warning", False)
def _(work: Path, run: Path) -> str | None:
    (work / "w[").mkdir()
    (work / "w[/]x.txt").write_text(text_of(run), encoding="utf-8")
    r = charlm(["explain", str(run), "w[/]x.txt", "--max-chars", "20"], work)
    return worked(r) or (None if "w[/]x.txt: using the first 20" in r.err else f"warning not as written: {r.err!r}")


# ---------------------------------------------------------------- seeds


@case("seed-negative", True)
def _(work: Path, run: Path) -> str | None:
    return refused(charlm(["sample", str(run), "--seed", "-1"], work), "--seed", code=2)


@case("seed-too-large", True)
def _(work: Path, run: Path) -> str | None:
    (work / "c.txt").write_text(text_of(run, 3000), encoding="utf-8")
    before = snapshot(work)
    r = charlm(["train", "c.txt", "--seed", "99999999999999999999999999"], work)
    return refused(r, "--seed", code=2) or untouched(before, work)


# ---------------------------------------------------------------- bounds of a sampling request


@case("many-samples-start-promptly", False)
def _(work: Path, run: Path) -> str | None:
    first = first_bytes(["sample", str(run), "--num-samples", "1000000", "--length", "1"], work, 1000, 60)
    return None if len(first) == 1000 else f"printed {len(first)} bytes within a minute"


@case("a-million-samples-of-one", False)
def _(work: Path, run: Path) -> str | None:
    r = charlm(["sample", str(run), "--num-samples", "1000000", "--length", "1", "--jsonl"], work, timeout=1500)
    if problem := worked(r):
        return problem
    samples = [json.loads(line)["text"] for line in r.out.decode().splitlines()]
    if any(len(t) != 1 for t in samples):
        return "a sample that is not one character long"
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # GiB (ru_maxrss is in KiB)
    if len(samples) != 1_000_000:
        return f"{len(samples)} samples, not 1,000,000"
    return None if peak < 2 else f"peak memory {peak:.1f} GiB"


@case("long-prime-shared-by-64", False)
def _(work: Path, run: Path) -> str | None:
    prime = text_of(run, 10_000_000).encode()
    r = charlm(["sample", str(run), "--prime", "-", "--num-samples", "64", "--length", "5"], work, prime, timeout=1500)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return worked(r) or (None if peak < 2 else f"peak memory {peak:.1f} GiB for a 10 MB prime")


@case("billion-characters-streamed", True)
def _(work: Path, run: Path) -> str | None:
    t = time.monotonic()
    first = first_bytes(["sample", str(run), "--length", "1000000000", "--num-samples", "2"], work, 100, 30)
    took = time.monotonic() - t
    return None if len(first) == 100 and took < 30 else f"{len(first)} bytes in {took:.0f}s"


@case("temperature-1e300", True)
def _(work: Path, run: Path) -> str | None:
    for extra in ([], ["--num-samples", "3"]):
        args = ["sample", str(run), "--length", "200", "--temperature", "1e300", *extra]
        r = charlm(args, work, PYTHONWARNINGS="error")
        if problem := worked(r):
            return problem
        if len(set(r.out.decode())) < 3:
            return f"a degenerate sample: {r.out[:60]!r}"
    return None


@case("stdin-prime-not-utf8", True)
def _(work: Path, run: Path) -> str | None:
    return refused(charlm(["sample", str(run), "--prime", "-"], work, b"ab\xff\xfe"), "not UTF-8", code=2)


# ---------------------------------------------------------------- the terminal


@case("explain-escape-sequences", False)
def _(work: Path, run: Path) -> str | None:
    model_of(work / "m", "ab[]/\n\x1b\x07;]0titleJ2 \u202e")
    text = f"ab{ESCAPES}[/]ab\u202eab"
    for colour in ("1", ""):
        r = charlm(["explain", "m", "--text", text, "--at", "3", "--gates"], work, NO_COLOR=colour)
        if problem := worked(r):
            return problem
        out = r.out.decode()
        if (c := raw_controls(out)) is not None or "\u202e" in out:
            return f"NO_COLOR={colour!r}: a raw {c or 'bidi override'} on stdout"
        if "\\x1b[2J" not in out or "[/]" not in out:
            return f"NO_COLOR={colour!r}: the text is not shown escaped: {out[:120]!r}"
    return None


@case("file-name-escapes-in-errors", False)
def _(work: Path, run: Path) -> str | None:
    name = f"a{ESCAPES}b.txt"
    for args in (["sample", name], ["info", name], ["train", name]):
        r = charlm(args, work)
        if problem := refused(r, "a\\x1b[2J"):
            return f"{args[0]}: {problem}"
        if (c := raw_controls(r.err)) is not None:
            return f"{args[0]}: a raw {c} on stderr"
    return None


def _locale_case(settings: dict[str, str]) -> Case:
    def fn(work: Path, run: Path) -> str | None:
        chars = [c for c in vocab(run) if ord(c) > 0x7F]
        if not chars:
            model_of(work / "m", "日本語の文\n")
            target, chars = "m", ["日", "本"]
        else:
            target = str(run)
        prime = "".join(chars[:2])
        r = charlm(["sample", target, "--prime", prime, "--length", "30", "--seed", "1"], work, **settings)
        if problem := worked(r):
            return problem
        try:
            r.out.decode("utf-8")
        except UnicodeDecodeError:
            return f"stdout is not UTF-8: {r.out[:40]!r}"
        r = charlm(["sample", target, "--prime", prime + "\u00ff\U0001f600", "--length", "5"], work, **settings)
        if (problem := refused(r, "never saw", code=2)) is not None:
            return problem
        return None if "U+DC" not in r.err else f"the prime was misread: {r.err!r}"

    return fn


CASES.append(("locale-ascii-io", True, _locale_case({"PYTHONIOENCODING": "ascii"})))
CASES.append(
    ("locale-c-no-utf8", True, _locale_case({"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}))
)


# ---------------------------------------------------------------- smaller


@case("max-time-zero", True)
def _(work: Path, run: Path) -> str | None:
    (work / "c.txt").write_text(text_of(run, 3000), encoding="utf-8")
    before = snapshot(work)
    return refused(charlm(["train", "c.txt", "--max-time", "0s"], work), "must be more than 0", 2) or untouched(
        before, work
    )


@case("per-line-on-a-2mb-line", False)
def _(work: Path, run: Path) -> str | None:
    (work / "t.txt").write_text(text_of(run, 2_000_000) + "\n", encoding="utf-8")
    t = time.monotonic()
    r = charlm(["evaluate", str(run), "t.txt", "--per-line", "--jsonl"], work, timeout=600)
    took = time.monotonic() - t
    if problem := worked(r):
        return problem
    whole = charlm(["evaluate", str(run), "t.txt", "--json"], work, timeout=600)
    line, text = json.loads(r.out.decode().splitlines()[0]), json.loads(whole.out.decode())
    if line["chars"] != 2_000_000:
        return f"{line['chars']} characters scored, not 2,000,000"
    if took > 60:
        return f"took {took:.0f}s"
    # the line is read as if it began a line, the whole text from its first character: one more is scored
    return None if abs(line["bits"] / line["chars"] - text["bits_per_char"]) < 1e-3 else f"{line} against {text}"
