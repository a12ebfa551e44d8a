"""The streaming encoder: the same ids, vocabulary and fingerprint as encoding the whole text in memory."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from charlm.data import corpus, encode
from charlm.data.corpus import read_corpus, split_text
from charlm.data.encode import fingerprint
from charlm.errors import CorpusError, UsageError
from charlm.tokenizer import CharTokenizer
from charlm.training import TrainRequest, prepare, train


@pytest.fixture
def files(tmp_path: Path) -> list[str]:
    (tmp_path / "a.txt").write_text("plain ascii first\nthen ü and 😀 " * 30 + "no newline at the end")
    (tmp_path / "b.txt").write_text("ascii only. " * 50)
    return [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]


@pytest.mark.parametrize("chunk", [5, 64, 1 << 20])
@pytest.mark.parametrize("val_fraction", [0.0, 0.1, 0.9])
def test_matches_in_memory_encoding(
    files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, val_fraction: float
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk)  # chunk edges fall inside multi-byte characters
    enc = encode.encode_corpus(files, tmp_path / "data", val_fraction, progress=False)
    text = read_corpus(files)
    train, val = split_text(text, val_fraction)
    tok = CharTokenizer.from_text(train, val)
    assert enc.tokenizer.chars == tok.chars
    assert np.array_equal(enc.ids, tok.encode(text)) and enc.ids.dtype == np.uint8
    assert len(enc.val_ids) == len(val) and enc.fingerprint == fingerprint(train + "\x00" + val)


def test_id_type_is_the_smallest_that_fits() -> None:
    assert [encode.id_dtype(n) for n in (2, 256, 257, 65536, 65537)] == [
        np.uint8,
        np.uint8,
        np.uint16,
        np.uint16,
        np.uint32,
    ]


def test_cache_is_reused_until_the_file_changes(
    files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = encode.encode_corpus(files, tmp_path / "data", 0.1, progress=False)
    calls = []
    real_scan = encode.scan
    monkeypatch.setattr(encode, "scan", lambda *a, **k: calls.append(1) or real_scan(*a, **k))
    again = encode.encode_corpus(files, tmp_path / "data", 0.1, progress=False)
    assert calls == [] and isinstance(again.ids, np.memmap) and np.array_equal(again.ids, first.ids)
    Path(files[1]).write_text("something else entirely, longer than before\n")
    changed = encode.encode_corpus(files, tmp_path / "data", 0.1, progress=False)
    assert calls == [1] and changed.fingerprint != first.fingerprint


def test_bad_bytes_are_one_line_errors_or_replaced(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\nfine\n\xff here")
    with pytest.raises(CorpusError, match=r"not valid UTF-8 at byte 8 \(line 3\)"):
        encode.encode_corpus([str(bad)], tmp_path / "d1", 0.1, progress=False)
    enc = encode.encode_corpus([str(bad)], tmp_path / "d2", 0.1, replace_errors=True, progress=False)
    assert enc.tokenizer.decode(enc.ids.tolist()) == "ok\nfine\n\ufffd here"
    binary = tmp_path / "bin.dat"
    binary.write_bytes(b"ab\x00cd")
    with pytest.raises(CorpusError, match="binary"):
        encode.encode_corpus([str(binary)], tmp_path / "d3", 0.1, progress=False)


def test_training_reads_the_memory_mapped_ids(files: list[str], tmp_path: Path) -> None:
    over = {"hidden": 8, "embed": 4, "batch_size": 2, "seq_len": 8, "max_steps": 1}
    trainer = prepare(TrainRequest(files, out=tmp_path / "run", overrides=over))
    assert (tmp_path / "run" / "data" / "ids.npy").is_file()
    assert isinstance(trainer.data.train_ids, np.memmap)
    text = read_corpus(files)
    train, val = split_text(text, 0.1)
    assert trainer.data.info["fingerprint"] == fingerprint(train + "\x00" + val)
    assert trainer.data.info["train_chars"] == len(train) and trainer.data.info["val_chars"] == len(val)


def test_untrainable_corpus_is_refused_before_training(tmp_path: Path) -> None:
    spaces = tmp_path / "spaces.txt"
    spaces.write_text("  \n  \n" * 100)
    with pytest.raises(UsageError, match="only whitespace"):
        prepare(TrainRequest([str(spaces)], out=tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing written for a corpus that is refused


def test_a_validation_file_follows_the_training_text_in_one_vocabulary(files: list[str], tmp_path: Path) -> None:
    val = tmp_path / "val.txt"
    val.write_text("Ω new characters ✓ for validation\n")
    enc = encode.encode_corpus(files, tmp_path / "data", 0.1, progress=False, val=[str(val)])
    train, held = read_corpus(files), val.read_text()
    tok = CharTokenizer.from_text(train, held)
    assert enc.tokenizer.chars == tok.chars and enc.val_chars == len(held)
    assert np.array_equal(enc.ids, tok.encode(train + held))  # no newline joins the two parts
    assert enc.fingerprint == fingerprint(train + "\x00" + held)


@pytest.mark.parametrize("spool_memory", [16, 64 << 20])  # rolled over to a temporary file, or kept in memory
def test_standard_input_is_spooled_and_encoded_like_a_file(
    files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spool_memory: int
) -> None:
    text = read_corpus(files[:1])
    monkeypatch.setattr(corpus, "SPOOL_MEMORY", spool_memory)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    enc = encode.encode_corpus(["-"], tmp_path / "data", 0.1, progress=False)
    from_file = encode.encode_corpus(files[:1], tmp_path / "other", 0.1, progress=False)
    assert np.array_equal(enc.ids, from_file.ids) and enc.fingerprint == from_file.fingerprint
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ids.json", "ids.npy"]


def test_a_fine_tuned_run_resumes_in_its_own_vocabulary(tmp_path: Path) -> None:
    """A fine-tuned model's vocabulary holds characters its new text may lack; a resume keeps every id."""
    over = {"hidden": 8, "embed": 4, "batch_size": 2, "seq_len": 8, "max_steps": 1, "eval_every": 100}
    (tmp_path / "old.txt").write_text("A\nBC abc\n" * 40)  # "\n", "A", "B" sort before every new character
    (tmp_path / "new.txt").write_text("fine tuning text without a line break " * 20)
    train(TrainRequest([str(tmp_path / "old.txt")], out=tmp_path / "old", overrides=over))
    train(TrainRequest([str(tmp_path / "new.txt")], out=tmp_path / "ft", init_from=tmp_path / "old", overrides=over))
    resumed = prepare(TrainRequest([], out=tmp_path / "ft", resume=True, overrides={"max_steps": 2}))
    text = (tmp_path / "new.txt").read_text()
    assert "\n" in resumed.data.tokenizer.chars
    assert resumed.data.tokenizer.decode(resumed.data.train_ids[:50].tolist()) == text[:50]
