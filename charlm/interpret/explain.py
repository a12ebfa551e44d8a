"""What a trained model makes of a text: per-character surprisal, its top guesses, and its gate values.

Surprisal comes from the model's own forward pass (`CharGRU`, as `evaluate` runs it). The gates come from
`gru_layer_reference`, the GRU written out from its equations, run in float64 on the checkpoint's own
`nn.GRU` weights for every layer, so the z, r and h shown are what the model computes (the tests hold the
reference's hidden states equal to `nn.GRU`'s).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.model import CharGRU, gru_layer_reference
from charlm.tokenizer import CharTokenizer

LOW, HIGH = 0.1, 0.9  # a gate is left-saturated below LOW and right-saturated above HIGH


@dataclass
class LayerGates:
    z: np.ndarray  # (T, H) update gate after reading each character
    r: np.ndarray  # (T, H) reset gate
    h: np.ndarray  # (T, H) hidden state


@dataclass
class Explanation:
    chars: list[str]  # the text, one entry per character
    bits: np.ndarray  # (T,) surprisal of chars[i] given chars[:i], in bits; NaN at 0 (nothing predicts it)
    top_chars: list[list[str]]  # top_chars[i]: the model's k likeliest guesses for position i ([] at 0)
    top_probs: np.ndarray  # (T, k) their probabilities (NaN at 0)
    layers: list[LayerGates] | None  # per layer, when gates were asked for

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
def explain(model: CharGRU, tok: CharTokenizer, ids: np.ndarray, top_k: int = 5, gates: bool = True) -> Explanation:
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
    return Explanation(chars, bits, top_chars, top_probs, trace_gates(model, ids) if gates else None)


@torch.no_grad()
def trace_gates(model: CharGRU, ids: np.ndarray) -> list[LayerGates]:
    """z, r and h of every layer for each character, from the GRU equations on the model's own weights (float64)."""
    gru = copy.deepcopy(model.gru).to("cpu", torch.float64)
    x = model.embed.weight.detach().to("cpu", torch.float64)[torch.as_tensor(ids, dtype=torch.long)]
    x = x.unsqueeze(1)  # (T, 1, embed): one sequence
    out = []
    for layer in range(gru.num_layers):
        h0 = torch.zeros(1, gru.hidden_size, dtype=torch.float64)
        tr = gru_layer_reference(x, h0, gru, layer)
        out.append(LayerGates(*(a[:, 0].numpy() for a in (tr.z, tr.r, tr.h))))
        x = tr.h  # the next layer reads this layer's states (no dropout: the model is in eval mode)
    return out


@dataclass
class Saturation:
    left: np.ndarray  # (H,) fraction of characters on which the unit's gate was < LOW
    right: np.ndarray  # (H,) fraction on which it was > HIGH


def saturation(gate: np.ndarray, low: float = LOW, high: float = HIGH) -> Saturation:
    """Per unit, how often a gate (T, H) is left-saturated (< low) and right-saturated (> high)."""
    return Saturation((gate < low).mean(axis=0), (gate > high).mean(axis=0))


def saturation_summary(layers: list[LayerGates]) -> list[dict[str, float | int | str]]:
    """One row per layer and gate: mean saturated fractions, and how many units sit mostly at one end."""
    rows: list[dict[str, float | int | str]] = []
    for i, g in enumerate(layers):
        for name in ("z", "r"):
            s = saturation(getattr(g, name))
            rows.append(
                {
                    "layer": i,
                    "gate": name,
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
    """Per-character records for JSON: char, bits, top-k, and (with_gates) z, r, h of every layer."""
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
                {name: np.round(getattr(g, name)[i], digits).tolist() for name in ("z", "r", "h")} for g in ex.layers
            ]
        out.append(rec)
    return out
