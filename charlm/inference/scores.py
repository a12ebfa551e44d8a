"""What scoring a text gives: a `Score` (no torch here, so the Python API can name it without loading torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Score:
    """How surprised a model is by a text: each character predicted from the ones before it."""

    chars: int  # characters scored (each predicted from the ones before it: all but the first)
    nats: float  # their total negative log-likelihood, in nats

    @property
    def nats_per_char(self) -> float:
        """Mean surprise per character scored, in nats (NaN with nothing scored)."""
        return self.nats / self.chars if self.chars else math.nan

    @property
    def loss(self) -> float:
        """Nats per character: the training loss's unit."""
        return self.nats_per_char

    @property
    def bits_per_char(self) -> float:
        """Mean surprise per character, in bits: what the training display reports."""
        return self.nats_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        """e to the nats per character: as many equally likely characters as the model was unsure between."""
        return math.exp(self.nats_per_char) if self.chars else math.nan

    def to_dict(self) -> dict[str, float | int]:
        """The record `charlm evaluate --json` prints (its ``loss`` is nats per character)."""
        return {"chars": self.chars, "nats": self.nats, "loss": self.loss, "bits_per_char": self.bits_per_char,
                "perplexity": self.perplexity}  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"Score({self.nats_per_char:.4f} nats/char, {self.bits_per_char:.4f} bits/char, "
            f"perplexity {self.perplexity:.3f}, {self.chars} chars)"
        )
