"""The corpus as the user's data: a content check that notices a text changed in place, a full disk while
encoding or spooling standard input, a damaged id cache, and one rule for NUL bytes."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from charlm.data import corpus as corpus_mod
from charlm.data import encode
from charlm.errors import CharlmError, CorpusError


def _encode(sources, folder: Path, **kw):
    return encode.encode_corpus([str(s) for s in sources], folder, 0.1, progress=False, **kw)


def test_the_sampled_digest_sees_a_change_anywhere_in_a_large_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(encode, "SAMPLE_WHOLE", 1 << 10)  # sample, rather than hash whole, beyond 1 KB
    monkeypatch.setattr(encode, "SAMPLE_BLOCKS", 8)
    monkeypatch.setattr(encode, "SAMPLE_BLOCK", 64)
    f = tmp_path / "big.txt"
    data = bytearray(b"abcdefgh" * 4096)
    f.write_bytes(data)
    before = encode.sample_digest(f, len(data))
    for at in (0, len(data) - 1):  # the first and the last byte are always in a block
        changed = bytearray(data)
        changed[at] = ord("Z")
        f.write_bytes(changed)
        assert encode.sample_digest(f, len(data)) != before
    f.write_bytes(data)
    assert encode.sample_digest(f, len(data)) == before


def test_a_corpus_changed_in_place_with_size_and_time_kept_is_encoded_again(tmp_path: Path, tiny_text: str) -> None:
    f = tmp_path / "c.txt"
    f.write_text(tiny_text)
    first = _encode([f], tmp_path / "data")
    st = f.stat()
    f.write_text(tiny_text.replace("cat", "cow"))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(encode.CorpusChanged):
        _encode([f], tmp_path / "data", expect=first.fingerprint)
    second = _encode([f], tmp_path / "data")
    assert second.fingerprint != first.fingerprint


def test_a_full_disk_while_encoding_is_one_line_and_leaves_no_half_file(tmp_path: Path, tiny_corpus, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(encode, "_write_chunk", full)
    with pytest.raises(CharlmError) as e:
        _encode([tiny_corpus], tmp_path / "data")
    assert "\n" not in str(e.value) and "the disk is full" in str(e.value) and str(tmp_path / "data") in str(e.value)
    assert list((tmp_path / "data").iterdir()) == []


def test_a_full_disk_while_spooling_standard_input_says_where(tmp_path: Path, monkeypatch) -> None:
    def full(src, dst, length=0):
        dst.write(b"part of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(corpus_mod.shutil, "copyfileobj", full)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"text " * 100)))
    with pytest.raises(CorpusError) as e:
        _encode(["-"], tmp_path / "data")
    msg = str(e.value)
    assert "\n" not in msg and "standard input" in msg and "TMPDIR" in msg and "No space left" in msg


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / "ids.json").write_text("[]"),
        lambda d: (d / "ids.json").write_text('{"stamp": 1'),
        lambda d: (d / "ids.json").write_bytes(b"\xff\xfe"),
        lambda d: (d / "ids.npy").write_bytes(b"not numpy"),
        lambda d: (d / "ids.npy").unlink(),
    ],
)
def test_a_damaged_id_cache_is_said_and_rebuilt(tmp_path: Path, tiny_corpus: Path, damage) -> None:
    first = _encode([tiny_corpus], tmp_path / "data")
    expected = np.array(first.ids)
    damage(tmp_path / "data")
    said: list[str] = []
    again = _encode([tiny_corpus], tmp_path / "data", warn=said.append)
    assert np.array_equal(np.array(again.ids), expected) and again.fingerprint == first.fingerprint
    assert len(said) == 1 and "data/ids" in said[0] and "encoding the corpus again" in said[0]


def test_ids_outside_the_vocabulary_are_damage(tmp_path: Path, tiny_corpus: Path) -> None:
    first = _encode([tiny_corpus], tmp_path / "data")
    expected = np.array(first.ids)
    ids = np.load(tmp_path / "data" / "ids.npy", mmap_mode="r+")
    ids[3] = first.tokenizer.vocab_size
    ids.flush()
    del ids
    said: list[str] = []
    again = _encode([tiny_corpus], tmp_path / "data", warn=said.append)
    assert np.array_equal(np.array(again.ids), expected)
    assert "holds ids outside its vocabulary" in said[0]


def test_another_corpus_is_not_damage(tmp_path: Path, tiny_corpus: Path, tiny_text: str) -> None:
    _encode([tiny_corpus], tmp_path / "data")
    other = tmp_path / "other.txt"
    other.write_text(tiny_text[::-1])
    said: list[str] = []
    _encode([other], tmp_path / "data", warn=said.append)
    assert said == []
    assert json.loads((tmp_path / "data" / "ids.json").read_text())["stamp"]["files"][0]["path"] == str(other)


@pytest.mark.parametrize("at", [10, corpus_mod._BINARY_SNIFF + 5, corpus_mod.CHUNK_BYTES + 3])
def test_a_nul_byte_is_refused_wherever_it_is(tmp_path: Path, at: int, monkeypatch) -> None:
    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 1 << 14)
    f = tmp_path / "c.txt"
    data = bytearray(b"some text\n" * (at // 10 + 10))
    data[at] = 0
    f.write_bytes(bytes(data))
    for read in (lambda: corpus_mod.read_text(str(f)), lambda: _encode([f], tmp_path / "data")):
        with pytest.raises(CorpusError, match="looks like a binary file \\(it holds NUL bytes"):
            read()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
