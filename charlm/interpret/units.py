"""Find hidden units that track simple features of the text, such as "inside quotes" or "position in the line".

Each feature is a number per character describing the state of the text just after that character has been
read (the same moment as the hidden state h recorded for it). Units are ranked by the absolute Pearson
correlation between their activation and the feature; for yes/no features the best single-unit threshold
classifier is also scored (balanced accuracy, so a rare feature cannot score well by always saying no).

The units ranked are those of the hidden state h of every layer; for an LSTM also those of its cell state c,
ranked separately and labelled, since an LSTM can keep a fact in c while h shows little of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from charlm.errors import UsageError, param
from charlm.interpret.explain import LayerTrace

QUOTES = {'"', "\u201c", "\u201d"}
OPEN, CLOSE = "([{", ")]}"


def inside_quotes(text: str) -> np.ndarray:
    """1 while an odd number of double quotes has been read (the quote marks themselves: opening 1, closing 0)."""
    return (np.cumsum([c in QUOTES for c in text]) % 2).astype(float)


def inside_brackets(text: str) -> np.ndarray:
    """1 while more brackets have been opened than closed (round, square or curly)."""
    step = [1 if c in OPEN else -1 if c in CLOSE else 0 for c in text]
    return (_depth(step) > 0).astype(float)


def _depth(step: list[int]) -> np.ndarray:
    # A stray closing bracket cannot make the depth negative: clamp as we go (cumsum cannot clamp).
    depth, out = 0, np.zeros(len(step))
    for i, s in enumerate(step):
        depth = max(0, depth + s)
        out[i] = depth
    return out


def line_position(text: str) -> np.ndarray:
    """Column of each character in its line (0 for the first character after a newline; the newline ends a line)."""
    col, out = 0, np.zeros(len(text))
    for i, c in enumerate(text):
        out[i] = col
        col = 0 if c == "\n" else col + 1
    return out


def word_start(text: str) -> np.ndarray:
    """1 on the first letter or digit of each word."""
    return np.array([c.isalnum() and (i == 0 or not text[i - 1].isalnum()) for i, c in enumerate(text)], dtype=float)


def after_newline(text: str) -> np.ndarray:
    """1 on each newline: the state the model is in when a new line is about to begin."""
    return np.array([c == "\n" for c in text], dtype=float)


def regex_feature(pattern: str) -> Callable[[str], np.ndarray]:
    """1 on every character covered by a match of `pattern`."""
    try:
        rx = re.compile(pattern, re.MULTILINE)
    except re.error as e:
        raise UsageError(f"{param('regex')} {pattern!r}: not a valid regular expression ({e})") from None

    def feature(text: str) -> np.ndarray:
        out = np.zeros(len(text))
        for m in rx.finditer(text):
            out[m.start() : m.end()] = 1.0
        return out

    return feature


FEATURES: dict[str, Callable[[str], np.ndarray]] = {
    "inside_quotes": inside_quotes,
    "inside_brackets": inside_brackets,
    "line_position": line_position,
    "word_start": word_start,
    "after_newline": after_newline,
}


@dataclass
class UnitScore:
    layer: int
    unit: int
    corr: float  # Pearson correlation of the unit's activation with the feature (its sign says which way)
    balanced_accuracy: float | None  # best single-threshold classifier on this unit (yes/no features only)
    state: str = "h"  # which state the unit belongs to: h, or an LSTM's cell state c

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "unit": self.unit,
            "state": self.state,
            "corr": self.corr,
            "balanced_accuracy": self.balanced_accuracy,
        }


def unit_states(layers: list[LayerTrace]) -> dict[str, list[np.ndarray]]:
    """The states whose units are ranked, each one (T, H) array per layer: h, and c where the cell has one."""
    states = {"h": [t.h for t in layers]}
    if layers and layers[0].c is not None:
        states["c"] = [t.c for t in layers]
    return states


def correlations(acts: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of acts (T, U) with feature (T,); 0 for a unit that never moves."""
    a = acts - acts.mean(axis=0)
    f = feature - feature.mean()
    denom = np.sqrt((a * a).sum(axis=0) * (f * f).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * f[:, None]).sum(axis=0) / denom, 0.0)


def threshold_score(act: np.ndarray, label: np.ndarray) -> float:
    """Best balanced accuracy of `act > t` or `act < t` as a predictor of the 0/1 `label`, over all thresholds t."""
    order = np.argsort(act, kind="stable")
    y = label[order] > 0.5
    pos, neg = y.sum(), (~y).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    # Predict "yes" above the cut: true positive rate and true negative rate for each cut position.
    tpr = np.concatenate([[pos], pos - np.cumsum(y)]) / pos
    tnr = np.concatenate([[0], np.cumsum(~y)]) / neg
    # Cuts only between distinct values (a threshold cannot split equal activations).
    a = act[order]
    valid = np.concatenate([[True], a[1:] != a[:-1], [True]])
    bal = ((tpr + tnr) / 2)[valid]
    return float(max(bal.max(), (1 - bal).max()))


def rank_units(layers_h: list[np.ndarray], feature: np.ndarray, top: int = 5, state: str = "h") -> list[UnitScore]:
    """The `top` units across all layers whose activation (T, H) correlates most with `feature`."""
    acts = np.concatenate(layers_h, axis=1)
    sizes = [h.shape[1] for h in layers_h]
    corr = correlations(acts, feature)
    binary = bool(np.isin(feature, (0.0, 1.0)).all())
    out = []
    for j in np.argsort(-np.abs(corr), kind="stable")[:top]:
        layer = int(np.searchsorted(np.cumsum(sizes), j, side="right"))
        unit = int(j - sum(sizes[:layer]))
        bal = threshold_score(acts[:, j], feature) if binary else None
        out.append(UnitScore(layer, unit, float(corr[j]), bal, state))
    return out


def find_units(
    text: str, states: list[np.ndarray] | dict[str, list[np.ndarray]], regex: str | None = None, top: int = 5
) -> dict[str, list[UnitScore] | str]:
    """For each feature, its best units; a feature that never varies in `text` gets a reason instead.

    `states` is h of every layer, or (from `unit_states`) a dict naming each state: then each feature lists
    its `top` units of each state in turn.
    """
    if not isinstance(states, dict):
        states = {"h": states}
    features = dict(FEATURES)
    if regex is not None:
        features[f"regex {regex}"] = regex_feature(regex)
    out: dict[str, list[UnitScore] | str] = {}
    for name, fn in features.items():
        f = fn(text)
        if f.size == 0 or np.all(f == f[0]):
            out[name] = "never true in this text" if f.size and f[0] == 0 else "does not vary in this text"
            continue
        out[name] = [s for state, acts in states.items() for s in rank_units(acts, f, top, state)]
    return out
