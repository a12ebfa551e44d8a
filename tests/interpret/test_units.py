"""units: the text features are computed right, and the ranking finds a unit planted to track one."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from charlm.cli import app
from charlm.config import ModelConfig
from charlm.errors import UsageError
from charlm.interpret.explain import explain, trace_gates
from charlm.interpret.units import (
    after_newline,
    find_units,
    inside_brackets,
    inside_quotes,
    line_position,
    rank_units,
    regex_feature,
    threshold_score,
    unit_states,
    word_start,
)
from charlm.model import CharGRU, CharLM
from charlm.tokenizer import CharTokenizer
from charlm.ui.explain_view import by_unit, units_table

TEXT = 'He said "go away" and (then, [maybe]) left.\nShe said "no" to him.\nAnd "so" it ended (or not).\n' * 4


def test_features() -> None:
    assert inside_quotes('a "bc" d').tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert inside_brackets("a(b[c])d)e(").tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1]
    assert line_position("ab\ncd\n").tolist() == [0, 1, 2, 0, 1, 2]
    assert word_start("hi, you2 x").tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert after_newline("a\nb\n").tolist() == [0, 1, 0, 1]
    assert regex_feature(r"^b+")("abb\nbba").tolist() == [0, 0, 0, 0, 1, 1, 0]
    with pytest.raises(UsageError, match="not a valid regular expression"):
        regex_feature("(")


def test_threshold_score() -> None:
    label = np.array([0, 0, 1, 1, 0, 1], dtype=float)
    assert threshold_score(label * 2 + 0.5, label) == 1.0
    assert threshold_score(-label, label) == 1.0  # low activation meaning "yes" counts too
    assert threshold_score(np.zeros(6), label) == 0.5  # a constant unit cannot separate anything
    rng = np.random.default_rng(0)
    big = (rng.random(4000) < 0.1).astype(float)
    assert threshold_score(rng.normal(size=4000), big) < 0.6  # rare feature, unrelated unit: near chance


def test_rank_units_finds_planted_unit_in_synthetic_activations() -> None:
    rng = np.random.default_rng(1)
    f = inside_quotes(TEXT)
    layers = [np.tanh(rng.normal(size=(len(TEXT), 12))) for _ in range(2)]
    layers[1][:, 7] = -0.8 * f + 0.1 * rng.normal(size=len(TEXT))
    best = rank_units(layers, f, top=3)
    assert (best[0].layer, best[0].unit) == (1, 7)
    assert best[0].corr < -0.9 and best[0].balanced_accuracy > 0.99
    assert abs(best[1].corr) < 0.3


def quote_model(tok: CharTokenizer, hidden: int = 6) -> CharGRU:
    """A GRU whose unit 2 flips sign at every double quote and holds its value otherwise: a built-in quote cell.

    Update gate: z = sigmoid(15) ~ 1 (keep the state) except on '"', where z = sigmoid(-15) ~ 0 (take the
    candidate). Reset gate r ~ 1. Candidate n = tanh(3 - 5 h): ~ +1 from h <= 0 and ~ -0.96 from h ~ +1.
    """
    torch.manual_seed(0)
    v = tok.vocab_size
    model = CharGRU(ModelConfig(vocab_size=v, embed=v, hidden=hidden, layers=1)).eval()
    q, u = tok.id_of('"'), 2
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(v))
        w_ih, w_hh, b_ih, b_hh = (
            model.gru.weight_ih_l0,
            model.gru.weight_hh_l0,
            model.gru.bias_ih_l0,
            model.gru.bias_hh_l0,
        )
        for w in (w_ih, w_hh, b_ih, b_hh):
            w[[u, hidden + u, 2 * hidden + u]] = 0.0  # the unit's rows of r, z and n
        w_hh[:, u] = 0.0  # no other unit reads it, so it stays clean
        b_ir, b_iz, b_in = u, hidden + u, 2 * hidden + u
        b_ih[b_ir] = 20.0
        b_ih[b_iz], w_ih[b_iz, q] = 15.0, -30.0
        b_ih[b_in], w_hh[2 * hidden + u, u] = 3.0, -5.0
    return model


def test_units_finds_the_quote_cell_of_a_real_gru() -> None:
    tok = CharTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    h = [g.h for g in trace_gates(quote_model(tok), ids)]
    found = find_units(TEXT, h, regex=r"\(.*?\)", top=3)
    quotes = found["inside_quotes"]
    assert (quotes[0].layer, quotes[0].unit) == (0, 2)
    assert quotes[0].corr > 0.95 and quotes[0].balanced_accuracy == 1.0
    assert all(
        isinstance(found[k], list) for k in ("inside_brackets", "line_position", "word_start", "regex \\(.*?\\)")
    )
    assert find_units(TEXT[:7], [x[:7] for x in h])["inside_quotes"] == "never true in this text"


@pytest.fixture(scope="module")
def run(tmp_path_factory, save_model) -> tuple:
    tok = CharTokenizer.from_text(TEXT)
    model = quote_model(tok)
    out = tmp_path_factory.mktemp("units") / "run"
    save_model(out, model, tok)
    text = out.parent / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    return out, text


def test_cli_units(run) -> None:
    out, text = run
    res = CliRunner().invoke(app, ["units", str(out), str(text), "--json", "--regex", "said", "-q"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["inside_quotes"][0]["unit"] == 2 and doc["inside_quotes"][0]["balanced_accuracy"] == 1.0
    assert len(doc["regex said"]) == 5
    res = CliRunner().invoke(app, ["units", str(out), str(text), "-q"])
    assert res.exit_code == 0 and "inside_quotes" in res.stdout and "after_newline" in res.stdout
    res = CliRunner().invoke(app, ["units", str(out), str(text), "--regex", "(", "-q"])
    assert res.exit_code == 2 and "not a valid regular expression" in res.stderr and "Traceback" not in res.output


def test_cli_explain_unit_colours_by_activation(run) -> None:
    out, text = run
    res = CliRunner().invoke(app, ["explain", str(out), "--text", 'a "b" d', "--unit", "2", "--json", "--gates", "-q"])
    assert res.exit_code == 0, res.output
    h = [r["layers"][0]["h"][2] for r in json.loads(res.stdout)["records"]]
    assert h[3] > 0.9 and h[4] < -0.9 and abs(h[1]) < 1e-3  # inside the quotes, after them, before them
    res = CliRunner().invoke(app, ["explain", str(out), "--text", 'a "b" d', "--unit", "2", "-q"])
    assert res.exit_code == 0 and res.stdout.startswith('a "b" d\n')  # not a terminal: plain text


def test_unit_colouring_follows_the_sign_of_h() -> None:
    tok = CharTokenizer.from_text(TEXT)
    ex = explain(quote_model(tok), tok, tok.encode('a "b" d'), gates=True)
    styles = {sp.start: sp.style.bgcolor.get_truecolor() for sp in by_unit(ex, 0, 2).spans}
    assert 1 not in styles  # h ~ 0 before the quote: no colour
    r, g, b = styles[3]
    assert r > b  # inside the quotes h ~ +1: red
    r, g, b = styles[5]
    assert b > r  # after them h ~ -0.96: blue


# ---------------------------------------------------------------- the LSTM and the plain RNN


def quote_lstm(tok: CharTokenizer, hidden: int = 6) -> CharLM:
    """An LSTM whose unit 2 flips its cell state c at every double quote and holds it otherwise.

    Input gate i ~ 0 and forget gate f ~ 1 (keep c) except on '"', where i ~ 1 and f ~ 0 (replace c by g).
    Candidate g = tanh(2 - 6 h): ~ +0.96 from h ~ 0, ~ -0.99 from h ~ +0.75, ~ +1 from h ~ -0.76.
    Output gate o ~ 1, so h = tanh(c) follows c.
    """
    torch.manual_seed(0)
    v = tok.vocab_size
    model = CharLM(ModelConfig(vocab_size=v, embed=v, hidden=hidden, layers=1, cell="lstm")).eval()
    q, u = tok.id_of('"'), 2
    i, f, g, o = (k * hidden + u for k in range(4))  # the unit's rows in PyTorch's blocks [i; f; g; o]
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(v))
        w_ih, w_hh, b_ih, b_hh = (
            getattr(model.lstm, f"{n}_l0") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        for w in (w_ih, w_hh, b_ih, b_hh):
            w[[i, f, g, o]] = 0.0
        b_ih[i], w_ih[i, q] = -15.0, 30.0
        b_ih[f], w_ih[f, q] = 15.0, -30.0
        b_ih[g], w_hh[g, u] = 2.0, -6.0
        b_ih[o] = 20.0
    return model


def test_units_ranks_an_lstms_h_and_c_apart() -> None:
    tok = CharTokenizer.from_text(TEXT)
    layers = trace_gates(quote_lstm(tok), tok.encode(TEXT))
    states = unit_states(layers)
    assert list(states) == ["h", "c"] and states["c"][0].shape == (len(TEXT), 6)
    quotes = find_units(TEXT, states, top=3)["inside_quotes"]
    assert [s.state for s in quotes] == ["h", "h", "h", "c", "c", "c"]
    for best in (quotes[0], quotes[3]):
        assert (best.layer, best.unit) == (0, 2) and best.corr > 0.95 and best.balanced_accuracy == 1.0
    assert quotes[3].to_dict()["state"] == "c"
    assert abs(layers[0].c[:, 2]).max() > 0.95 and abs(layers[0].h[:, 2]).max() < 0.8  # h = tanh(c) is squashed
    con = Console(file=io.StringIO(), width=200)
    con.print(units_table(find_units(TEXT, states, top=2)))
    table = con.file.getvalue()
    assert "h, and the cell state c" in table and "state" in table
    assert re.search(r"inside_quotes\s+│\s+0 │\s+2 │\s+h │", table) and re.search(r"│\s+0 │\s+2 │\s+c │", table)


def test_units_of_a_plain_rnn_are_its_h() -> None:
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=tok.vocab_size, embed=8, hidden=6, layers=2, cell="rnn")).eval()
    layers = trace_gates(model, tok.encode(TEXT))
    states = unit_states(layers)
    assert list(states) == ["h"] and len(states["h"]) == 2
    found = find_units(TEXT, states, top=2)
    assert found == find_units(TEXT, states["h"], top=2)  # a plain list of h means the same
    assert all(s.state == "h" for v in found.values() for s in v)
    con = Console(file=io.StringIO(), width=200)
    con.print(units_table(found))
    assert "state" not in con.file.getvalue()


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_cli_units_and_explain_unit_for_each_cell(tmp_path, save_model, cell: str) -> None:
    tok = CharTokenizer.from_text(TEXT)
    model = quote_lstm(tok) if cell == "lstm" else CharLM(ModelConfig(vocab_size=tok.vocab_size, cell=cell, hidden=8))
    save_model(tmp_path / "run", model, tok)
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    res = CliRunner().invoke(app, ["units", str(tmp_path / "run"), str(tmp_path / "t.txt"), "--json", "-q"])
    assert res.exit_code == 0, res.output
    ranked = json.loads(res.stdout)["inside_quotes"]
    assert ranked[0]["state"] == "h" and (cell == "rnn" or ranked[0]["unit"] == 2)
    # the LSTM's cell state c is ranked too, labelled; a plain RNN has only h
    assert {r["state"] for r in ranked} == ({"h", "c"} if cell == "lstm" else {"h"})
    res = CliRunner().invoke(app, ["explain", str(tmp_path / "run"), "--text", 'a "b" d', "--unit", "2", "-q"])
    assert res.exit_code == 0 and res.stdout.startswith('a "b" d\n'), res.output
