"""What a trained model makes of a text: per-character surprisal, its top guesses, and its gate values.

Surprisal comes from the model's own forward pass (`CharLM`, as `evaluate` runs it). The gates come from the
cell written out from its equations (`gru_layer_reference`, `lstm_layer_reference` or `rnn_layer_reference`),
run in float64 on the checkpoint's own weights for every layer, so the values shown are what the model
computes (the tests hold each reference's hidden states equal to its PyTorch module's).

What there is to show depends on the cell: a GRU has an update gate z and a reset gate r; an LSTM an input
gate i, a forget gate f and an output gate o, plus its cell candidate g (the new content, not a gate) and its
cell state c; a plain RNN has no gates at all, only its state h.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from charlm.model import CharLM, gru_layer_reference, lstm_layer_reference, rnn_layer_reference
from charlm.tokenizer import CharTokenizer

LOW, HIGH = 0.1, 0.9  # a gate is left-saturated below LOW and right-saturated above HIGH
# What each traced value is, in words (the HTML page's "colour by" choices use the same labels).
LABELS = {
    "h": "unit state h",
    "c": "cell state c",
    "z": "update gate z",
    "r": "reset gate r",
    "i": "input gate i",
    "f": "forget gate f",
    "o": "output gate o",
    "g": "cell candidate g (not a gate)",
}


@dataclass
class LayerTrace:
    h: np.ndarray  # (T, H) hidden state after reading each character
    gates: dict[str, np.ndarray] = field(default_factory=dict)  # gate name -> (T, H), in (0, 1); none for a plain RNN
    g: np.ndarray | None = None  # (T, H) LSTM only: cell candidate, the new content in (-1, 1); not a gate
    c: np.ndarray | None = None  # (T, H) LSTM only: cell state, unbounded

    def values(self) -> dict[str, np.ndarray]:
        """Everything traced, by name: the gates, then g, h and c where the cell has them."""
        rest = {"g": self.g, "h": self.h, "c": self.c}
        return {**self.gates, **{k: v for k, v in rest.items() if v is not None}}


@dataclass
class Explanation:
    chars: list[str]  # the text, one entry per character
    bits: np.ndarray  # (T,) surprisal of chars[i] given chars[:i], in bits; NaN at 0 (nothing predicts it)
    top_chars: list[list[str]]  # top_chars[i]: the model's k likeliest guesses for position i ([] at 0)
    top_probs: np.ndarray  # (T, k) their probabilities (NaN at 0)
    layers: list[LayerTrace] | None  # per layer, when gates were asked for
    cell: str = "gru"  # the model's cell, which decides what `layers` holds

    @property
    def scored(self) -> int:
        return max(0, len(self.chars) - 1)

    @property
    def total_bits(self) -> float:
        return float(np.nansum(self.bits))

    @property
    def bits_per_char(self) -> float:
        return self.total_bits / self.scored if self.scored else math.nan


@torch.no_grad()
def explain(model: CharLM, tok: CharTokenizer, ids: np.ndarray, top_k: int = 5, gates: bool = True) -> Explanation:
    """Score every character of `ids` in one pass from a zero state; optionally trace the gates of every layer."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(ids, dtype=torch.long, device=device).unsqueeze(0)
    logits, _ = model(x)
    logp = F.log_softmax(logits[0].float(), dim=-1)  # (T, V): row t predicts character t + 1
    t = len(ids)
    bits = np.full(t, np.nan)
    nll = -logp[:-1].gather(1, x[0, 1:, None]).squeeze(1)
    bits[1:] = (nll.double() / math.log(2)).cpu().numpy()
    k = min(top_k, tok.vocab_size)
    probs, idx = logp[:-1].exp().topk(k, dim=-1)
    top_probs = np.full((t, k), np.nan)
    top_probs[1:] = probs.cpu().numpy()
    top_chars = [[]] + [[tok.chars[j] for j in row] for row in idx.cpu().tolist()]
    chars = [tok.chars[i] for i in ids]
    traced = trace_gates(model, ids) if gates else None
    return Explanation(chars, bits, top_chars, top_probs, traced, model.config.cell)


@torch.no_grad()
def trace_gates(model: CharLM, ids: np.ndarray) -> list[LayerTrace]:
    """Gates and states of every layer for each character, from the cell's equations on its own weights (float64)."""
    recurrent = copy.deepcopy(model.recurrent).to("cpu", torch.float64)
    x = model.embed.weight.detach().to("cpu", torch.float64)[torch.as_tensor(ids, dtype=torch.long)]
    x = x.unsqueeze(1)  # (T, 1, embed): one sequence
    out = []
    for layer in range(recurrent.num_layers):
        trace, x = _trace_layer(model.config.cell, x, recurrent, layer)
        out.append(trace)  # the next layer reads this layer's states x (no dropout: the model is in eval mode)
    return out


