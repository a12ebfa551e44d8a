"""Corpus reading and checking, the train/validation split, and the stream batcher for truncated BPTT."""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charlm.errors import CorpusError

STDIN = "-"
_BINARY_SNIFF = 8192


def check_source(source: str) -> Path:
    """The path of a corpus file that exists and is a regular file, or a one-line CorpusError."""
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"{source}: no such file")
    if path.is_dir():
        raise CorpusError(f"{source}: is a directory, not a text file")
    if not path.is_file():
        raise CorpusError(f"{source}: is not a regular file")
    return path


def check_head(name: str, head: bytes) -> None:
    """Refuse UTF-16 and binary data from the first bytes of a file."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise CorpusError(f"{name}: is UTF-16 text, not UTF-8; convert it first (iconv -f UTF-16 -t UTF-8)")
    if b"\x00" in head[:_BINARY_SNIFF]:
        raise CorpusError(f"{name}: looks like a binary file (it holds NUL bytes), not UTF-8 text")


def bad_utf8(name: str, at: int, line: int) -> CorpusError:
    return CorpusError(
        f"{name}: not valid UTF-8 at byte {at} (line {line}); "
        "use --replace-bad-bytes to read it with U+FFFD in their place"
    )


def read_text(source: str, replace_errors: bool = False) -> str:
    """Read one UTF-8 text file (or stdin for '-'), with a one-line CorpusError for every way it can fail."""
    name = "standard input" if source == STDIN else source
    if source == STDIN:
        raw = sys.stdin.buffer.read()
    else:
        path = check_source(source)
        try:
            raw = path.read_bytes()
        except PermissionError:
            raise CorpusError(f"{source}: permission denied (cannot read it)") from None
        except OSError as e:
            raise CorpusError(f"{source}: cannot read it ({e.strerror or e})") from None
    check_head(name, raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if replace_errors:
            return raw.decode("utf-8", errors="replace")
        raise bad_utf8(name, e.start, raw.count(b"\n", 0, e.start) + 1) from None


def streams_problem(n_chars: int, batch_size: int, seq_len: int) -> str | None:
    """Why `n_chars` of training text cannot fill `batch_size` streams of one `seq_len` window, if it cannot."""
    if seq_len >= 1 and batch_size >= 1 and (n_chars - 1) // batch_size < seq_len:
        return (
            f"the training text ({n_chars} characters) is too short for {batch_size} streams of "
            f"{seq_len} characters; lower --batch-size or --seq-len"
        )
    return None


def read_corpus(sources: list[str], replace_errors: bool = False) -> str:
    """Concatenate one or more text sources; a newline is put between files that lack one at the end."""
    if sources.count(STDIN) > 1:
        raise CorpusError("standard input ('-') can be given only once")
    parts = [read_text(s, replace_errors) for s in sources]
    joined = ""
    for part in parts:
        if joined and not joined.endswith("\n"):
            joined += "\n"
        joined += part
    return joined


def check_trainable(text: str, name: str, seq_len: int, min_windows: int = 1) -> None:
    """Refuse text no model can learn from, before anything is written."""
    check_figures(name, len(text), set(text), len(text), seq_len * min_windows)


def check_figures(
    name: str, chars: int, distinct: Collection[str], train_chars: int, window: int, train_word: str = ""
) -> None:
    """The same refusal from a corpus's figures alone: its size, its distinct characters and the characters
    left for training (`train_word` says so in the message when they are fewer than all of them)."""
    if chars == 0:
        raise CorpusError(f"{name}: is empty")
    if all(c.isspace() for c in distinct):
        raise CorpusError(f"{name}: holds only whitespace")
    if len(distinct) < 2:
        raise CorpusError(f"{name}: is one character repeated; there is nothing to learn")
    if train_chars < window + 1:
        raise CorpusError(
            f"{name}: has {train_chars} characters{train_word}, fewer than one training window needs "
            f"({window + 1}); add text or lower --seq-len"
        )


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """The last `val_fraction` of the characters is validation (nanoGPT's split, so figures compare)."""
    n_val = int(len(text) * val_fraction)
    return (text, "") if n_val == 0 else (text[:-n_val], text[-n_val:])


@dataclass
class Batch:
    x: torch.Tensor  # (B, T) input ids
    y: torch.Tensor  # (B, T) the next character for each input
    reset: bool  # True at the start of a pass: the carried hidden state must be zeroed


class TokenStreams:
    """Stateful truncated BPTT: the text is cut into `num_streams` contiguous streams read side by side.

    Step k reads characters [offset, offset + seq_len) of every stream, so row b of one batch continues
    exactly where row b of the previous batch stopped, and the hidden state can be carried across steps.
    After the last full window the offset returns to 0 (a new pass) and `reset` says so.
    The only state is `offset`, which a checkpoint stores for an exact resume.
    `rows` picks a subset of the streams (one rank's share in distributed training).
    """

    def __init__(self, ids: np.ndarray, num_streams: int, seq_len: int, rows: slice | None = None) -> None:
        self.seq_len = seq_len
        self.stream_len = (len(ids) - 1) // num_streams
        if self.stream_len < seq_len:
            raise CorpusError(
                f"the training text ({len(ids)} characters) is too short for {num_streams} streams of "
                f"{seq_len} characters; lower --batch-size or --seq-len"
            )
        usable = self.stream_len * num_streams
        rows = rows or slice(None)
        # Row b holds stream b; the targets are the same text shifted by one character. These are views,
        # so a memory-mapped id file is never read whole: each batch copies only its own window.
        self._x = ids[:usable].reshape(num_streams, -1)[rows]
        self._y = ids[1 : usable + 1].reshape(num_streams, -1)[rows]
        self.windows = self.stream_len // seq_len
        self.offset = 0

    @property
    def chars_per_batch(self) -> int:
        return self._x.shape[0] * self.seq_len

    def next_batch(self) -> Batch:
        reset = self.offset == 0
        a, b = self.offset, self.offset + self.seq_len
        x = torch.from_numpy(self._x[:, a:b].astype(np.int64))
        y = torch.from_numpy(self._y[:, a:b].astype(np.int64))
        batch = Batch(x, y, reset)
        self.offset = 0 if b + self.seq_len > self.stream_len else b
        return batch
