"""The one pipeline from a corpus to training data: its ids, encoded once into `<run>/data/ids.npy`.

Every corpus takes it, whatever its size or source: one file or many, standard input, a --val FILE, the
text of a fine-tuning run. A first pass counts the characters and finds the vocabulary, and the checks of
charlm.data.corpus run on those figures before anything is written. A second pass writes the ids (uint8,
uint16 or uint32, the smallest that holds the vocabulary) with plain writes into a temporary file, renamed
into place once whole, with `ids.json` beside it. Training reads windows of the file through a memory map, so
memory use does not grow with the corpus; under torchrun rank 0 encodes and the other ranks map its file.

The ids are the training text followed by the validation text: its held-out tail (--val-fraction), or a
--val FILE read as a group of its own (not joined by a newline). The vocabulary is every character of both,
plus the characters of `vocab` when given: a fine-tuned model keeps its checkpoint's vocabulary and gains
the new characters, and a resumed run keeps its own.

Standard input is spooled as it is first read (see charlm.data.corpus.Corpus) and read again from the spool
for the second pass: encoding it as it streams would need its vocabulary before its end. Its ids are never
reused; a later run (or a resume) on unchanged files reuses the id file instead of encoding them again.

The fingerprint is the SHA-256 of training text + NUL + validation text (first 16 hex digits), hashed as the
ids are written; a resumed run refuses text whose fingerprint differs, before its id file is replaced.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from charlm.data.corpus import STDIN, Corpus, Piece, check_content, check_length, held_out
from charlm.errors import CorpusError
from charlm.tokenizer import CharTokenizer

FORMAT = 1
IDS, META = "ids.npy", "ids.json"
_MAX_CP = 0x10FFFF


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id."""
    for dt in (np.uint8, np.uint16):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    return np.dtype(np.uint32)


def fingerprint(text: str) -> str:
    """The fingerprint of text held in memory, "training + NUL + validation", as the encoder hashes it."""
    return _hex(hashlib.sha256(text.encode("utf-8", "surrogatepass")))


def _hex(digest: Any) -> str:
    return digest.hexdigest()[:16]


class CorpusChanged(CorpusError):
    """The text is not the one a resumed run was trained on."""


