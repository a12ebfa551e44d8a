"""The language model: character embedding -> stacked recurrent layers -> linear head over the vocabulary.

The recurrent layers are one of three cells, chosen by `ModelConfig.cell`: `torch.nn.GRU`, `torch.nn.LSTM`
or `torch.nn.RNN` with tanh (cuDNN on a GPU for all three). Whatever the cell, the state carried from one call
to the next is a single tensor (state_layers, B, hidden), so the trainer, checkpoints, data-parallel gathering
(concatenation along dim 1, the batch) and evaluation never need to know which cell they hold.

`gru_layer_reference`, `lstm_layer_reference` and `rnn_layer_reference` spell out, one line per equation,
what each PyTorch module computes, on the module's own weights; the tests hold each equal to its module, and
they are what lets charlm show a model's gate values as the model itself computes them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from charlm.config import CELLS, ModelConfig

# Blocks stacked in each weight matrix, one per gate or candidate, each `hidden` rows: PyTorch's layout.
BLOCKS = {"gru": 3, "lstm": 4, "rnn": 1}
CELL_NAMES = {"gru": "GRU", "lstm": "LSTM", "rnn": "plain RNN (tanh)"}


class CharLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.cell not in CELLS:
            raise ValueError(config.problems()[-1])  # the cell's message, which problems() adds last
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed)
        module = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[config.cell]
        extra = {"nonlinearity": "tanh"} if config.cell == "rnn" else {}
        recurrent = module(
            config.embed,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
            **extra,
        )
        # Registered under the cell's own name (self.gru, self.lstm or self.rnn), so every weight's name in a
        # checkpoint says which cell it belongs to ("lstm.weight_ih_l0"), and checkpoints written when every
        # model was a GRU ("gru.weight_ih_l0") load unchanged.
        self.add_module(config.cell, recurrent)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    @property
    def recurrent(self) -> nn.GRU | nn.LSTM | nn.RNN:
        """The recurrent module, whichever cell it is."""
        return getattr(self, self.config.cell)

    @property
    def state_layers(self) -> int:
        """Rows of the carried state: one h per layer, and for an LSTM also one cell state c per layer."""
        return 2 * self.config.layers if self.config.cell == "lstm" else self.config.layers

    def forward(self, idx: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """idx (B, T) ids, state (state_layers, B, hidden) or None for zeros -> logits (B, T, V), new state."""
        x = self.embed(idx)
        if self.config.cell != "lstm":
            out, state = self.recurrent(x, state)  # out: (B, T, hidden), the top layer's states
        else:
            # nn.LSTM carries a pair (h, c); charlm carries them as one tensor: h of every layer, then c.
            hc = None if state is None else tuple(s.contiguous() for s in state.chunk(2))
            out, (h, c) = self.recurrent(x, hc)
            state = torch.cat([h, c])
        return self.head(self.drop(out)), state

    def init_hidden(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The zero state for `batch` streams: (state_layers, batch, hidden)."""
        return torch.zeros(self.state_layers, batch, self.config.hidden, device=device)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


CharGRU = CharLM  # the name the model had when every model was a GRU


def count_params(config: ModelConfig) -> int:
    """The parameters of the model `config` describes, without building it (the tests hold it to num_params).

    Embedding, then per layer k blocks of `hidden` rows over the layer's input and its own state, each with two
    biases (GRU k = 3: r, z, n; LSTM 4: i, f, g, o; plain RNN 1); layers above the first read the state below.
    """
    h, e, v, n, k = config.hidden, config.embed, config.vocab_size, config.layers, BLOCKS[config.cell]
    return v * e + k * h * (e + h + 2) + (n - 1) * k * h * (2 * h + 2) + h * v + v


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats per character."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


# ---------------------------------------------------------------- the cells written out from their equations


def _layer_weights(module: nn.RNNBase, layer: int) -> tuple[tuple[torch.Tensor, ...], ...]:
    """W_ih, W_hh, b_ih, b_hh of one layer, each cut into the blocks PyTorch stacks in it (one per gate)."""
    blocks = module.weight_ih_l0.shape[0] // module.hidden_size
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return tuple(getattr(module, f"{name}_l{layer}").chunk(blocks) for name in names)


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
    (w_ir, w_iz, w_in), (w_hr, w_hz, w_hn), (b_ir, b_iz, b_in), (b_hr, b_hz, b_hn) = _layer_weights(gru, layer)
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


class LSTMTrace(NamedTuple):
    h: torch.Tensor  # (T, B, H) hidden state after each character (what the layer above and the head read)
    c: torch.Tensor  # (T, B, H) cell state: the LSTM's memory, not squashed, so it can grow past 1
    i: torch.Tensor  # (T, B, H) input gate
    f: torch.Tensor  # (T, B, H) forget gate
    g: torch.Tensor  # (T, B, H) cell candidate (not a gate: the new content, in (-1, 1))
    o: torch.Tensor  # (T, B, H) output gate


def lstm_layer_reference(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, lstm: nn.LSTM, layer: int = 0) -> LSTMTrace:
    """One LSTM layer written out from its equations, on `lstm`'s own weights for `layer`.

    x: (T, B, input) inputs to this layer; h, c: (B, H) the hidden and cell states before the first input.
    PyTorch stacks each weight as four blocks in the order input, forget, cell, output:
    W_ih = [W_ii; W_if; W_ig; W_io].
    """
    (w_ii, w_if, w_ig, w_io), (w_hi, w_hf, w_hg, w_ho), (b_ii, b_if, b_ig, b_io), (b_hi, b_hf, b_hg, b_ho) = (
        _layer_weights(lstm, layer)
    )
    steps = []
    for x_t in x:
        # input gate: how much of the new content to write into the cell
        i = torch.sigmoid(x_t @ w_ii.T + b_ii + h @ w_hi.T + b_hi)
        # forget gate: how much of the old cell state to keep
        f = torch.sigmoid(x_t @ w_if.T + b_if + h @ w_hf.T + b_hf)
        # cell candidate: the new content itself, from the input and the previous hidden state
        g = torch.tanh(x_t @ w_ig.T + b_ig + h @ w_hg.T + b_hg)
        # output gate: how much of the (squashed) cell state to show as the hidden state
        o = torch.sigmoid(x_t @ w_io.T + b_io + h @ w_ho.T + b_ho)
        # the cell state is a sum, not a blend: f near 1 and i near 0 carry it unchanged for as long as needed
        c = f * c + i * g
        h = o * torch.tanh(c)
        steps.append((h, c, i, f, g, o))
    return LSTMTrace(*(torch.stack(s) for s in zip(*steps, strict=True)))


class RNNTrace(NamedTuple):
    h: torch.Tensor  # (T, B, H) hidden state after each character


def rnn_layer_reference(x: torch.Tensor, h: torch.Tensor, rnn: nn.RNN, layer: int = 0) -> RNNTrace:
    """One plain (tanh) RNN layer written out from its equation, on `rnn`'s own weights for `layer`.

    x: (T, B, input) inputs to this layer; h: (B, H) the state before the first input.
    There are no gates: every step overwrites the whole state, so memory must survive repeated squashing.
    """
    (w_ih,), (w_hh,), (b_ih,), (b_hh,) = _layer_weights(rnn, layer)
    hs = []
    for x_t in x:
        h = torch.tanh(x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        hs.append(h)
    return RNNTrace(torch.stack(hs))
