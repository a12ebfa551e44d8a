"""CharLM's shapes and state for each cell, and the cells themselves: hand-written equations reproduce
torch.nn.GRU, torch.nn.LSTM and torch.nn.RNN exactly.

The GRU equations (PyTorch's definition), for input x and previous state h:
    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)          reset gate
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)          update gate
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))       candidate state
    h' = (1 - z) * n + z * h
The LSTM's (i, f, g, o in PyTorch's order) and the plain RNN's are in charlm/model.py.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig
from charlm.model import (
    CharGRU,
    CharLM,
    count_params,
    gru_layer_reference,
    lm_loss,
    lstm_layer_reference,
    rnn_layer_reference,
)
from charlm.tokenizer import CharTokenizer
from charlm.ui import info

TOL = 1e-10
CELLS = ["gru", "lstm", "rnn"]


def _model(layers: int = 2, dtype: torch.dtype = torch.float32, seed: int = 0, cell: str = "gru") -> CharLM:
    torch.manual_seed(seed)
    m = CharLM(ModelConfig(vocab_size=13, embed=6, hidden=16, layers=layers, cell=cell))
    return m.to(dtype).eval()


# ---------------------------------------------------------------- shapes and state


def test_shapes() -> None:
    m = _model(layers=3)
    idx = torch.randint(0, 13, (4, 9))
    logits, hidden = m(idx)
    assert logits.shape == (4, 9, 13)
    assert hidden.shape == (3, 4, 16)
    assert m.init_hidden(5).shape == (3, 5, 16) and not m.init_hidden(5).any()
    assert m.num_params() == sum(p.numel() for p in m.parameters())
    assert isinstance(m.gru, nn.GRU) and m.gru.num_layers == 3 and m.gru.batch_first


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers,hidden,embed", [(1, 7, 3), (3, 16, 6)])
def test_count_params_without_building_the_model(cell: str, layers: int, hidden: int, embed: int) -> None:
    cfg = ModelConfig(vocab_size=11, embed=embed, hidden=hidden, layers=layers, cell=cell)
    assert count_params(cfg) == CharLM(cfg).num_params()


@pytest.mark.parametrize("cell,module,rows", [("gru", nn.GRU, 3), ("lstm", nn.LSTM, 6), ("rnn", nn.RNN, 3)])
def test_each_cell_builds_its_module_and_carries_one_state_tensor(cell: str, module: type, rows: int) -> None:
    m = _model(layers=3, cell=cell)
    assert CharGRU is CharLM and type(m.recurrent) is module and m.recurrent.batch_first
    assert m.state_layers == rows and m.init_hidden(5).shape == (rows, 5, 16) and not m.init_hidden(5).any()
    logits, state = m(torch.randint(0, 13, (4, 9)))
    assert logits.shape == (4, 9, 13) and state.shape == (rows, 4, 16)
    # the weights' names say which cell they belong to (GRU's stay where older checkpoints have them)
    assert {k.split(".")[0] for k in m.state_dict()} == {"embed", cell, "head"}
    assert f"{cell}.weight_hh_l2" in m.state_dict()
    if cell == "rnn":
        assert m.rnn.nonlinearity == "tanh"


def test_lstm_state_is_h_of_every_layer_then_c() -> None:
    m = _model(dtype=torch.float64, cell="lstm")
    idx = torch.randint(0, 13, (3, 7))
    torch.manual_seed(3)
    h0, c0 = torch.randn(2, 2, 3, 16, dtype=torch.float64)
    with torch.no_grad():
        _, state = m(idx, torch.cat([h0, c0]))
        out, (h_n, c_n) = m.lstm(m.embed(idx), (h0, c0))
    assert torch.equal(state[:2], h_n) and torch.equal(state[2:], c_n)


def test_a_bad_cell_is_refused() -> None:
    cfg = ModelConfig(vocab_size=13, cell="gru2")
    assert cfg.problems() == ["cell must be gru, lstm or rnn (got 'gru2')"]
    with pytest.raises(ValueError, match="^cell must be gru, lstm or rnn"):
        CharLM(cfg)
    assert ModelConfig.from_dict({"vocab_size": 13, "hidden": 8}).cell == "gru"  # written before cells existed
    assert all(not ModelConfig(vocab_size=13, cell=c).problems() for c in CELLS)


@pytest.mark.parametrize("cell", CELLS)
def test_no_hidden_means_a_zero_state(cell: str) -> None:
    m = _model(cell=cell)
    idx = torch.randint(0, 13, (2, 7))
    a, ha = m(idx)
    b, hb = m(idx, m.init_hidden(2))
    assert torch.equal(a, b) and torch.equal(ha, hb)


@pytest.mark.parametrize("cell", CELLS)
def test_hidden_state_carries_across_calls(cell: str) -> None:
    """Reading a sequence in two halves, handing the state over, is the same as reading it in one pass."""
    m = _model(dtype=torch.float64, cell=cell)
    idx = torch.randint(0, 13, (3, 20))
    whole, h_whole = m(idx)
    first, h = m(idx[:, :8])
    second, h2 = m(idx[:, 8:], h)
    assert torch.allclose(torch.cat([first, second], 1), whole, rtol=0, atol=TOL)
    assert torch.allclose(h2, h_whole, rtol=0, atol=TOL)
    # and the carried state matters: starting the second half cold gives other predictions
    cold, _ = m(idx[:, 8:])
    assert (cold - whole[:, 8:]).abs().max() > 1e-3


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_only_in_training(cell: str) -> None:
    torch.manual_seed(0)
    m = CharLM(ModelConfig(vocab_size=13, embed=6, hidden=16, layers=2, dropout=0.5, cell=cell))
    assert m.recurrent.dropout == 0.5
    idx = torch.randint(0, 13, (2, 10))
    m.eval()
    assert torch.equal(m(idx)[0], m(idx)[0])
    m.train()
    assert not torch.equal(m(idx)[0], m(idx)[0])
    single = CharLM(ModelConfig(vocab_size=13, layers=1, dropout=0.5, cell=cell))
    assert single.recurrent.dropout == 0.0  # no layer above to drop into (and no warning from torch)


def test_lm_loss_is_mean_nats_per_character() -> None:
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    targets = torch.randint(0, 7, (2, 5))
    manual = -logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).mean()
    assert abs(lm_loss(logits, targets).item() - manual.item()) < 1e-12
    uniform = torch.zeros(1, 4, 7)
    assert abs(lm_loss(uniform, torch.zeros(1, 4, dtype=torch.long)).item() - math.log(7)) < 1e-6


# ---------------------------------------------------------------- the GRU from its equations


def _gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, variant: str = "pytorch"):
    """One GRU step written from the equations above (float64). `variant` builds wrong cells for the controls."""
    size = h.shape[-1]

    def block(t, k):  # PyTorch stacks the three blocks as [reset; update; candidate]
        return t[k * size : (k + 1) * size]

    gi = [x @ block(w_ih, k).T + block(b_ih, k) for k in range(3)]
    gh = [h @ block(w_hh, k).T + block(b_hh, k) for k in range(3)]
    r = torch.sigmoid(gi[0] + gh[0])
    z = torch.sigmoid(gi[1] + gh[1])
    if variant == "swap_r_z":  # the gate blocks read in the wrong order
        r, z = z, r
    gate = z if variant == "z_for_r" else r
    n = torch.tanh(gi[2] + gate * gh[2])
    if variant == "reset_outside":  # the other common GRU form: r applied to h before the matrix
        n = torch.tanh(gi[2] + (r * h) @ block(w_hh, 2).T + block(b_hh, 2))
    return (1 - z) * n + z * h, (r, z, n)


def _gru_by_hand(x, h0, gru: nn.GRU, variant: str = "pytorch"):
    """Every layer of `gru` over x (T, B, input) from h0 (layers, B, H): (top-layer outputs, final states, gates)."""
    inp, finals, gates = x, [], []
    for layer in range(gru.num_layers):
        w = [getattr(gru, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h, outs, layer_gates = h0[layer], [], []
        for x_t in inp:
            h, g = _gru_cell(x_t, h, *w, variant=variant)
            outs.append(h)
            layer_gates.append(g)
        inp = torch.stack(outs)
        finals.append(h)
        gates.append(layer_gates)
    return inp, torch.stack(finals), gates


@pytest.fixture
def gru() -> nn.GRU:
    torch.manual_seed(1)
    g = nn.GRU(input_size=5, hidden_size=7, num_layers=2).double()
    with torch.no_grad():  # larger weights than the default init, so that every term matters
        for p in g.parameters():
            p.uniform_(-1.0, 1.0)
    return g


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    return torch.randn(12, 3, 5, dtype=torch.float64), torch.randn(2, 3, 7, dtype=torch.float64)


def test_hand_written_gru_reproduces_nn_gru(gru: nn.GRU, inputs) -> None:
    x, h0 = inputs
    with torch.no_grad():
        expected, h_n = gru(x, h0)
        out, finals, _ = _gru_by_hand(x, h0, gru)
    assert out.dtype == torch.float64
    assert (out - expected).abs().max().item() < TOL
    assert (finals - h_n).abs().max().item() < TOL


@pytest.mark.parametrize("variant", ["swap_r_z", "z_for_r", "reset_outside"])
def test_wrong_gru_equations_do_not_match(gru: nn.GRU, inputs, variant: str) -> None:
    """Negative controls: the comparison above can tell a wrong cell from the right one."""
    x, h0 = inputs
    with torch.no_grad():
        expected, _ = gru(x, h0)
        out, _, _ = _gru_by_hand(x, h0, gru, variant)
    assert (out - expected).abs().max().item() > 1e-2


def test_gru_layer_reference_matches_nn_gru_and_the_equations(gru: nn.GRU, inputs) -> None:
    x, h0 = inputs
    with torch.no_grad():
        expected, h_n = gru(x, h0)
        _, _, gates = _gru_by_hand(x, h0, gru)
        inp = x
        for layer in range(2):
            trace = gru_layer_reference(inp, h0[layer], gru, layer)
            assert trace.h.shape == trace.r.shape == trace.z.shape == trace.n.shape == (12, 3, 7)
            for k, name in enumerate("rzn"):
                by_hand = torch.stack([g[k] for g in gates[layer]])
                assert (getattr(trace, name) - by_hand).abs().max().item() < TOL, name
            assert (trace.h[-1] - h_n[layer]).abs().max().item() < TOL
            inp = trace.h
        assert (inp - expected).abs().max().item() < TOL


def test_char_gru_is_embedding_then_gru_then_head() -> None:
    """The whole model, rebuilt from the hand-written cell, gives the same logits (float64, 1e-10)."""
    m = _model(dtype=torch.float64)
    idx = torch.randint(0, 13, (3, 10))
    h0 = torch.randn(2, 3, 16, dtype=torch.float64)
    with torch.no_grad():
        logits, h_n = m(idx, h0)
        emb = F.embedding(idx, m.embed.weight).transpose(0, 1)  # (T, B, embed)
        out, finals, _ = _gru_by_hand(emb, h0, m.gru)
        by_hand = out.transpose(0, 1) @ m.head.weight.T + m.head.bias
    assert (logits - by_hand).abs().max().item() < TOL
    assert (h_n - finals).abs().max().item() < TOL


# ---------------------------------------------------------------- the LSTM and the plain RNN from their equations


def _random(module: type, **kw) -> nn.RNNBase:
    torch.manual_seed(1)
    m = module(input_size=5, hidden_size=7, num_layers=2, **kw).double()
    with torch.no_grad():  # larger weights than the default init, so that every term matters
        for p in m.parameters():
            p.uniform_(-1.0, 1.0)
    return m


def _by_reference(cell: str, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, module: nn.RNNBase):
    """Every layer of `module` from its reference: (top-layer outputs, final h per layer, final c per layer)."""
    inp, hs, cs = x, [], []
    for layer in range(module.num_layers):
        if cell == "lstm":
            t = lstm_layer_reference(inp, h0[layer], c0[layer], module, layer)
            cs.append(t.c[-1])
        else:
            t = rnn_layer_reference(inp, h0[layer], module, layer)
        hs.append(t.h[-1])
        inp = t.h
    return inp, torch.stack(hs), torch.stack(cs) if cs else None


def test_lstm_reference_reproduces_nn_lstm(inputs) -> None:
    x, h0 = inputs
    c0 = torch.randn_like(h0)
    lstm = _random(nn.LSTM)
    with torch.no_grad():
        expected, (h_n, c_n) = lstm(x, (h0, c0))
        out, hs, cs = _by_reference("lstm", x, h0, c0, lstm)
        t = lstm_layer_reference(x, h0[0], c0[0], lstm)
    assert out.dtype == torch.float64 and (out - expected).abs().max().item() < TOL
    assert (hs - h_n).abs().max().item() < TOL and (cs - c_n).abs().max().item() < TOL
    assert all(getattr(t, n).shape == (12, 3, 7) for n in "hcifgo")
    assert ((t.i > 0) & (t.i < 1) & (t.f > 0) & (t.o < 1)).all() and (t.g.abs() < 1).all()
    assert (t.c.abs() > 1).any()  # the cell state is not squashed: it can leave (-1, 1), unlike h
    assert ((t.o * torch.tanh(t.c) - t.h).abs() < TOL).all()


def test_rnn_reference_reproduces_nn_rnn(inputs) -> None:
    x, h0 = inputs
    rnn = _random(nn.RNN, nonlinearity="tanh")
    with torch.no_grad():
        expected, h_n = rnn(x, h0)
        out, hs, _ = _by_reference("rnn", x, h0, None, rnn)
    assert (out - expected).abs().max().item() < TOL and (hs - h_n).abs().max().item() < TOL


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_references_tell_a_wrong_weight_layout_apart(inputs, cell: str) -> None:
    """Negative control: the same reference on weights whose blocks are misread does not match the module."""
    x, h0 = inputs
    module = _random(nn.LSTM) if cell == "lstm" else _random(nn.RNN, nonlinearity="tanh")
    wrong = copy.deepcopy(module)
    with torch.no_grad():
        expected, _ = module(x, (h0, h0) if cell == "lstm" else h0)
        w = wrong.weight_hh_l1
        # LSTM: forget and input blocks swapped; RNN: W_hh read transposed
        w.copy_(torch.cat([w[7:14], w[:7], w[14:]]) if cell == "lstm" else w.T.clone())
        out, _, _ = _by_reference(cell, x, h0, h0, wrong)
    assert (out - expected).abs().max().item() > 1e-2


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_char_lm_is_embedding_then_cell_then_head(cell: str) -> None:
    """The whole model rebuilt from the cell's reference, from a nonzero state, gives the same logits and state."""
    m = _model(dtype=torch.float64, cell=cell)
    idx = torch.randint(0, 13, (3, 10))
    state = torch.randn(m.state_layers, 3, 16, dtype=torch.float64)
    h0, c0 = state.chunk(2) if cell == "lstm" else (state, None)
    with torch.no_grad():
        logits, new = m(idx, state)
        emb = F.embedding(idx, m.embed.weight).transpose(0, 1)  # (T, B, embed)
        out, hs, cs = _by_reference(cell, emb, h0, c0, m.recurrent)
        by_hand = out.transpose(0, 1) @ m.head.weight.T + m.head.bias
    assert (logits - by_hand).abs().max().item() < TOL
    assert (new - (torch.cat([hs, cs]) if cell == "lstm" else hs)).abs().max().item() < TOL


@pytest.mark.parametrize("cell,name", [("gru", "GRU"), ("lstm", "LSTM"), ("rnn", "plain RNN (tanh)")])
def test_info_names_the_cell_and_counts_its_parameters(tmp_path, save_model, cell: str, name: str) -> None:
    """`charlm info` works its parameter count out by hand from the config; it must agree with the real model."""
    tok = CharTokenizer.from_text("abcdefg")
    model = CharLM(ModelConfig(vocab_size=tok.vocab_size, embed=5, hidden=9, layers=3, cell=cell))
    d = info.describe(ckpt_io.resolve(save_model(tmp_path / "run", model, tok)))
    assert d["model"]["parameters"] == model.num_params() and d["model"]["cell"] == cell
    assert f"model           {name}, 3 layer(s) x 9 hidden, embedding 5" in info.render(d)
