"""Reading corpora, and the one set of checks and messages about them.

A corpus is one or more sources, each a UTF-8 text file or "-" for standard input. `Corpus` reads them in
chunks, joined by one rule: a newline goes between two files when the first lacks one at its end. It can read
them as often as a caller needs: the encoder (charlm.data.encode) reads a training corpus twice, once to count
it and once to write its ids. Files are simply read again; standard input is spooled as it is first read, in
memory up to SPOOL_MEMORY and beyond that into an unnamed temporary file (in TMPDIR) that vanishes with the
process however it ends, so a pipe never leaves a copy of itself behind. Every way a source can be unusable
is a one-line CorpusError that names it.

The checks refuse text no model can learn from (empty, whitespace only, one character repeated, too short for
one window or for the streams), from a corpus's figures alone, so that a corpus of any size is checked
without being held in memory.
"""

from __future__ import annotations

import codecs
import errno
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from charlm.errors import CorpusError, param

STDIN = "-"
CHUNK_BYTES = 8 << 20
SPOOL_MEMORY = 64 << 20  # standard input beyond this many bytes is spooled to a temporary file
_BINARY_SNIFF = 8192


def source_name(source: str) -> str:
    return "standard input" if source == STDIN else source


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
    """Refuse UTF-16 and binary data from the first bytes of a source."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise CorpusError(f"{name}: is UTF-16 text, not UTF-8; convert it first (iconv -f UTF-16 -t UTF-8)")
    check_nul(name, head[:_BINARY_SNIFF], 0)


def check_nul(name: str, raw: bytes, done: int) -> None:
    """Refuse a NUL byte anywhere in a source (`raw` starts at byte `done`): the same rule for the whole text."""
    if (at := raw.find(b"\x00")) >= 0:
        where = "" if done + at < _BINARY_SNIFF else f" at byte {done + at:,}"
        raise CorpusError(f"{name}: looks like a binary file (it holds NUL bytes{where}), not UTF-8 text")


@dataclass
class Piece:
    """A chunk of a corpus: its UTF-8 bytes, and its text unless it is ASCII (then the bytes are the text)."""

    raw: bytes
    text: str | None
    nbytes: int  # source bytes it consumed, for a progress bar

    def string(self) -> str:
        return self.raw.decode("ascii") if self.text is None else self.text

    def code_points(self) -> np.ndarray:
        if self.text is None:  # ASCII: one byte per character, no decoding needed
            return np.frombuffer(self.raw, dtype=np.uint8)
        return np.frombuffer(self.text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)

    def utf8_prefix(self, chars: int) -> bytes:
        return self.raw[:chars] if self.text is None else self.text[:chars].encode("utf-8", "surrogatepass")


class Corpus:
    """The training sources and, for --val FILE, the validation sources: checked, then read as often as needed.

    Use it as a context manager, so that spooled standard input is released. `pieces(1)` reads the validation
    sources (none without --val FILE); they are never joined to the training text by a newline.
    """

    def __init__(self, sources: Sequence[str], val: Sequence[str] = (), replace_errors: bool = False) -> None:
        self.groups = (list(sources), list(val))
        self.replace_errors = replace_errors
        self._spool: IO[bytes] | None = None
        every = [*sources, *val]
        problems = ["standard input ('-') can be given only once"] if every.count(STDIN) > 1 else []
        for source in dict.fromkeys(s for s in every if s != STDIN):
            try:
                check_source(source)
            except CorpusError as e:
                problems += e.problems
        if problems:
            raise CorpusError(problems)

    def __enter__(self) -> Corpus:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def name(self, group: int = 0) -> str:
        """How messages name a group of sources: the source itself, or how many files it holds."""
        sources = self.groups[group]
        return source_name(sources[0]) if len(sources) == 1 else f"{len(sources)} files"

    def size(self) -> int:
        """The bytes of all sources (standard input is spooled to know it)."""
        total = 0
        for source in [*self.groups[0], *self.groups[1]]:
            if source != STDIN:
                total += Path(source).stat().st_size
                continue
            try:
                with self._open(source) as f:
                    total += f.seek(0, 2)
            except OSError as e:
                raise CorpusError(f"standard input: cannot read it ({e.strerror or e})") from None
        return total

    def pieces(self, group: int = 0) -> Iterator[Piece]:
        """The group's text in chunks, files joined by a newline where one lacks it at its end."""
        ends_newline = True
        for source in self.groups[group]:
            for piece in self._read(source, b"" if ends_newline else b"\n"):
                ends_newline = piece.raw.endswith(b"\n")
                yield piece

    @contextmanager
    def _open(self, source: str) -> Iterator[IO[bytes]]:
        if source != STDIN:
            with open(source, "rb") as f:
                yield f
            return
        if self._spool is None:
            self._spool = tempfile.SpooledTemporaryFile(SPOOL_MEMORY)  # noqa: SIM115 (closed by __exit__)
            try:
                shutil.copyfileobj(sys.stdin.buffer, self._spool, CHUNK_BYTES)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise
                self._spool.close()  # unnamed: closing it frees what was written
                self._spool = None
                raise CorpusError(
                    f"standard input: no room to keep a copy of it in {tempfile.gettempdir()} "
                    f"({e.strerror or e}; beyond {SPOOL_MEMORY >> 20} MB it is spooled there); "
                    "set TMPDIR to a folder with more room, or give the text as a file"
                ) from None
        self._spool.seek(0)
        yield self._spool

    def _read(self, source: str, lead: bytes) -> Iterator[Piece]:
        """One source in chunks; `lead` goes before its first character (the newline that joins it)."""
        name = source_name(source)
        decoder = codecs.getincrementaldecoder("utf-8")("replace" if self.replace_errors else "strict")
        done = 0
        try:
            with self._open(source) as f:
                while raw := f.read(CHUNK_BYTES):
                    if not done:
                        check_head(name, raw)
                    check_nul(name, raw, done)
                    head, lead = lead, b""
                    if raw.isascii() and not decoder.getstate()[0]:
                        piece = Piece(head + raw, None, len(raw))
                    else:
                        text = head.decode() + _decode(decoder, raw, name, done, f)
                        piece = Piece(text.encode("utf-8", "surrogatepass"), text, len(raw))
                    done += len(raw)
                    if piece.raw:
                        yield piece
                if tail := _decode(decoder, b"", name, done, f, final=True):
                    yield Piece(tail.encode("utf-8", "surrogatepass"), tail, 0)
        except PermissionError:
            raise CorpusError(f"{source}: permission denied (cannot read it)") from None
        except OSError as e:
            raise CorpusError(f"{source}: cannot read it ({e.strerror or e})") from None


