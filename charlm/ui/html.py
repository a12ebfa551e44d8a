"""One self-contained HTML page showing an explanation: works offline, loads nothing from anywhere.

The text is written as one <span> per character, coloured by surprisal, so the page reads without scripts.
The data sits in the page as JSON (<script type="application/json" id="charlm-data">): characters, bits,
top-k guesses and, per layer, the cell's gates and states (GRU: z, r, h; LSTM: i, f, g, o, h, c; plain RNN:
h), described by "fields" (name, label, range). The values are stored as 8-bit codes in base64 (1/255 of the
value's range: ample for colouring and reading off), because plain JSON numbers would make a page for a few
thousand characters of a 512-unit model tens of megabytes. A small inline script recolours the text by any
one unit's value and shows the values under the pointer.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from charlm import outfile
from charlm.errors import param
from charlm.interpret.explain import LABELS, Explanation, LayerTrace
from charlm.ui.explain_view import MAX_BITS

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fff;color:#111}
#text{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.6;font-size:15px}
#text span{padding:1px 0}
#tip{position:fixed;display:none;background:#fffef4;border:1px solid #888;padding:6px 9px;font:12px monospace;
white-space:pre;box-shadow:2px 2px 6px #0003;pointer-events:none;z-index:2}
.bar{margin:.6em 0 1em 0}
"""

_SCRIPT = r"""
const D = JSON.parse(document.getElementById('charlm-data').textContent);
const spans = document.querySelectorAll('#text span');
const dec = s => Uint8Array.from(atob(s), c => c.charCodeAt(0));
const F = D.fields || [], R = Object.fromEntries(F.map(f => [f.name, f]));
const G = (D.layers || []).map(l => Object.fromEntries(F.map(f => [f.name, dec(l[f.name])])));
const H = D.hidden, val = (name, code) => R[name].lo + code / 255 * (R[name].hi - R[name].lo);
const signed = (name, x) => (2 * x - R[name].lo - R[name].hi) / (R[name].hi - R[name].lo);  // onto [-1, 1]
const view = document.getElementById('view'), lay = document.getElementById('layer'),
      unit = document.getElementById('unit'), tip = document.getElementById('tip');
function heat(b){ if (b === null) return ''; const a = Math.min(1, b / D.max_bits);
  return `rgba(230,40,30,${(0.85 * a).toFixed(3)})`; }
function diverge(v){ const a = Math.min(1, Math.abs(v));
  return v >= 0 ? `rgba(220,50,40,${(0.85*a).toFixed(3)})` : `rgba(40,90,220,${(0.85*a).toFixed(3)})`; }
function paint(){
  const v = view ? view.value : 'bits', L = lay ? +lay.value : 0, K = unit ? +unit.value : 0;
  spans.forEach((s, i) => {
    if (v === 'bits' || !G.length) { s.style.background = heat(D.bits[i]); return; }
    const x = val(v, G[L][v][i * H + K]);
    s.style.background = diverge(signed(v, x));
  });
}
function show(e){
  const i = +e.target.dataset.i; if (isNaN(i)) return;
  const c = JSON.stringify(D.chars[i]);
  let t = `#${i} ${c}  ` + (D.bits[i] === null ? '(first character: not predicted)' : `${D.bits[i].toFixed(2)} bits`);
  if (D.top[i].length) t += '\nmodel expected:\n' + D.top[i].map(([ch, p]) =>
      `  ${JSON.stringify(ch).padEnd(6)} ${(100 * p).toFixed(1).padStart(5)}%`).join('\n');
  G.forEach((g, L) => {
    const m = n => { let s = 0; for (let k = 0; k < H; k++) s += val(n, g[n][i * H + k]); return s / H; };
    const K = unit ? +unit.value : 0, u = n => val(n, g[n][i * H + K]).toFixed(3);
    const means = F.filter(f => f.gate).map(f => `mean ${f.name} ${m(f.name).toFixed(3)}`).join('  ');
    t += `\nlayer ${L}: ` + (means ? means + '   ' : '') +
         `unit ${K}: ` + F.map(f => `${f.name} ${u(f.name)}`).join('  ');
  });
  tip.textContent = t; tip.style.display = 'block';
  tip.style.left = Math.min(e.clientX + 14, innerWidth - tip.offsetWidth - 8) + 'px';
  tip.style.top = (e.clientY + 18 + tip.offsetHeight > innerHeight ? e.clientY - tip.offsetHeight - 10
                   : e.clientY + 18) + 'px';
}
document.getElementById('text').addEventListener('mouseover', show);
document.getElementById('text').addEventListener('mouseout', () => tip.style.display = 'none');
[view, lay, unit].filter(Boolean).forEach(el => el.addEventListener('input', paint));
paint();
"""


