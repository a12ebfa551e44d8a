"""Characters <-> integer ids: one id per Unicode code point seen in the training text.

Ids follow code-point order, so the same text always gives the same vocabulary, and encoding is a
vectorised lookup (a binary search over the sorted code points) rather than a Python loop per character.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from charlm.errors import UnknownCharactersError, param

OnUnknown = Literal["error", "skip"]


def code_points(text: str) -> np.ndarray:
    """The text as an array of uint32 code points (UTF-32 keeps one unit per character)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def describe_char(ch: str) -> str:
    """A printable name for a character in messages: 'x', '\\n' or U+1F600."""
    if ch.isprintable() and not ch.isspace():
        return repr(ch)
    return repr(ch) if ch in "\n\t\r " else f"U+{ord(ch):04X}"


class CharTokenizer:
    def __init__(self, chars: Iterable[str]) -> None:
        self.chars: list[str] = sorted(set(chars))
        if not self.chars:
            raise ValueError("a tokenizer needs at least one character")
        self._cps = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, *texts: str) -> CharTokenizer:
        cps = np.unique(np.concatenate([code_points(t) for t in texts]))
        return cls(chr(int(c)) for c in cps)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return ch in self._index

    def id_of(self, ch: str) -> int:
        return self._index[ch]

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that are not in the vocabulary, in order of first appearance."""
        cps = code_points(text)
        _, ok = self._lookup(cps)
        return list(dict.fromkeys(chr(int(c)) for c in cps[~ok]))

    def encode(self, text: str, on_unknown: OnUnknown = "error", what: str = "the text") -> np.ndarray:
        """Ids as int64. Unknown characters raise UnknownCharactersError (a UsageError) naming them, or are
        dropped with on_unknown='skip'."""
        cps = code_points(text)
        ids, ok = self._lookup(cps)
        if not ok.all():
            if on_unknown == "skip":
                kept: np.ndarray = ids[ok]
                return kept
            bad = list(dict.fromkeys(chr(int(c)) for c in cps[~ok]))
            shown = ", ".join(describe_char(c) for c in bad[:10]) + (" ..." if len(bad) > 10 else "")
            raise UnknownCharactersError(
                f"{what} has {len(bad)} character(s) the model never saw in training: {shown} "
                f"(use {param('skip_unknown')} to drop them)",
                bad,
                what,
            )
        return ids

    def _lookup(self, cps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self._cps, cps)
        pos = np.minimum(pos, len(self._cps) - 1)
        ok = self._cps[pos] == cps
        return pos.astype(np.int64), ok

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        # Code points, not characters: JSON then holds no lone surrogates or invisible characters.
        return {"code_points": [ord(c) for c in self.chars]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        return cls(chr(int(c)) for c in d["code_points"])
