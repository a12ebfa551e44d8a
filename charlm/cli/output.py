"""What charlm writes on stdout, and how it behaves in a pipeline.

stdout carries only payload: sample text, score records, JSON. Text is flushed as it is produced (at each
newline, or every FLUSH_EVERY seconds), so `charlm sample | tee out.txt` shows it as it comes, and a reader
that goes away early (`charlm sample | head -c 100`) ends charlm quietly with status 0.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from charlm.errors import OutputError, UsageError

if TYPE_CHECKING:  # the library, which a bare `charlm --help` should not wait for
    from charlm.api import LineScore, Score

FLUSH_EVERY = 0.05  # seconds


def write_stream(pieces: Iterable[str], out: TextIO | None = None, every: float = FLUSH_EVERY) -> None:
    """Write text as it comes, flushing at each newline or every `every` seconds."""
    out = out or sys.stdout
    last = time.monotonic()
    for piece in pieces:
        out.write(piece)
        if "\n" in piece or time.monotonic() - last >= every:
            out.flush()
            last = time.monotonic()
    out.flush()


def write_samples(pieces: Iterable[tuple[int, str]], separator: str, jsonl: bool) -> None:
    """Several samples, as (sample number, piece) in order, written as they come: `separator` between them
    and a newline after the last, or one JSON record each, `{"sample": i, "text": ...}` (its text streamed
    too, so a sample of any length never has to be held)."""
    current: int | None = None

    def text() -> Iterator[str]:
        nonlocal current
        for i, piece in pieces:
            if i != current:
                if current is not None:
                    yield '"}\n' if jsonl else separator
                yield f'{{"sample": {i}, "text": "' if jsonl else ""
                current = i
            yield json.dumps(piece, ensure_ascii=False)[1:-1] if jsonl else piece
        if current is not None:
            yield '"}\n' if jsonl else "\n"

    write_stream(text())


def _clean(value: Any) -> Any:
    """NaN and infinity become null: JSON has no other way to say them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def print_json(record: dict[str, Any], flush: bool = False) -> None:
    """One JSON object on one line of stdout (the format of both --json and --jsonl)."""
    print(json.dumps(_clean(record), ensure_ascii=False), flush=flush)


def silence_stdout() -> None:
    """After a broken pipe or a failed write: point stdout at /dev/null so the interpreter's last flush cannot
    fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


class GuardedStream:
    """stdout (or its binary buffer), whose failures are an OutputError: a one-line message, not a traceback.

    A reader that went away (BrokenPipeError) is left as it is: that is a normal end for a pipeline. A closed
    stdout (Python then sets sys.stdout to None, and print() would drop the payload without a word) fails at
    the first write.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _call(self, method: str, *args: Any) -> Any:
        if self._stream is None:
            if method == "flush":
                return None
            raise OutputError("cannot write the output: standard output is closed")
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write to standard output: {e.strerror or e}") from None

    def write(self, data: Any) -> Any:
        return self._call("write", data)

    def writelines(self, lines: Any) -> Any:
        return self._call("writelines", lines)

    def flush(self) -> None:
        self._call("flush")

    def isatty(self) -> bool:
        return self._stream is not None and self._stream.isatty()

    @property
    def buffer(self) -> GuardedStream:
        return GuardedStream(getattr(self._stream, "buffer", None))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _ensure_open(fd: int, flags: int) -> None:
    """Open /dev/null on a standard descriptor the caller closed, so no file charlm opens can take its number
    (and receive what is written to stdout or stderr)."""
    try:
        os.fstat(fd)
    except OSError:
        devnull = os.open(os.devnull, flags)
        if devnull != fd:
            os.dup2(devnull, fd)
            os.close(devnull)


def guard_stdio() -> None:
    """Set up the standard streams for the command line.

    stdout is written as UTF-8 whatever the locale says (the text charlm reads and writes is UTF-8), and its
    failures become OutputError; stderr, for people, keeps the terminal's encoding and shows what it cannot
    encode as escapes rather than failing.
    """
    closed_out = sys.stdout is None
    _ensure_open(0, os.O_RDONLY)
    _ensure_open(1, os.O_WRONLY)
    _ensure_open(2, os.O_WRONLY)
    if isinstance(sys.stdout, GuardedStream):
        return
    if not closed_out and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8", errors="strict")
    if sys.stderr is not None and hasattr(sys.stderr, "reconfigure"):
        sys.stderr.reconfigure(errors="backslashreplace")
    sys.stdout = GuardedStream(None if closed_out else sys.stdout)  # type: ignore[assignment]


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"standard input is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})") from None


def read_stdin() -> str:
    """All of standard input as UTF-8 text, or a one-line UsageError."""
    return _utf8(sys.stdin.buffer.read() if sys.stdin is not None else b"")


def read_stdin_line() -> str:
    """The next line of standard input as UTF-8 text ("" at its end), or a one-line UsageError."""
    return _utf8(sys.stdin.buffer.readline() if sys.stdin is not None else b"")


def train_summary(result: Any) -> dict[str, Any]:
    return {
        "run": str(result.run),
        "steps": result.step,
        "best_val_bpc": result.best_val_bpc,
        "best_checkpoint": str(result.best) if result.best else None,
        "last_checkpoint": str(result.last) if result.last else None,
        "chars_per_sec": result.chars_per_sec,
        "elapsed": result.elapsed,
        "stopped_by": result.stopped_by,
    }


def print_score(r: Score, json_out: bool) -> None:
    """A whole text's score: one JSON object (--json), or loss, bits/char, perplexity and characters, tab-separated."""
    if json_out:
        print_json(r.to_dict())
    else:
        print(
            f"{r.nats_per_char:.4f} nats/char\t{r.bits_per_char:.4f} bits/char\tperplexity {r.perplexity:.3f}\t"
            f"{r.chars} chars"
        )


def print_line_scores(records: Iterable[LineScore], jsonl: bool) -> None:
    """One record per line: tab-separated `bits/char  bits  chars  line`, or one JSON object (--jsonl)."""
    for s in records:
        if jsonl:
            print_json(s.to_dict())
        else:
            print(f"{s.bits_per_char:.4f}\t{s.bits:.2f}\t{s.chars}\t{s.text}")
