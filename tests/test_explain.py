"""explain: the gate values shown are the model's own, surprisal agrees with evaluate, the HTML page holds the data."""

from __future__ import annotations

import base64
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
from typer.testing import CliRunner

from charlm import checkpoint as ckpt_io
from charlm.cli import app
from charlm.config import ModelConfig, TrainConfig
from charlm.inference.evaluate import score_ids
from charlm.interpret.explain import (
    LayerGates,
    explain,
    records,
    saturation,
    saturation_summary,
    surprising_spans,
    trace_gates,
)
from charlm.model import CharGRU
from charlm.tokenizer import CharTokenizer
from charlm.ui.html import render

TEXT = 'She said "to be (or not) to be", and then\nhe said "that is the question".\n' * 3


def tiny_model(vocab: int, layers: int = 2, hidden: int = 16, seed: int = 0) -> CharGRU:
    torch.manual_seed(seed)
    return CharGRU(ModelConfig(vocab_size=vocab, embed=8, hidden=hidden, layers=layers)).eval()


@pytest.fixture(scope="module")
def setup() -> tuple[CharGRU, CharTokenizer, np.ndarray]:
    tok = CharTokenizer.from_text(TEXT)
    return tiny_model(tok.vocab_size), tok, tok.encode(TEXT)


def test_reference_trace_equals_nn_gru_float64(setup) -> None:
    _, tok, ids = setup
    model = tiny_model(tok.vocab_size, layers=2).double()
    layers = trace_gates(model, ids)
    with torch.no_grad():
        out, h_n = model.gru(model.embed(torch.as_tensor(ids)[None]))
    # Every step of the top layer (which reads every step of the layer below) and each layer's last state.
    assert np.abs(layers[-1].h - out[0].numpy()).max() < 1e-10
    for i, g in enumerate(layers):
        assert np.abs(g.h[-1] - h_n[i, 0].numpy()).max() < 1e-10
    # The trace really ran on these weights: perturbing one weight changes it.
    with torch.no_grad():
        model.gru.weight_hh_l1[0, 0] += 0.5
    assert np.abs(trace_gates(model, ids)[-1].h - layers[-1].h).max() > 1e-6


def test_trace_of_a_float32_model_matches_its_own_forward(setup) -> None:
    model, _, ids = setup
    layers = trace_gates(model, ids)
    assert layers[0].z.dtype == np.float64 and len(layers) == 2 and layers[0].h.shape == (len(ids), 16)
    with torch.no_grad():
        out, _ = model.gru(model.embed(torch.as_tensor(ids)[None]))
    assert np.abs(layers[-1].h - out[0].double().numpy()).max() < 1e-5
    assert ((layers[0].z > 0) & (layers[0].z < 1) & (layers[1].r > 0) & (layers[1].r < 1)).all()


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
    rows = saturation_summary([LayerGates(z=gate, r=1 - gate, h=gate)])
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
    assert recs[5]["layers"][1]["z"] == pytest.approx(ex.layers[1].z[5], abs=1e-4)
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
    assert np.abs(z1 - ex.layers[1].z).max() <= 0.5 / 255 + 1e-12
    h0 = np.frombuffer(base64.b64decode(data["layers"][0]["h"]), dtype=np.uint8).reshape(len(ids), 16) / 127.5 - 1
    assert np.abs(h0 - ex.layers[0].h).max() <= 1 / 255 + 1e-12


_DOM_STUB = """
const els = {};
function el(id) {
  return els[id] || (els[id] = {id, style: {}, value: {view: 'h', layer: '1', unit: '5'}[id] || '', textContent: '',
    offsetWidth: 100, offsetHeight: 50, on: {}, addEventListener(k, f) { this.on[k] = f; }});
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


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_html_script_colours_and_shows_gate_values(setup, tmp_path) -> None:
    """Run the page's own script under node against a minimal stand-in for the page's elements."""
    model, tok, ids = setup
    ex = explain(model, tok, ids, top_k=3)
    page = render(ex, unit=(1, 5))
    p = _Page()
    p.feed(page)
    script = page.rsplit("<script>", 1)[1].split("</script>")[0]
    stub = _DOM_STUB.replace("__DATA__", json.dumps(p.data)).replace("__N__", str(len(ids)))
    (tmp_path / "t.js").write_text(stub + script + _DOM_CHECK, encoding="utf-8")
    res = subprocess.run(["node", str(tmp_path / "t.js")], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
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
def run(tmp_path_factory, setup) -> Path:
    """A run folder holding one checkpoint of the tiny 2-layer model (saved directly: no training needed)."""
    model, tok, _ = setup
    out = tmp_path_factory.mktemp("explain") / "run"
    meta = {"model": model.config.to_dict(), "train": TrainConfig().to_dict(), "vocab": tok.to_dict(), "step": 1}
    ckpt_io.save(out, meta, model.state_dict(), {})
    return out


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
        (["--text", "to be", "--html", str(tmp_path / "no" / "p.html")], "cannot write it"),
        (["--text", "zzz~"], "never saw"),
    ]:
        res = invoke("explain", str(run), *args, "-q")
        assert res.exit_code != 0 and needle in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.output
    res = invoke("explain", "-q")
    assert res.exit_code == 2 and "give [CHECKPOINT] FILE" in res.stderr
