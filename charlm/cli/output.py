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
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

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


def write_samples(texts: list[str], separator: str, jsonl: bool) -> None:
    """Several samples: `separator` between them and a newline after the last, or one JSON record each."""
    for i, text in enumerate(texts):
        if jsonl:
            print_json({"sample": i, "text": text}, flush=True)
        else:
            sys.stdout.write(text + (separator if i < len(texts) - 1 else "\n"))


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
    """After a broken pipe: point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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
