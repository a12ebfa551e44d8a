"""CharTokenizer: one id per code point, deterministic order, exact round trip, clear errors for unknowns."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from charlm.errors import UnknownCharactersError, UsageError
from charlm.tokenizer import CharTokenizer, describe_char

MIXED = "Hello, world!\n\tTabs and 漢字かな交じり文; emoji 😀🎉👍🏽 and e\u0301 (a combining accent).\n"


def test_round_trip_with_cjk_and_emoji() -> None:
    tok = CharTokenizer.from_text(MIXED)
    ids = tok.encode(MIXED)
    assert ids.dtype == np.int64
    assert len(ids) == len(MIXED)  # one id per code point, astral-plane emoji included
    assert tok.decode(ids.tolist()) == MIXED
    assert tok.vocab_size == len(set(MIXED))
    assert all(0 <= i < tok.vocab_size for i in ids)


def test_each_code_point_is_its_own_token() -> None:
    tok = CharTokenizer.from_text("👍🏽")  # a thumbs-up and a skin-tone modifier: two code points
    assert tok.chars == ["\U0001f3fd", "\U0001f44d"]  # code-point order: the modifier (U+1F3FD) first
    assert tok.encode("👍🏽👍").tolist() == [1, 0, 1]


def test_order_is_code_point_order_whatever_the_text_order() -> None:
    chars = list(MIXED)
    shuffled = chars[:]
    random.Random(3).shuffle(shuffled)
    a = CharTokenizer.from_text(MIXED)
    b = CharTokenizer.from_text("".join(shuffled))
    c = CharTokenizer.from_text(MIXED[40:], MIXED[:40])  # several texts, in another order
    assert a.chars == b.chars == c.chars == sorted(set(MIXED), key=ord)
    assert a.encode(MIXED).tolist() == b.encode(MIXED).tolist()
    assert [a.id_of(ch) for ch in a.chars] == list(range(a.vocab_size))


def test_unknown_characters_are_named() -> None:
    tok = CharTokenizer.from_text("abc \n")
    with pytest.raises(UnknownCharactersError) as e:
        tok.encode("abz c😀z\x07", what="the prime")
    msg = str(e.value)
    assert msg.startswith("the prime has 3 character(s)")
    assert "'z'" in msg and "'😀'" in msg and "U+0007" in msg
    assert "(use skip_unknown to drop them)" in msg  # the library names its parameter; the CLI its flag
    assert e.value.render(lambda name: "--skip-unknown").endswith("(use --skip-unknown to drop them)")
    assert e.value.chars == ["z", "😀", "\x07"] and e.value.where == "the prime"
    assert isinstance(e.value, UsageError) and e.value.exit_code == 2
    assert tok.unknown("abz c😀z\x07") == ["z", "😀", "\x07"]  # distinct, in order of first appearance


def test_many_unknown_characters_are_cut_short() -> None:
    tok = CharTokenizer.from_text("a")
    with pytest.raises(UsageError, match=r"has 20 character\(s\).*\.\.\.") as e:
        tok.encode("a" + "".join(chr(0x4E00 + i) for i in range(20)))
    assert chr(0x4E00 + 9) in str(e.value) and chr(0x4E00 + 10) not in str(e.value)


def test_skip_drops_unknown_characters() -> None:
    tok = CharTokenizer.from_text("abc")
    ids = tok.encode("xaybzc😀", on_unknown="skip")
    assert tok.decode(ids.tolist()) == "abc"
    assert tok.encode("😀😀", on_unknown="skip").tolist() == []


def test_dict_round_trip_through_json() -> None:
    text = MIXED + "\ud800 lone surrogate \u200b zero width"
    tok = CharTokenizer.from_text(text)
    d = json.loads(json.dumps(tok.to_dict()))
    assert d["code_points"] == sorted(d["code_points"])
    again = CharTokenizer.from_dict(d)
    assert again.chars == tok.chars
    assert again.encode(text).tolist() == tok.encode(text).tolist()


def test_empty_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError):
        CharTokenizer([])


@pytest.mark.parametrize(
    ("ch", "shown"), [("x", "'x'"), ("\n", "'\\n'"), (" ", "' '"), ("\x00", "U+0000"), ("\u200b", "U+200B")]
)
def test_describe_char(ch: str, shown: str) -> None:
    assert describe_char(ch) == shown