@dataclass(frozen=True)
class EncodedCorpus:
    """An id file and what it holds; small, so rank 0 can send it to the other ranks, which map the file."""

    path: Path
    tokenizer: CharTokenizer
    chars: int
    val_chars: int  # the last this many ids are validation
    fingerprint: str

    @property
    def ids(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")

    @property
    def train_ids(self) -> np.ndarray:
        return self.ids[: self.chars - self.val_chars]

    @property
    def val_ids(self) -> np.ndarray:
        return self.ids[self.chars - self.val_chars :]


@dataclass(frozen=True)
class Counts:
    """What the first pass finds in each group of sources (training, then validation)."""

    chars: tuple[int, int]
    distinct: tuple[str, str]  # the group's characters, in code-point order


def _bar(total: int, what: str, show: bool) -> tqdm:
    # disable=None: tqdm shows the bar only when stderr is a terminal
    return tqdm(
        total=total, desc=what, unit="B", unit_scale=True, file=sys.stderr, disable=None if show else True, leave=False
    )


def scan(corpus: Corpus, progress: bool = True) -> Counts:
    """First pass: each group's characters and distinct characters."""
    chars, distinct = [], []
    with _bar(corpus.size(), "reading", progress) as bar:
        for group in (0, 1):
            seen, n = np.zeros(_MAX_CP + 1, dtype=bool), 0
            for piece in corpus.pieces(group):
                if piece.text is None:  # ASCII: bytes.translate drops the known characters at memory speed
                    known = np.flatnonzero(seen[:128]).astype(np.uint8).tobytes()
                    seen[np.frombuffer(piece.raw.translate(None, known), dtype=np.uint8)] = True
                    n += len(piece.raw)
                else:
                    cps = piece.code_points()
                    seen[cps] = True  # a scatter: linear in the chunk, unlike np.unique's sort
                    n += len(cps)
                bar.update(piece.nbytes)
            chars.append(n)
            distinct.append("".join(chr(int(c)) for c in np.flatnonzero(seen)))
    return Counts((chars[0], chars[1]), (distinct[0], distinct[1]))


def _check_content(corpus: Corpus, counts: Counts) -> None:
    """Every group with nothing to learn in it, in one CorpusError."""
    problems = []
    for group in (0, 1) if corpus.groups[1] else (0,):
        try:
            check_content(corpus.name(group), counts.chars[group], counts.distinct[group])
        except CorpusError as e:
            problems += e.problems
    if problems:
        raise CorpusError(problems)


def _write_ids(corpus: Corpus, tok: CharTokenizer, path: Path, chars: int, n_train: int, progress: bool) -> str:
    """Second pass: ids into a .npy file at `path`; returns the fingerprint of train + NUL + validation.

    Written with plain writes, not through a memory map: pages written through a map count in the process's
    resident memory until the kernel writes them back, which would make memory grow with the corpus."""
    lut = np.zeros(_MAX_CP + 1, dtype=id_dtype(tok.vocab_size))
    lut[[ord(c) for c in tok.chars]] = np.arange(tok.vocab_size)
    table = lut[:256].tobytes() if lut.dtype == np.uint8 else b""
    digest, pos = hashlib.sha256(), 0
    with _bar(corpus.size(), "encoding", progress) as bar, open(path, "wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(lut.dtype), "fortran_order": False, "shape": (chars,)}
        np.lib.format.write_array_header_1_0(out, header)
        for piece in itertools.chain(corpus.pieces(0), corpus.pieces(1)):
            cps = piece.code_points()
            if pos < n_train <= pos + len(cps):  # the split falls in this chunk: NUL between the two parts
                head = piece.utf8_prefix(n_train - pos)
                digest.update(head + b"\x00")
                digest.update(piece.raw[len(head) :])
            else:
                digest.update(piece.raw)
            _write_chunk(out, piece, cps, lut, table)
            pos += len(cps)
            bar.update(piece.nbytes)
        out.flush()
        os.fsync(out.fileno())
    return _hex(digest)


def _write_chunk(out: Any, piece: Piece, cps: np.ndarray, lut: np.ndarray, table: bytes) -> None:
    if piece.text is None and table:  # ASCII to uint8 ids: a byte translation table
        out.write(piece.raw.translate(table))
    else:
        out.write(lut[cps].tobytes())


def _stamp(corpus: Corpus, val_fraction: float) -> dict[str, Any] | None:
    """What the cached ids depend on: each file's path, size and modification time, and the options.
    None for standard input, whose ids are never reused."""
    if STDIN in corpus.groups[0] + corpus.groups[1]:
        return None

    def files(sources: list[str]) -> list[dict[str, Any]]:
        stats = [(str(Path(s).resolve()), os.stat(s)) for s in sources]
        return [{"path": p, "size": st.st_size, "mtime_ns": st.st_mtime_ns} for p, st in stats]

    stamp = {"format": FORMAT, "files": files(corpus.groups[0]), "replace_errors": corpus.replace_errors}
    stamp["val_fraction"] = val_fraction
    if corpus.groups[1]:
        stamp["val_files"] = files(corpus.groups[1])
    return stamp


def _cached(folder: Path, stamp: dict[str, Any] | None) -> dict[str, Any] | None:
    """ids.json of an id file encoded from the same files with the same options, if there is one."""
    if stamp is None:
        return None
    try:
        meta = json.loads((folder / META).read_text())
        if meta["stamp"] == stamp and len(np.load(folder / IDS, mmap_mode="r")) == meta["chars"]:
            return meta
    except (OSError, ValueError, KeyError):
        pass  # a missing or damaged cache is rebuilt
    return None


def _expect(found: str, expect: str | None) -> None:
    if expect is not None and found != expect:
        raise CorpusChanged("the corpus differs from the one the run was trained on")


def _figures(
    corpus: Corpus, cached: dict[str, Any] | None, val_fraction: float, progress: bool
) -> tuple[int, int, list[str]]:
    """(characters, validation characters, distinct characters): from the cache, or counted and checked."""
    if cached is not None:  # its text passed the checks when it was encoded
        text_vocab = CharTokenizer.from_dict(cached.get("text_vocab", cached["vocab"]))
        return cached["chars"], cached["val_chars"], text_vocab.chars
    counts = scan(corpus, progress)
    _check_content(corpus, counts)
    chars = sum(counts.chars)
    val_chars = counts.chars[1] if corpus.groups[1] else held_out(chars, val_fraction)
    return chars, val_chars, list(counts.distinct[0] + counts.distinct[1])


def _encode(
    corpus: Corpus, folder: Path, enc: EncodedCorpus, meta: dict[str, Any], expect: str | None, progress: bool
) -> EncodedCorpus:
    """The second pass into a temporary file, renamed into place only if its fingerprint is the one expected."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".ids-{os.getpid()}.npy"
    try:
        fp = _write_ids(corpus, enc.tokenizer, tmp, enc.chars, enc.chars - enc.val_chars, progress)
        _expect(fp, expect)  # refused before the run's own id file is replaced
        os.replace(tmp, enc.path)  # whole or absent: a killed encode never leaves a short id file
    finally:
        tmp.unlink(missing_ok=True)
    (folder / META).write_text(json.dumps({**meta, "fingerprint": fp}))
    return replace(enc, fingerprint=fp)


def encode_corpus(
    sources: Sequence[str],
    folder: Path,
    val_fraction: float,
    replace_errors: bool = False,
    progress: bool = True,
    seq_len: int = 1,
    batch_size: int = 1,
    *,
    val: Sequence[str] = (),
    vocab: CharTokenizer | None = None,
    expect: str | None = None,
    write: bool = True,
) -> EncodedCorpus | None:
    """The corpus's ids as a memory-mapped file in `folder`, encoding the sources only when no cache matches.

    `val`: a validation file (else the last `val_fraction` is held out); `vocab`: characters the ids must hold
    besides the text's; `expect`: the fingerprint a resumed run needs (CorpusChanged if it differs). A corpus
    no model can learn from raises CorpusError before anything is written. With `write=False` only the checks
    run, and None is returned unless a matching id file is already there.
    """
    with Corpus(sources, val, replace_errors) as corpus:
        stamp = _stamp(corpus, val_fraction)
        cached = _cached(folder, stamp)
        chars, val_chars, text_chars = _figures(corpus, cached, val_fraction, progress)
        check_length(corpus.name(), chars - val_chars, seq_len, batch_size, " for training")
        tok = CharTokenizer([*text_chars, *(vocab.chars if vocab else [])])
        if cached is not None and cached["vocab"] == tok.to_dict():
            _expect(cached["fingerprint"], expect)
            return EncodedCorpus(folder / IDS, tok, chars, val_chars, cached["fingerprint"])
        if not write:
            return None
        enc = EncodedCorpus(folder / IDS, tok, chars, val_chars, "")
        meta = {"stamp": stamp, "chars": chars, "val_chars": val_chars, "vocab": tok.to_dict()}
        meta["text_vocab"] = CharTokenizer(text_chars).to_dict()  # what a later run with another `vocab` needs
        return _encode(corpus, folder, enc, meta, expect, progress)
