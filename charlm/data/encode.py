"""Encoding a corpus once, streaming, into a memory-mapped id file kept in the run folder.

A corpus is read in chunks twice: a first pass counts its characters and finds its vocabulary, a second
writes the ids (uint8, uint16 or uint32, the smallest that holds the vocabulary) into `<run>/data/ids.npy`,
with a small JSON beside it. Training then reads windows of that file through a memory map, so memory use
does not grow with the corpus. A later run (or a resume) on unchanged files reuses the id file.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from charlm.data.corpus import bad_utf8, check_figures, check_head, check_source, streams_problem
from charlm.errors import CorpusError
from charlm.tokenizer import CharTokenizer

CHUNK_BYTES = 8 << 20
FORMAT = 1
_MAX_CP = 0x10FFFF


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id."""
    for dt in (np.uint8, np.uint16):
        if vocab_size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    return np.dtype(np.uint32)


@dataclass
class EncodedCorpus:
    ids: np.ndarray  # all characters' ids, memory-mapped; the last `val_chars` are validation
    tokenizer: CharTokenizer
    chars: int
    val_chars: int
    fingerprint: str  # sha256 of train text + NUL + validation text, as run.fingerprint computes it

    @property
    def train_ids(self) -> np.ndarray:
        return self.ids[: self.chars - self.val_chars]

    @property
    def val_ids(self) -> np.ndarray:
        return self.ids[self.chars - self.val_chars :]


@dataclass
class _Piece:
    """A chunk of the corpus: its UTF-8 bytes, and its text unless it is ASCII (then the bytes are the text)."""

    raw: bytes
    text: str | None
    nbytes: int  # file bytes it consumed, for the progress bar

    def cps(self) -> np.ndarray:
        if self.text is None:  # ASCII: one byte per character, no decoding needed
            return np.frombuffer(self.raw, dtype=np.uint8)
        return np.frombuffer(self.text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)

    def utf8_prefix(self, chars: int) -> bytes:
        return self.raw[:chars] if self.text is None else self.text[:chars].encode("utf-8", "surrogatepass")


def _pieces(sources: list[str], replace_errors: bool) -> Iterator[_Piece]:
    """The corpus in chunks; a newline is put between files that lack one at the end (as data.read_corpus
    does). Errors are data.read_text's one-line CorpusErrors."""
    ends_newline = True
    for n, source in enumerate(sources):
        path = check_source(source)
        decoder = codecs.getincrementaldecoder("utf-8")("replace" if replace_errors else "strict")
        done = 0
        try:
            with open(path, "rb") as f:
                while raw := f.read(CHUNK_BYTES):
                    if not done:
                        check_head(source, raw)
                    lead = b"\n" if not done and n and not ends_newline else b""
                    if raw.isascii() and not decoder.getstate()[0]:
                        piece = _Piece(lead + raw, None, len(raw))
                    else:
                        text = lead.decode() + _decode(decoder, raw, source, done, f)
                        piece = _Piece(text.encode("utf-8", "surrogatepass"), text, len(raw))
                    done += len(raw)
                    if piece.raw:
                        ends_newline = piece.raw.endswith(b"\n")
                        yield piece
                tail = _decode(decoder, b"", source, done, f, final=True)
                if tail:
                    ends_newline = tail.endswith("\n")
                    yield _Piece(tail.encode("utf-8", "surrogatepass"), tail, 0)
        except PermissionError:
            raise CorpusError(f"{source}: permission denied (cannot read it)") from None


def _decode(decoder: Any, raw: bytes, source: str, done: int, f: Any, final: bool = False) -> str:
    try:
        return decoder.decode(raw, final)
    except UnicodeDecodeError as e:
        at = done + e.start
        f.seek(0)
        line = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(min(CHUNK_BYTES, at - f.tell())), b"")) + 1
        raise bad_utf8(source, at, line) from None


def _bar(total: int, what: str, show: bool) -> tqdm:
    # disable=None: tqdm shows the bar only when stderr is a terminal
    return tqdm(
        total=total, desc=what, unit="B", unit_scale=True, file=sys.stderr, disable=None if show else True, leave=False
    )


def scan(sources: list[str], replace_errors: bool = False, progress: bool = True) -> tuple[int, CharTokenizer | None]:
    """First pass: the number of characters and the vocabulary (None for an empty corpus)."""
    seen = np.zeros(_MAX_CP + 1, dtype=bool)
    chars = 0
    with _bar(sum(Path(s).stat().st_size for s in sources if Path(s).is_file()), "reading", progress) as bar:
        for piece in _pieces(sources, replace_errors):
            if piece.text is None:  # ASCII: bytes.translate drops the known characters at memory speed
                known = np.flatnonzero(seen[:128]).astype(np.uint8).tobytes()
                seen[np.frombuffer(piece.raw.translate(None, known), dtype=np.uint8)] = True
                chars += len(piece.raw)
            else:
                cps = piece.cps()
                seen[cps] = True  # a scatter: linear in the chunk, unlike np.unique's sort
                chars += len(cps)
            bar.update(piece.nbytes)
    found = np.flatnonzero(seen)
    return chars, (CharTokenizer(chr(int(c)) for c in found) if len(found) else None)