def _decode(decoder: Any, raw: bytes, name: str, done: int, f: IO[bytes], final: bool = False) -> str:
    pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous chunk's end
    try:
        return decoder.decode(raw, final)
    except UnicodeDecodeError as e:
        at = done - pending + e.start
        f.seek(0)
        line = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(min(CHUNK_BYTES, at - f.tell())), b"")) + 1
        raise CorpusError(
            f"{name}: not valid UTF-8 at byte {at} (line {line}); "
            f"use {param('replace_bad_bytes')} to read it with U+FFFD in their place"
        ) from None


def read_corpus(sources: list[str], replace_errors: bool = False) -> str:
    """One or more sources as one string, joined as `Corpus` joins them (for text small enough to hold)."""
    with Corpus(sources, replace_errors=replace_errors) as corpus:
        return "".join(piece.string() for piece in corpus.pieces())


def read_text(source: str, replace_errors: bool = False) -> str:
    """One UTF-8 text file (or stdin for '-') as a string, with a one-line CorpusError for every way it can fail."""
    return read_corpus([source], replace_errors)


# ---------------------------------------------------------------- what can be trained on


def check_content(name: str, chars: int, distinct: Collection[str]) -> None:
    """Refuse text with nothing to learn in it, from its size and its distinct characters."""
    if chars == 0:
        raise CorpusError(f"{name}: is empty")
    if all(c.isspace() for c in distinct):
        raise CorpusError(f"{name}: holds only whitespace")
    if len(distinct) < 2:
        raise CorpusError(f"{name}: is one character repeated; there is nothing to learn")


def check_length(name: str, train_chars: int, seq_len: int, batch_size: int = 1, train_word: str = "") -> None:
    """Refuse training text too short for one `seq_len` window, or for `batch_size` streams of one window."""
    if train_chars < seq_len + 1:
        raise CorpusError(
            f"{name}: has {train_chars} characters{train_word}, fewer than one training window needs "
            f"({seq_len + 1}); add text or lower {param('seq_len')}"
        )
    if problem := streams_problem(train_chars, batch_size, seq_len):
        raise CorpusError(problem)


def check_trainable(text: str, name: str, seq_len: int) -> None:
    """Both checks on a text held in memory."""
    check_content(name, len(text), set(text))
    check_length(name, len(text), seq_len)


def streams_problem(n_chars: int, batch_size: int, seq_len: int) -> str | None:
    """Why `n_chars` of training text cannot fill `batch_size` streams of one `seq_len` window, if it cannot."""
    if seq_len >= 1 and batch_size >= 1 and (n_chars - 1) // batch_size < seq_len:
        return (
            f"the training text ({n_chars} characters) is too short for {batch_size} streams of "
            f"{seq_len} characters; lower {param('batch_size')} or {param('seq_len')}"
        )
    return None


def held_out(chars: int, val_fraction: float) -> int:
    """How many characters at the end are validation (nanoGPT's split, so figures compare)."""
    return int(chars * val_fraction)


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """A text in memory cut into (training, validation) by `held_out`."""
    n_val = held_out(len(text), val_fraction)
    return (text, "") if n_val == 0 else (text[:-n_val], text[-n_val:])