def _codes(a: np.ndarray, lo: float, hi: float) -> str:
    q = np.clip(np.rint((a - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def _fields(layers: list[LayerTrace]) -> list[dict]:
    """What each layer holds, in the order the page lists it (h, c, the gates, g), with each value's range."""
    if not layers:
        return []
    first, held = layers[0], layers[0].values()
    # The LSTM's cell state is unbounded: one symmetric range for all layers, set by its largest value.
    c_max = max((float(np.abs(t.c).max()) for t in layers if t.c is not None), default=1.0) or 1.0
    ranges = {"h": (-1.0, 1.0), "c": (-c_max, c_max), **{n: (0.0, 1.0) for n in first.gates}, "g": (-1.0, 1.0)}
    return [
        {"name": n, "label": LABELS[n], "lo": lo, "hi": hi, "gate": n in first.gates}
        for n, (lo, hi) in ranges.items()
        if n in held
    ]


def page_data(ex: Explanation, title: str, unit: tuple[int, int] | None = None) -> dict:
    """Everything the page shows, as one JSON-ready dict."""
    layers = ex.layers or []
    fields = _fields(layers)
    return {
        "title": title,
        "chars": ex.chars,
        "bits": [None if i == 0 or math.isnan(b) else round(float(b), 4) for i, b in enumerate(ex.bits)],
        "top": [
            [[c, round(float(p), 4)] for c, p in zip(cs, ps, strict=False)]
            for cs, ps in zip(ex.top_chars, ex.top_probs, strict=True)
        ],
        "bits_per_char": ex.bits_per_char if ex.scored else None,
        "max_bits": MAX_BITS,
        "hidden": int(layers[0].h.shape[1]) if layers else 0,
        "fields": fields,
        "layers": [{f["name"]: _codes(t.values()[f["name"]], f["lo"], f["hi"]) for f in fields} for t in layers],
        "unit": list(unit) if unit else None,
    }


def _span(i: int, ch: str, bits: float | None) -> str:
    alpha = 0.0 if bits is None else 0.85 * min(1.0, bits / MAX_BITS)
    style = f' style="background:rgba(230,40,30,{alpha:.3f})"' if alpha else ""
    return f'<span data-i="{i}"{style}>{html.escape(ch)}</span>'


def _controls(data: dict) -> str:
    if not data["layers"]:
        return ""
    layer, unit = data["unit"] or (len(data["layers"]) - 1, 0)
    view = "h" if data["unit"] else "bits"
    opts = "".join(
        f'<option value="{v}"{" selected" if v == view else ""}>{label}</option>'
        for v, label in [("bits", "surprisal")] + [(f["name"], f["label"]) for f in data["fields"]]
    )
    lays = "".join(
        f'<option value="{i}"{" selected" if i == layer else ""}>{i}</option>' for i in range(len(data["layers"]))
    )
    return (
        f'<div class="bar">colour by <select id="view">{opts}</select> layer <select id="layer">{lays}</select> '
        f'unit <input id="unit" type="number" min="0" max="{data["hidden"] - 1}" value="{unit}"></div>'
    )


def render(ex: Explanation, title: str = "charlm explain", unit: tuple[int, int] | None = None) -> str:
    """The whole page as a string."""
    data = page_data(ex, title, unit)
    # "</" inside a script element would end it early; JSON allows "<\/" for the same string.
    blob = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    bpc = f"{data['bits_per_char']:.4f} bits/char over {ex.scored} predicted characters" if ex.scored else ""
    body = "".join(_span(i, c, b) for i, (c, b) in enumerate(zip(data["chars"], data["bits"], strict=True)))
    script = f"<script>{_SCRIPT}</script>"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{outfile.HTML_MARK}'
        f"<title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{bpc}. Redder means more surprising; "
        f"hover over a character for the model's guesses and its units' values.</p>{_controls(data)}"
        f'<div id="text">{body}</div><div id="tip"></div>'
        f'<script type="application/json" id="charlm-data">{blob}</script>{script}</body></html>\n'
    )


def write(path: Path, page: str) -> None:
    """Write the page whole (charlm.outfile: a temporary file renamed over the target); check_file first."""
    outfile.write_file(path, page, option=param("html"))
