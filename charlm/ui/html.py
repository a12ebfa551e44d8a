"""One self-contained HTML page showing an explanation: works offline, loads nothing from anywhere.

The text is written as one <span> per character, coloured by surprisal, so the page reads without scripts.
The data sits in the page as JSON (<script type="application/json" id="charlm-data">): characters, bits,
top-k guesses and, per layer, z, r and h. Gate values are stored as 8-bit codes in base64 (1/255 of the
gate's range: ample for colouring and reading off), because plain JSON numbers would make a page for a few
thousand characters of a 512-unit model tens of megabytes. A small inline script recolours the text by a
unit's h, z or r and shows the values under the pointer.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np

from charlm.errors import CharlmError
from charlm.interpret.explain import Explanation
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
const G = (D.layers || []).map(l => ({z: dec(l.z), r: dec(l.r), h: dec(l.h)}));
const H = D.hidden, val = (name, code) => name === 'h' ? code / 127.5 - 1 : code / 255;
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
    s.style.background = v === 'h' ? diverge(x) : diverge(2 * x - 1);
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
    t += `\nlayer ${L}: mean z ${m('z').toFixed(3)}  mean r ${m('r').toFixed(3)}` +
         `   unit ${K}: h ${u('h')}  z ${u('z')}  r ${u('r')}`;
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


def page_data(ex: Explanation, title: str, unit: tuple[int, int] | None = None) -> dict:
    """Everything the page shows, as one JSON-ready dict."""
    layers = ex.layers or []
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
        "layers": [{"z": _codes(g.z, 0, 1), "r": _codes(g.r, 0, 1), "h": _codes(g.h, -1, 1)} for g in layers],
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
        for v, label in (("bits", "surprisal"), ("h", "unit state h"), ("z", "update gate z"), ("r", "reset gate r"))
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
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{bpc}. Redder means more surprising; "
        f"hover over a character for the model's guesses and gate values.</p>{_controls(data)}"
        f'<div id="text">{body}</div><div id="tip"></div>'
        f'<script type="application/json" id="charlm-data">{blob}</script>{script}</body></html>\n'
    )


def write(path: Path, page: str) -> None:
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise CharlmError(f"--html {path}: cannot write it ({e.strerror or e})") from None
