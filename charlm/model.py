"""The language model: character embedding -> multi-layer GRU -> linear head over the vocabulary.

`CharGRU` runs on `torch.nn.GRU` (cuDNN on a GPU). `gru_layer_reference` spells out, one line per
equation, what that module computes, using the same weights; the tests hold the two equal, and it is
what lets charlm show a model's gate values as the model itself computes them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from charlm.config import ModelConfig


class CharGRU(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed)
        self.gru = nn.GRU(
            config.embed,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def forward(self, idx: torch.Tensor, hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """idx (B, T) ids, hidden (layers, B, hidden) or None for zeros -> logits (B, T, V), new hidden."""
        out, hidden = self.gru(self.embed(idx), hidden)  # out: (B, T, hidden), the top layer's states
        return self.head(self.drop(out)), hidden

    def init_hidden(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(self.config.layers, batch, self.config.hidden, device=device)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats per character."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


class GRUTrace(NamedTuple):
    h: torch.Tensor  # (T, B, H) hidden state after each character
    r: torch.Tensor  # (T, B, H) reset gate
    z: torch.Tensor  # (T, B, H) update gate
    n: torch.Tensor  # (T, B, H) candidate state


def gru_layer_reference(x: torch.Tensor, h: torch.Tensor, gru: nn.GRU, layer: int = 0) -> GRUTrace:
    """One GRU layer written out from its equations, on `gru`'s own weights for `layer`.

    x: (T, B, input) inputs to this layer; h: (B, H) the state before the first input.
    PyTorch stacks each weight as three blocks in the order reset, update, candidate: W_ih = [W_ir; W_iz; W_in].
    """
    w_ir, w_iz, w_in = getattr(gru, f"weight_ih_l{layer}").chunk(3)
    w_hr, w_hz, w_hn = getattr(gru, f"weight_hh_l{layer}").chunk(3)
    b_ir, b_iz, b_in = getattr(gru, f"bias_ih_l{layer}").chunk(3)
    b_hr, b_hz, b_hn = getattr(gru, f"bias_hh_l{layer}").chunk(3)
    hs, rs, zs, ns = [], [], [], []
    for x_t in x:
        # reset gate: how much of the old state the candidate may look at
        r = torch.sigmoid(x_t @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
        # update gate: how much of the old state to keep unchanged
        z = torch.sigmoid(x_t @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
        # candidate state: the new input, plus the part of the old state that the reset gate lets through
        n = torch.tanh(x_t @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
        # blend: z near 1 keeps the old state (memory), z near 0 takes the candidate
        h = (1 - z) * n + z * h
        hs.append(h), rs.append(r), zs.append(z), ns.append(n)
    return GRUTrace(torch.stack(hs), torch.stack(rs), torch.stack(zs), torch.stack(ns))