def _trace_layer(cell: str, x: torch.Tensor, module: torch.nn.RNNBase, layer: int) -> tuple[LayerTrace, torch.Tensor]:
    """One layer from a zero state: its trace, and its hidden states (T, 1, H) for the layer above."""
    zero = torch.zeros(1, module.hidden_size, dtype=torch.float64)

    def one(a: torch.Tensor) -> np.ndarray:  # (T, 1, H) -> (T, H)
        return a[:, 0].numpy()

    if cell == "gru":
        t = gru_layer_reference(x, zero, module, layer)
        return LayerTrace(one(t.h), {"z": one(t.z), "r": one(t.r)}), t.h
    if cell == "lstm":
        t = lstm_layer_reference(x, zero, zero, module, layer)
        gates = {"i": one(t.i), "f": one(t.f), "o": one(t.o)}
        return LayerTrace(one(t.h), gates, g=one(t.g), c=one(t.c)), t.h
    t = rnn_layer_reference(x, zero, module, layer)
    return LayerTrace(one(t.h)), t.h


@dataclass
class Saturation:
    left: np.ndarray  # (H,) fraction of characters on which the unit's gate was < LOW
    right: np.ndarray  # (H,) fraction on which it was > HIGH


def saturation(gate: np.ndarray, low: float = LOW, high: float = HIGH) -> Saturation:
    """Per unit, how often a gate (T, H) is left-saturated (< low) and right-saturated (> high)."""
    return Saturation((gate < low).mean(axis=0), (gate > high).mean(axis=0))


def saturation_summary(layers: list[LayerTrace]) -> list[dict[str, float | int | str]]:
    """One row per layer and gate: mean saturated fractions, and how many units sit mostly at one end.

    A plain RNN has no gates, so no rows. An LSTM's cell candidate g gets a row of its own, marked
    kind "candidate": it is not a gate, and its ends are g < -0.8 and g > 0.8 (LOW and HIGH on (-1, 1)).
    """
    rows: list[dict[str, float | int | str]] = []
    for i, trace in enumerate(layers):
        named = [(name, "gate", gate) for name, gate in trace.gates.items()]
        if trace.g is not None:
            named.append(("g", "candidate", (trace.g + 1) / 2))  # onto (0, 1), where LOW and HIGH apply
        for name, kind, values in named:
            s = saturation(values)
            rows.append(
                {
                    "layer": i,
                    "gate": name,
                    "kind": kind,
                    "left": float(s.left.mean()),
                    "right": float(s.right.mean()),
                    "units_mostly_left": int((s.left > 0.5).sum()),
                    "units_mostly_right": int((s.right > 0.5).sum()),
                    "units_never_saturated": int(((s.left + s.right) < 0.1).sum()),
                    "units": int(s.left.size),
                }
            )
    return rows


def surprising_spans(bits: np.ndarray, width: int = 8, count: int = 5) -> list[tuple[int, int, float]]:
    """The `count` non-overlapping windows of `width` characters with the most surprisal: (start, end, bits)."""
    b = np.nan_to_num(bits, nan=0.0)
    width = max(1, min(width, len(b)))
    if len(b) == 0:
        return []
    sums = np.convolve(b, np.ones(width), mode="valid")  # sums[i] = b[i:i+width].sum()
    taken = np.zeros(len(b), dtype=bool)
    spans = []
    for i in np.argsort(-sums, kind="stable"):
        if len(spans) == count:
            break
        if not taken[i : i + width].any():
            taken[i : i + width] = True
            spans.append((int(i), int(i) + width, float(sums[i])))
    return spans


def records(ex: Explanation, with_gates: bool = False, digits: int = 4) -> list[dict]:
    """Per-character records for JSON: char, bits, top-k, and (with_gates) every layer's gates and states."""
    out = []
    for i, ch in enumerate(ex.chars):
        rec: dict = {
            "pos": i,
            "char": ch,
            "bits": None if i == 0 else round(float(ex.bits[i]), digits),
            "top": [
                {"char": c, "p": round(float(p), digits)}
                for c, p in zip(ex.top_chars[i], ex.top_probs[i], strict=False)
            ],
        }
        if with_gates and ex.layers is not None:
            rec["layers"] = [
                {name: np.round(v[i], digits).tolist() for name, v in trace.values().items()} for trace in ex.layers
            ]
        out.append(rec)
    return out


def document(ex: Explanation, with_gates: bool = False) -> dict:
    """The whole explanation as `charlm explain --json` prints it: the summary, gate saturation (with gates)
    and the per-character records."""
    doc = {"cell": ex.cell, "chars": ex.scored, "bits_per_char": ex.bits_per_char, "total_bits": ex.total_bits}
    doc["saturation"] = saturation_summary(ex.layers) if with_gates and ex.layers is not None else None
    return {**doc, "records": records(ex, with_gates=with_gates)}
