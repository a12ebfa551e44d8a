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

The cache's stamp holds, for each file, its path, size, modification and change times, inode and a digest of
its content: the whole file up to 16 MB, beyond that 256 blocks of 64 KB spread over it. The change time moves
with every write, even one that puts the size and the modification time back, and the digest catches a
changed text at the same inode and times (a copy restored from elsewhere).

The fingerprint is the SHA-256 of training text + NUL + validation text (first 16 hex digits), hashed as the
ids are written; a resumed run refuses text whose fingerprint differs, before its id file is replaced.
"""

from __future__ import annotations

import errno
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
from charlm.errors import CharlmError, CorpusError
from charlm.tokenizer import CharTokenizer

FORMAT = 2  # 2: the stamp holds each file's inode, change time and sampled digest
IDS, META = "ids.npy", "ids.json"
SAMPLE_WHOLE = 16 << 20  # files up to this size are hashed whole for the stamp
SAMPLE_BLOCKS, SAMPLE_BLOCK = 256, 64 << 10
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


class EncodeError(CharlmError):
    """The id file could not be written (a full disk, a folder that is not writable)."""


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
        out = []
        for s in sources:
            st = os.stat(s)
            out.append({"path": str(Path(s).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                        "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "sample": sample_digest(s, st.st_size)})
        return out

    stamp = {"format": FORMAT, "files": files(corpus.groups[0]), "replace_errors": corpus.replace_errors}
    stamp["val_fraction"] = val_fraction
    if corpus.groups[1]:
        stamp["val_files"] = files(corpus.groups[1])
    return stamp


def sample_digest(path: str | Path, size: int) -> str:
    """A cheap digest of a file's content: all of it up to SAMPLE_WHOLE bytes, else SAMPLE_BLOCKS blocks of
    SAMPLE_BLOCK bytes spread evenly from its first byte to its last (16 MB of a 1 GB file), and its size."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= SAMPLE_WHOLE:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        else:
            step = (size - SAMPLE_BLOCK) / (SAMPLE_BLOCKS - 1)
            for i in range(SAMPLE_BLOCKS):
                f.seek(int(i * step))
                digest.update(f.read(SAMPLE_BLOCK))
    return _hex(digest)


def _valid_cache(meta: Any, stamp: dict[str, Any]) -> bool:
    """Whether ids.json is a table of the figures this module writes, for these very files."""
    if not isinstance(meta, dict) or meta.get("stamp") != stamp:
        return False
    chars, val_chars = meta.get("chars"), meta.get("val_chars")
    if not (type(chars) is int and type(val_chars) is int and 0 <= val_chars <= chars):
        return False
    try:
        CharTokenizer.from_dict(meta["vocab"])
        CharTokenizer.from_dict(meta.get("text_vocab") or meta["vocab"])
    except (KeyError, TypeError, ValueError, OverflowError):
        return False
    return isinstance(meta.get("fingerprint"), str)


def _cached(folder: Path, stamp: dict[str, Any] | None, warn: Any = None) -> dict[str, Any] | None:
    """ids.json of an id file encoded from the same files with the same options, if there is one. It is only
    a cache: a damaged one (ids.json unreadable or not what this module writes, ids.npy unreadable, of the
    wrong length, or holding an id outside the vocabulary) is said to be damaged and rebuilt."""
    if stamp is None or not (folder / META).exists():
        return None
    problem = None
    try:
        meta = json.loads((folder / META).read_bytes())
        if not _valid_cache(meta, stamp):
            if isinstance(meta, dict) and isinstance(meta.get("stamp"), dict) and meta["stamp"] != stamp:
                return None  # another text or other options: not damage, just not this corpus's ids
            problem = f"{folder / META} is damaged"
        else:
            ids = np.load(folder / IDS, mmap_mode="r")
            vocab = len(meta["vocab"]["code_points"])
            if ids.ndim != 1 or len(ids) != meta["chars"] or ids.dtype.kind != "u":
                problem = f"{folder / IDS} does not match {META}"
            elif len(ids) and int(ids.max()) >= vocab:
                problem = f"{folder / IDS} holds ids outside its vocabulary"
            else:
                return meta
    except (OSError, ValueError, EOFError):
        problem = f"{folder / META} or {folder / IDS} is damaged"
    if warn is not None and problem:
        warn(f"{problem}; encoding the corpus again (it is only a cache)")
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
    tmp = folder / f".ids-{os.getpid()}.npy"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fp = _write_ids(corpus, enc.tokenizer, tmp, enc.chars, enc.chars - enc.val_chars, progress)
        _expect(fp, expect)  # refused before the run's own id file is replaced
        (folder / META).unlink(missing_ok=True)  # no stale description of a replaced id file, even for a moment
        os.replace(tmp, enc.path)  # whole or absent: a killed encode never leaves a short id file
        _write_small(folder / META, json.dumps({**meta, "fingerprint": fp}))
    except OSError as e:
        raise EncodeError(
            f"could not write the corpus's ids into {folder}: {e.strerror or e}"
            + ("; the disk is full (the half-written file was removed)" if e.errno == errno.ENOSPC else "")
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return replace(enc, fingerprint=fp)


def _write_small(path: Path, text: str) -> None:
    """A small file written whole or not at all."""
    tmp = path.with_name(f".{path.name}-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    warn: Any = None,
) -> EncodedCorpus | None:
    """The corpus's ids as a memory-mapped file in `folder`, encoding the sources only when no cache matches.

    `val`: a validation file (else the last `val_fraction` is held out); `vocab`: characters the ids must hold
    besides the text's; `expect`: the fingerprint a resumed run needs (CorpusChanged if it differs). A corpus
    no model can learn from raises CorpusError before anything is written. With `write=False` only the checks
    run, and None is returned unless a matching id file is already there.
    """
    with Corpus(sources, val, replace_errors) as corpus:
        stamp = _stamp(corpus, val_fraction)
        cached = _cached(folder, stamp, warn if write else None)
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
