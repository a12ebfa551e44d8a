"""explain: the gate values shown are the model's own, for each cell; surprisal agrees with evaluate; the HTML
page holds the data."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from charlm import checkpoint as ckpt_io
from charlm.cli import app
from charlm.config import ModelConfig
from charlm.inference.evaluate import score_ids
from charlm.interpret.explain import (
    LayerTrace,
    explain,
    records,
    saturation,
    saturation_summary,
    surprising_spans,
    trace_gates,
)
from charlm.model import CharLM
from charlm.tokenizer import CharTokenizer
from charlm.ui.explain_view import gates_table
from charlm.ui.html import page_data, render

TEXT = 'She said "to be (or not) to be", and then\nhe said "that is the question".\n' * 3


def tiny_model(vocab: int, layers: int = 2, hidden: int = 16, seed: int = 0, cell: str = "gru") -> CharLM:
    torch.manual_seed(seed)
    return CharLM(ModelConfig(vocab_size=vocab, embed=8, hidden=hidden, layers=layers, cell=cell)).eval()


@pytest.fixture(scope="module")
def setup() -> tuple[CharLM, CharTokenizer, np.ndarray]:
    tok = CharTokenizer.from_text(TEXT)
    return tiny_model(tok.vocab_size), tok, tok.encode(TEXT)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_reference_trace_equals_the_module_float64(setup, cell: str) -> None:
    _, tok, ids = setup
    model = tiny_model(tok.vocab_size, layers=2, cell=cell).double()
    layers = trace_gates(model, ids)
    with torch.no_grad():
        out, state = model.recurrent(model.embed(torch.as_tensor(ids)[None]))
    h_n, c_n = state if cell == "lstm" else (state, None)
    # Every step of the top layer (which reads every step of the layer below) and each layer's last state.
    assert np.abs(layers[-1].h - out[0].numpy()).max() < 1e-10
    for i, g in enumerate(layers):
        assert g.h.shape == (len(ids), 16) and np.abs(g.h[-1] - h_n[i, 0].numpy()).max() < 1e-10
        if c_n is not None:  # the cell state the trace shows is the one nn.LSTM carries
            assert np.abs(g.c[-1] - c_n[i, 0].numpy()).max() < 1e-10
    # The trace really ran on these weights: perturbing one weight changes it.
    with torch.no_grad():
        model.recurrent.weight_hh_l1[0, 0] += 0.5
    assert np.abs(trace_gates(model, ids)[-1].h - layers[-1].h).max() > 1e-6


def test_trace_of_a_float32_model_matches_its_own_forward(setup) -> None:
    model, _, ids = setup
    layers = trace_gates(model, ids)
    assert layers[0].gates["z"].dtype == np.float64 and len(layers) == 2 and layers[0].h.shape == (len(ids), 16)
    with torch.no_grad():
        out, _ = model.gru(model.embed(torch.as_tensor(ids)[None]))
    assert np.abs(layers[-1].h - out[0].double().numpy()).max() < 1e-5
    z0, r1 = layers[0].gates["z"], layers[1].gates["r"]
    assert ((z0 > 0) & (z0 < 1) & (r1 > 0) & (r1 < 1)).all()
    assert list(layers[0].gates) == ["z", "r"] and layers[0].c is None and layers[0].g is None


def test_surprisal_sums_to_evaluate_total(setup) -> None:
    model, tok, ids = setup
    ex = explain(model, tok, ids, top_k=3, gates=False)
    ev = score_ids(model, ids, streams=1)
    assert math.isnan(ex.bits[0]) and ex.scored == ev.chars == len(ids) - 1
    assert ex.total_bits * math.log(2) == pytest.approx(ev.nats, rel=1e-5)
    assert ex.bits_per_char == pytest.approx(ev.bits_per_char, rel=1e-5)
    # Each character's surprisal is -log2 of the probability the model gave it.
    probs = torch.softmax(model(torch.as_tensor(ids)[None])[0][0], -1).detach().numpy()
    i = 17
    assert ex.bits[i] == pytest.approx(-np.log2(probs[i - 1, ids[i]]), rel=1e-4)
    assert ex.top_chars[i][0] == tok.chars[int(probs[i - 1].argmax())]
    assert list(ex.top_probs[i]) == sorted(ex.top_probs[i], reverse=True)


def test_saturation_fractions_on_constructed_gates() -> None:
    gate = np.array([[0.05, 0.5, 0.95], [0.95, 0.5, 0.95], [0.05, 0.95, 0.99], [0.5, 0.99, 0.1]])
    s = saturation(gate)
    np.testing.assert_allclose(s.left, [0.5, 0.0, 0.0])  # 0.1 itself is not below 0.1
    np.testing.assert_allclose(s.right, [0.25, 0.5, 0.75])
    rows = saturation_summary([LayerTrace(h=gate, gates={"z": gate, "r": 1 - gate})])
    z, r = rows
    assert (z["gate"], r["gate"]) == ("z", "r")
    assert z["left"] == pytest.approx(0.5 / 3) and z["right"] == pytest.approx(1.5 / 3)
    assert (z["units_mostly_right"], z["units_mostly_left"], r["units_mostly_left"]) == (1, 0, 1)
    assert z["units_never_saturated"] == 0


def test_surprising_spans_pick_the_worst_windows() -> None:
    bits = np.full(40, 0.1)
    bits[0] = np.nan
    bits[10:13] = 5.0
    bits[30] = 9.0
    spans = surprising_spans(bits, width=4, count=2)
    assert len(spans) == 2 and spans[0][2] == pytest.approx(15.1)
    assert spans[0][0] <= 10 and spans[0][1] >= 13 and spans[1][0] <= 30 < spans[1][1]


def test_records_hold_gates_per_layer(setup) -> None:
    model, tok, ids = setup
    ex = explain(model, tok, ids[:20], top_k=2)
    recs = records(ex, with_gates=True)
    assert recs[0]["bits"] is None and recs[0]["top"] == []
    assert recs[5]["char"] == TEXT[5] and len(recs[5]["top"]) == 2 and len(recs[5]["layers"]) == 2
    assert recs[5]["layers"][1]["z"] == pytest.approx(ex.layers[1].gates["z"][5], abs=1e-4)
    assert list(recs[5]["layers"][0]) == ["z", "r", "h"]
    assert "layers" not in records(ex)[5]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.spans, self.data, self.urls, self._in = 0, "", [], None

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        self.spans += tag == "span" and "data-i" in a
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self._in = a.get("id") if tag == "script" else None

    def handle_data(self, data) -> None:
        if self._in == "charlm-data":
            self.data += data


def test_html_parses_and_holds_the_data(setup) -> None:
    model, tok, ids = setup
    ex = explain(model, tok, ids, top_k=3)
    page = render(ex, "test </script> page", unit=(1, 4))
    p = _Page()
    p.feed(page)
    assert p.spans == len(ids) and p.urls == []
    assert "http://" not in page and "https://" not in page
    data = json.loads(p.data)
    assert "".join(data["chars"]) == TEXT and data["unit"] == [1, 4]
    assert data["bits"][0] is None and data["bits"][9] == pytest.approx(ex.bits[9], abs=1e-4)
    assert data["top"][9][0][0] == ex.top_chars[9][0]
    z1 = np.frombuffer(base64.b64decode(data["layers"][1]["z"]), dtype=np.uint8).reshape(len(ids), 16) / 255
    assert np.abs(z1 - ex.layers[1].gates["z"]).max() <= 0.5 / 255 + 1e-12
    h0 = np.frombuffer(base64.b64decode(data["layers"][0]["h"]), dtype=np.uint8).reshape(len(ids), 16) / 127.5 - 1
    assert np.abs(h0 - ex.layers[0].h).max() <= 1 / 255 + 1e-12


_DOM_STUB = """
const els = {};
function el(id) {
  return els[id] || (els[id] = {id, style: {}, value: {view: '__VIEW__', layer: '1', unit: '5'}[id] || '',
    textContent: '', offsetWidth: 100, offsetHeight: 50, on: {}, addEventListener(k, f) { this.on[k] = f; }});
}
el('charlm-data').textContent = __DATA__;
const SP = Array.from({length: __N__}, (_, i) => ({dataset: {i: String(i)}, style: {}}));
global.document = {getElementById: el, querySelectorAll: () => SP};
global.innerWidth = 1000; global.innerHeight = 800;
global.atob = s => Buffer.from(s, 'base64').toString('binary');
"""
_DOM_CHECK = """
const unitView = SP.map(s => s.style.background);
el('text').on.mouseover({target: SP[3], clientX: 10, clientY: 10});
const tipText = el('tip').textContent;
el('view').value = 'bits'; el('view').on.input();
console.log(JSON.stringify({unitView, tip: tipText, bitsView: SP.map(s => s.style.background)}));
"""


def _run_page_script(page: str, n: int, view: str, tmp_path: Path) -> dict:
    """Run the page's own script under node, with `view` chosen, against a minimal stand-in for its elements."""
    p = _Page()
    p.feed(page)
    script = page.rsplit("<script>", 1)[1].split("</script>")[0]
    stub = _DOM_STUB.replace("__DATA__", json.dumps(p.data)).replace("__N__", str(n)).replace("__VIEW__", view)
    (tmp_path / "t.js").write_text(stub + script + _DOM_CHECK, encoding="utf-8")
    res = subprocess.run(["node", str(tmp_path / "t.js")], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_html_script_colours_and_shows_gate_values(setup, tmp_path) -> None:
    """Run the page's own script under node against a minimal stand-in for the page's elements."""
    model, tok, ids = setup
    ex = explain(model, tok, ids, top_k=3)
    page = render(ex, unit=(1, 5))
    out = _run_page_script(page, len(ids), "h", tmp_path)
    h = ex.layers[1].h[:, 5]
    assert all(("220,50,40" if v >= 0 else "40,90,220") in c for v, c in zip(h, out["unitView"], strict=True))
    tip = out["tip"]
    assert float(re.search(r"([0-9.]+) bits", tip).group(1)) == pytest.approx(ex.bits[3], abs=0.006)
    assert json.dumps(ex.top_chars[3][0]) in tip.split("model expected:")[1]
    shown = [float(v) for v in re.findall(r"unit 5: h (-?[0-9.]+)", tip)]
    assert shown == pytest.approx([g.h[3, 5] for g in ex.layers], abs=0.006) and "layer 1: mean z" in tip
    assert out["bitsView"][0] == "" and out["bitsView"][5].startswith("rgba(230,40,30,")


def _png_pixels(png: bytes) -> bytes:
    """The decompressed scanlines of a PNG (filter bytes included): enough to tell a blank page from a drawn one."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat = 8, b""
    while i < len(png):
        n = int.from_bytes(png[i : i + 4], "big")
        if png[i + 4 : i + 8] == b"IDAT":
            idat += png[i + 8 : i + 8 + n]
        i += 12 + n
    return zlib.decompress(idat)


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="/usr/bin/chromium is not installed")
def test_html_screenshot_is_not_blank(setup, tmp_path) -> None:
    model, tok, ids = setup
    page = tmp_path / "page.html"
    page.write_text(render(explain(model, tok, ids)), encoding="utf-8")
    shot = tmp_path / "shot.png"
    cmd = ["/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}"]
    subprocess.run([*cmd, "--window-size=900,600", page.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    # A blank page is one colour: its scanlines (even after PNG filtering) hold only a few distinct byte values.
    assert len(set(_png_pixels(shot.read_bytes()))) > 16


# ---------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def run(tmp_path_factory, setup, save_model) -> Path:
    """A run folder holding one checkpoint of the tiny 2-layer model (saved directly: no training needed)."""
    model, tok, _ = setup
    out = tmp_path_factory.mktemp("explain") / "run"
    return save_model(out, model, tok)


def test_trace_runs_on_the_checkpoints_own_weights(run, setup) -> None:
    model, tok, ids = setup
    loaded, tok2 = ckpt_io.load_model(ckpt_io.resolve(run))
    assert tok2.chars == tok.chars
    ours = trace_gates(loaded, ids)
    with torch.no_grad():
        out, _ = model.gru(model.embed(torch.as_tensor(ids)[None]))
    assert np.abs(ours[-1].h - out[0].double().numpy()).max() < 1e-5


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_explain_plain_text_and_summary(run, tmp_path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be\n", encoding="utf-8")
    res = invoke("explain", str(run), str(text), "--at", "3", "--gates", "-q")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("to be or not to be\n")  # not a terminal: the text, uncoloured
    assert "bits/char over 18 predicted characters" in res.stdout
    assert "position 3" in res.stdout and "gate saturation" in res.stdout
    assert "\x1b[" not in res.stdout


def test_cli_explain_json_and_html(run, tmp_path) -> None:
    page = tmp_path / "p.html"
    res = invoke("explain", str(run), "--text", 'she "is"', "--json", "--gates", "--html", str(page), "-q")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [r["char"] for r in doc["records"]] == list('she "is"')
    assert len(doc["records"][3]["layers"]) == 2 and len(doc["records"][3]["layers"][0]["h"]) == 16
    assert len(doc["saturation"]) == 4 and doc["chars"] == 7
    assert "charlm-data" in page.read_text(encoding="utf-8")


def test_cli_explain_unit_and_usage_errors(run, tmp_path) -> None:
    res = invoke("explain", str(run), "--text", "to be", "--unit", "3", "-q")
    assert res.exit_code == 0 and res.stdout.startswith("to be")
    for args, needle in [
        (["--text", "to be", "--unit", "16"], "--unit must be in 0..15"),
        (["--text", "to be", "--at", "0"], "--at must be in 1..4"),
        (["--text", "to be", "--layer", "2", "--unit", "0"], "--layer must be in 0..1"),
        ([str(tmp_path / "missing.txt")], "no such file"),
        (["--text", "to be", "--html", str(tmp_path / "no" / "p.html")], "there is no folder"),
        (["--text", "zzz~"], "never saw"),
    ]:
        res = invoke("explain", str(run), *args, "-q")
        assert res.exit_code != 0 and needle in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.output
    res = invoke("explain", "-q")
    assert res.exit_code == 2 and "give [CHECKPOINT] FILE" in res.stderr


# ---------------------------------------------------------------- the LSTM and the plain RNN

OTHER_CELLS = ["lstm", "rnn"]


@pytest.fixture(scope="module", params=OTHER_CELLS)
def other(request) -> tuple[CharLM, CharTokenizer, np.ndarray]:
    tok = CharTokenizer.from_text(TEXT)
    return tiny_model(tok.vocab_size, cell=request.param), tok, tok.encode(TEXT)


def test_each_cell_shows_its_own_gates(other) -> None:
    model, tok, ids = other
    t = trace_gates(model, ids)[1]
    if model.config.cell == "rnn":
        assert t.gates == {} and t.c is None and t.g is None and list(t.values()) == ["h"]
        return
    assert list(t.gates) == ["i", "f", "o"] and list(t.values()) == ["i", "f", "o", "g", "h", "c"]
    assert all(((v > 0) & (v < 1)).all() for v in t.gates.values())
    assert (np.abs(t.g) < 1).all() and np.abs(t.gates["o"] * np.tanh(t.c) - t.h).max() < 1e-12
    # each gate in its role: the cell state (which matches nn.LSTM's) is f * c + i * g, from a zero c
    c_before = np.vstack([np.zeros((1, 16)), t.c[:-1]])
    assert np.abs(t.gates["f"] * c_before + t.gates["i"] * t.g - t.c).max() < 1e-12


def _table_text(table) -> str:
    con = Console(file=io.StringIO(), width=200)
    con.print(table)
    return con.file.getvalue()


def test_saturation_rows_and_table_follow_the_cell(other) -> None:
    model, tok, ids = other
    layers = trace_gates(model, ids)
    rows = saturation_summary(layers)
    text = _table_text(gates_table(rows))
    if model.config.cell == "rnn":
        assert rows == [] and "no gates: a plain RNN has none" in text
        return
    assert [(r["layer"], r["gate"], r["kind"]) for r in rows[:4]] == [
        (0, "i", "gate"),
        (0, "f", "gate"),
        (0, "o", "gate"),
        (0, "g", "candidate"),
    ]
    assert len(rows) == 8 and "g, the cell candidate, is not a gate" in text
    g = layers[1].g
    assert rows[7]["left"] == pytest.approx((g < -0.8).mean()) and rows[7]["right"] == pytest.approx((g > 0.8).mean())
    # the candidate sits below the gates, in a section of its own
    lines = text.splitlines()
    gate_of = [(i, re.match(r"│\s+\d+ │\s+(\w) │", x)) for i, x in enumerate(lines)]
    at = {m.group(1): i for i, m in gate_of if m}  # the last line of each gate
    assert at["o"] < at["g"] - 1 and "┼" in lines[at["g"] - 2]


def test_records_and_page_hold_each_cells_values(other) -> None:
    model, tok, ids = other
    ex = explain(model, tok, ids, top_k=2)
    assert ex.cell == model.config.cell
    names = ["i", "f", "o", "g", "h", "c"] if ex.cell == "lstm" else ["h"]
    assert list(records(ex, with_gates=True)[5]["layers"][1]) == names
    data = page_data(ex, "t")
    fields = {f["name"]: f for f in data["fields"]}
    assert list(fields) == (["h", "c", "i", "f", "o", "g"] if ex.cell == "lstm" else ["h"])
    assert set(data["layers"][1]) == set(names)
    page = render(ex)
    for f in fields.values():
        assert f'<option value="{f["name"]}">{f["label"]}</option>' in page
        codes = np.frombuffer(base64.b64decode(data["layers"][1][f["name"]]), dtype=np.uint8)
        decoded = f["lo"] + codes.reshape(len(ids), 16) / 255 * (f["hi"] - f["lo"])
        want = ex.layers[1].values()[f["name"]]
        assert np.abs(decoded - want).max() <= (f["hi"] - f["lo"]) / 510 + 1e-12, f["name"]
    if ex.cell == "lstm":
        assert fields["c"]["hi"] == -fields["c"]["lo"] == max(np.abs(t.c).max() for t in ex.layers)
        assert "cell candidate g (not a gate)" in page


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_html_script_for_each_cell(other, tmp_path) -> None:
    model, tok, ids = other
    ex = explain(model, tok, ids, top_k=3)
    view = "c" if ex.cell == "lstm" else "h"
    out = _run_page_script(render(ex, unit=(1, 5)), len(ids), view, tmp_path)
    v = ex.layers[1].values()[view][:, 5]
    assert all(("220,50,40" if x >= 0 else "40,90,220") in c for x, c in zip(v, out["unitView"], strict=True))
    shown = [float(x) for x in re.findall(r"unit 5: h (-?[0-9.]+)", out["tip"])]
    assert shown == pytest.approx([t.h[3, 5] for t in ex.layers], abs=0.006)
    if ex.cell == "lstm":
        mean_f = float(re.search(r"layer 1: mean i [0-9.]+  mean f ([0-9.]+)  mean o", out["tip"]).group(1))
        assert mean_f == pytest.approx(ex.layers[1].gates["f"][3].mean(), abs=0.003)
        c = [float(x) for x in re.findall(r"unit 5: h -?[0-9.]+  c (-?[0-9.]+)", out["tip"])]
        assert c == pytest.approx([t.c[3, 5] for t in ex.layers], abs=0.01)
    else:
        assert "mean" not in out["tip"] and "layer 1: unit 5: h " in out["tip"]


def test_cli_explain_gates_of_each_cell(other, tmp_path, save_model) -> None:
    model, tok, _ = other
    save_model(tmp_path / "run", model, tok)
    res = invoke("explain", str(tmp_path / "run"), "--text", 'she "is"', "--json", "--gates", "-q")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    lstm = model.config.cell == "lstm"
    assert len(doc["saturation"]) == (8 if lstm else 0)
    assert list(doc["records"][3]["layers"][0]) == (["i", "f", "o", "g", "h", "c"] if lstm else ["h"])
    res = invoke("explain", str(tmp_path / "run"), "--text", 'she "is"', "--gates", "--unit", "3", "-q")
    assert res.exit_code == 0 and ("not a gate" if lstm else "no gates") in res.stdout, res.output
