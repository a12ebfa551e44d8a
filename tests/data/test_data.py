"""Reading corpora (one clear error for each way a file can be unusable), the split, and the TBPTT streams."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest

from charlm.data.corpus import check_trainable, read_corpus, read_text, split_text
from charlm.data.streams import TokenStreams
from charlm.errors import CorpusError


def _error(source: str, **kw: object) -> str:
    with pytest.raises(CorpusError) as e:
        read_text(source, **kw)
    assert e.value.exit_code == 2  # a corpus the user gave is a usage error
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- read_text


def test_reads_utf8(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("héllo 漢字 😀\n", encoding="utf-8")
    assert read_text(str(tmp_path / "ok.txt")) == "héllo 漢字 😀\n"


def test_missing_file() -> None:
    assert _error("nope/missing.txt") == "nope/missing.txt: no such file"


def test_directory(tmp_path: Path) -> None:
    assert _error(str(tmp_path)) == f"{tmp_path}: is a directory, not a text file"


def test_binary_file(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"PK\x03\x04\x00\x00binary")
    assert "blob.bin: looks like a binary file (it holds NUL bytes)" in _error(str(tmp_path / "blob.bin"))


def test_invalid_utf8_names_byte_and_line(tmp_path: Path) -> None:
    raw = "first line\nsecond ü\n".encode() + b"third \xff bad\n"
    (tmp_path / "latin.txt").write_bytes(raw)
    msg = _error(str(tmp_path / "latin.txt"))
    bad = raw.index(b"\xff")
    assert f"not valid UTF-8 at byte {bad} (line 3)" in msg
    assert "replace_bad_bytes" in msg


def test_replace_bad_bytes(tmp_path: Path) -> None:
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9 ok\n")
    assert read_text(str(tmp_path / "latin.txt"), replace_errors=True) == "caf\ufffd ok\n"


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("from a pipe ✓\n".encode())))
    assert read_text("-") == "from a pipe ✓\n"


def test_stdin_errors_say_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xc3(")))
    assert _error("-").startswith("standard input: not valid UTF-8 at byte 0 (line 1)")


def test_read_corpus_joins_files_on_a_line_break(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("no newline at the end")
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "c.txt").write_text("third")
    files = [str(tmp_path / n) for n in ("a.txt", "b.txt", "c.txt")]
    assert read_corpus(files) == "no newline at the end\nsecond\nthird"


def test_read_corpus_takes_stdin_once() -> None:
    with pytest.raises(CorpusError, match="only once"):
        read_corpus(["-", "-"])


def test_every_unusable_source_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as e:
        read_corpus(["gone.txt", str(tmp_path), "-", "-"])
    assert e.value.problems == [
        "standard input ('-') can be given only once",
        "gone.txt: no such file",
        f"{tmp_path}: is a directory, not a text file",
    ]


# ---------------------------------------------------------------- what can be trained on


def test_empty_file_reads_but_cannot_be_trained_on(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    text = read_text(str(tmp_path / "empty.txt"))
    assert text == ""
    with pytest.raises(CorpusError, match=r"^empty\.txt: is empty$"):
        check_trainable(text, "empty.txt", seq_len=8)


def test_whitespace_only(tmp_path: Path) -> None:
    (tmp_path / "blank.txt").write_text(" \n\t\n   \n")
    with pytest.raises(CorpusError, match="holds only whitespace"):
        check_trainable(read_text(str(tmp_path / "blank.txt")), "blank.txt", seq_len=2)


def test_one_repeated_character() -> None:
    with pytest.raises(CorpusError, match="one character repeated"):
        check_trainable("a" * 1000, "aaa.txt", seq_len=8)


def test_too_short_for_one_window() -> None:
    with pytest.raises(CorpusError, match=r"has 10 characters, fewer than one training window needs \(129\)"):
        check_trainable("abcdefghij", "short.txt", seq_len=128)
    check_trainable("abcdefghij", "short.txt", seq_len=9)  # 10 characters: exactly one window of 9 plus a target


# ---------------------------------------------------------------- split


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_split_holds_out_the_end(fraction: float) -> None:
    text = "".join(chr(65 + i % 26) for i in range(1003))
    train, val = split_text(text, fraction)
    assert train + val == text
    assert len(val) == int(len(text) * fraction)


def test_split_without_validation() -> None:
    assert split_text("abcdef", 0.0) == ("abcdef", "")
    assert split_text("abcdef", 0.1) == ("abcdef", "")  # less than one character held out


# ---------------------------------------------------------------- streams


def test_rows_are_contiguous_streams_and_targets_are_shifted() -> None:
    ids = np.arange(100, dtype=np.int64)
    s = TokenStreams(ids, num_streams=3, seq_len=5)
    assert s.stream_len == 33 and s.windows == 6 and s.chars_per_batch == 15
    b = s.next_batch()
    assert b.x.shape == b.y.shape == (3, 5)
    assert b.x.tolist() == [list(range(0, 5)), list(range(33, 38)), list(range(66, 71))]
    assert (b.y == b.x + 1).all()


def test_each_row_continues_where_it_stopped() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=1000)
    s = TokenStreams(ids, num_streams=4, seq_len=7)
    batches = [s.next_batch() for _ in range(s.windows)]
    for b in range(4):
        row_x = np.concatenate([batch.x[b].numpy() for batch in batches])
        row_y = np.concatenate([batch.y[b].numpy() for batch in batches])
        start = b * s.stream_len
        assert (row_x == ids[start : start + len(row_x)]).all()  # one unbroken stretch of the text
        assert (row_y == ids[start + 1 : start + 1 + len(row_x)]).all()  # the next character of each


def test_wraps_to_a_new_pass_with_reset() -> None:
    ids = np.arange(64)
    s = TokenStreams(ids, num_streams=2, seq_len=8)  # stream_len 31: three windows, the tail is dropped
    assert s.windows == 3
    first = [s.next_batch() for _ in range(3)]
    assert [b.reset for b in first] == [True, False, False]
    again = s.next_batch()
    assert again.reset and s.offset == 8
    assert (again.x == first[0].x).all() and (again.y == first[0].y).all()


def test_offset_is_the_whole_state() -> None:
    ids = np.random.default_rng(1).integers(0, 30, size=500)
    a = TokenStreams(ids, num_streams=3, seq_len=6)
    for _ in range(11):  # past one full pass (9 windows)
        a.next_batch()
    b = TokenStreams(ids, num_streams=3, seq_len=6)
    b.offset = a.offset
    for _ in range(20):
        x, y = a.next_batch(), b.next_batch()
        assert (x.x == y.x).all() and (x.y == y.y).all() and x.reset == y.reset


def test_rows_select_a_share_of_the_streams() -> None:
    ids = np.arange(200)
    full = TokenStreams(ids, num_streams=4, seq_len=5).next_batch()
    part = TokenStreams(ids, num_streams=4, seq_len=5, rows=slice(2, 4)).next_batch()
    assert (part.x == full.x[2:4]).all() and (part.y == full.y[2:4]).all()


def test_too_short_for_the_streams() -> None:
    with pytest.raises(CorpusError, match="too short for 8 streams of 16 characters"):
        TokenStreams(np.arange(100), num_streams=8, seq_len=16)