def _write_ids(
    sources: list[str], tok: CharTokenizer, path: Path, chars: int, n_train: int, replace_errors: bool, progress: bool
) -> str:
    """Second pass: ids into a .npy file at `path`; returns the fingerprint of train + NUL + validation.

    Written with plain writes, not through a memory map: pages written through a map count in the process's
    resident memory until the kernel writes them back, which would make memory grow with the corpus."""
    lut = np.zeros(_MAX_CP + 1, dtype=id_dtype(tok.vocab_size))
    lut[[ord(c) for c in tok.chars]] = np.arange(tok.vocab_size)
    table = lut[:256].tobytes() if lut.dtype == np.uint8 else b""
    digest, pos = hashlib.sha256(), 0
    with _bar(sum(Path(s).stat().st_size for s in sources), "encoding", progress) as bar, open(path, "wb") as out:
        header = {"descr": np.lib.format.dtype_to_descr(lut.dtype), "fortran_order": False, "shape": (chars,)}
        np.lib.format.write_array_header_1_0(out, header)
        for piece in _pieces(sources, replace_errors):
            cps = piece.cps()
            if pos < n_train <= pos + len(cps):  # the split falls in this chunk: NUL between the two parts
                head = piece.utf8_prefix(n_train - pos)
                digest.update(head + b"\x00")
                digest.update(piece.raw[len(head) :])
            else:
                digest.update(piece.raw)
            if piece.text is None and lut.dtype == np.uint8:  # ASCII to uint8 ids: a byte translation table
                out.write(piece.raw.translate(table))
            else:
                out.write(lut[cps].tobytes())
            pos += len(cps)
            bar.update(piece.nbytes)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()[:16]


def _stamp(sources: list[str], replace_errors: bool, val_fraction: float) -> dict[str, Any]:
    """What the cached ids depend on: each file's path, size and modification time, and the options."""
    files = []
    for s in sources:
        st = os.stat(s)
        files.append({"path": str(Path(s).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return {"format": FORMAT, "files": files, "replace_errors": replace_errors, "val_fraction": val_fraction}


def check_trainable(
    chars: int, val_chars: int, tok: CharTokenizer | None, name: str, seq_len: int, batch_size: int = 1
) -> None:
    """data.check_trainable from a scan's figures: refuse text no model can learn from."""
    check_figures(name, chars, tok.chars if tok is not None else [], chars - val_chars, seq_len, " for training")
    if problem := streams_problem(chars - val_chars, batch_size, seq_len):
        raise CorpusError(problem)


def check_corpus(
    sources: list[str], val_fraction: float, replace_errors: bool, seq_len: int, batch_size: int = 1
) -> None:
    """Every check encode_corpus makes, writing nothing (to report a corpus's problems beside others)."""
    chars, tok = scan(sources, replace_errors, progress=False)
    name = sources[0] if len(sources) == 1 else f"{len(sources)} files"
    check_trainable(chars, int(chars * val_fraction), tok, name, seq_len, batch_size)


def encode_corpus(
    sources: list[str],
    folder: Path,
    val_fraction: float,
    replace_errors: bool = False,
    progress: bool = True,
    seq_len: int = 1,
    batch_size: int = 1,
) -> EncodedCorpus:
    """The corpus's ids as a memory map in `folder`, encoding the files only when the cache does not match.
    A corpus no model can learn from (or too short for `seq_len`) raises CorpusError before anything is written.
    """
    for source in sources:
        check_source(source)
    name = sources[0] if len(sources) == 1 else f"{len(sources)} files"
    meta_path, ids_path = folder / "ids.json", folder / "ids.npy"
    stamp = _stamp(sources, replace_errors, val_fraction)
    if meta_path.is_file() and ids_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta["stamp"] == stamp:
                ids = np.load(ids_path, mmap_mode="r")
                if len(ids) == meta["chars"]:
                    tok = CharTokenizer.from_dict(meta["vocab"])
                    check_trainable(meta["chars"], meta["val_chars"], tok, name, seq_len, batch_size)
                    return EncodedCorpus(ids, tok, meta["chars"], meta["val_chars"], meta["fingerprint"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    chars, tok = scan(sources, replace_errors, progress)
    val_chars = int(chars * val_fraction)
    check_trainable(chars, val_chars, tok, name, seq_len, batch_size)
    assert tok is not None
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".ids-{os.getpid()}.npy"
    try:
        fp = _write_ids(sources, tok, tmp, chars, chars - val_chars, replace_errors, progress)
        os.replace(tmp, ids_path)  # whole or absent: a killed encode never leaves a short id file
    finally:
        tmp.unlink(missing_ok=True)
    meta = {"stamp": stamp, "chars": chars, "val_chars": val_chars, "fingerprint": fp, "vocab": tok.to_dict()}
    meta_path.write_text(json.dumps(meta))
    return EncodedCorpus(np.load(ids_path, mmap_mode="r"), tok, chars, val_chars, fp)
