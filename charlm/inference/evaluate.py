"""Scoring text with a trained model: loss in nats per character, bits per character and perplexity, for a whole
text or for each of its lines on its own."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.inference.scores import Score
from charlm.inference.threads import cpu_threads, run_shares, split
from charlm.model import CharGRU
from charlm.tokenizer import CharTokenizer

EvalResult = Score  # the name a whole text's score had before the Python API named it


def score_ids(
    model: CharGRU,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    streams: int = 64,
    burn_in: int = 128,
    chunk: int | None = None,
) -> Score:
    """Score ids[1:] given what precedes each, in up to `streams` segments run side by side.

    Running segments in parallel is what makes scoring fast, but a segment started from a zero state would
    score its first characters without context. So each segment first reads the `burn_in` characters before
    it, unscored, and only the first segment (which has nothing before it) starts cold, exactly as a single
    pass would. Rows are padded at the end only, so padding never touches a scored prediction.
    On a CPU the segments are shared among torch's threads, one share each (see `charlm.inference.threads`).
    `chunk` characters are read per call, by default 64 on a CPU, where that keeps a call's intermediate
    results in cache (measured on one thread, the default model: 72% of the matmul peak, against 57% at 512),
    and 512 elsewhere, where each call costs kernel launches.
    """
    n_pred = len(ids) - 1
    if n_pred < 1:
        return Score(0, 0.0)
    was_training = model.training
    model.eval()
    x, y, mask = (torch.from_numpy(a).to(device) for a in _segments(ids, streams, burn_in))
    chunk = chunk or (64 if x.device.type == "cpu" else 512)
    try:
        parts = split(len(x), cpu_threads(device))
        nats = run_shares(lambda rows: _nats(model, x[rows], y[rows], mask[rows], chunk), parts, len(parts))
    finally:
        model.train(was_training)
    return Score(int(mask.sum()), float(sum(nats)))


def _segments(ids: np.ndarray, streams: int, burn_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, targets and the mask of scored positions, one row per segment (see `score_ids`)."""
    n_pred = len(ids) - 1
    seg = math.ceil(n_pred / max(1, min(streams, n_pred // max(burn_in, 1) or 1)))
    starts = list(range(0, n_pred, seg))
    width = seg + min(burn_in, starts[-1])
    x = np.zeros((len(starts), width), dtype=np.int64)
    y = np.zeros_like(x)
    mask = np.zeros(x.shape, dtype=bool)
    for row, s in enumerate(starts):
        b = min(burn_in, s)
        end = min(s + seg, n_pred)
        x[row, : end - s + b] = ids[s - b : end]
        y[row, : end - s + b] = ids[s - b + 1 : end + 1]
        mask[row, b : end - s + b] = True
    return x, y, mask


def _nats(model: CharGRU, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, chunk: int) -> float:
    """Total nats of the masked targets, the rows read `chunk` characters at a time (on the calling thread)."""
    hidden, nats = None, torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.no_grad():  # per thread: each share runs on its own
        for a in range(0, x.size(1), chunk):
            logits, hidden = model(x[:, a : a + chunk], hidden)
            nll = F.cross_entropy(logits.transpose(1, 2), y[:, a : a + chunk], reduction="none")
            nats += nll[mask[:, a : a + chunk]].double().sum()
    return float(nats)


# A line longer than this is scored as `score_ids` scores a text: a single row of millions of characters would
# be read one character after another (measured: 200,000 characters in 34 s against 0.8 s, and the same total
# to 2e-9 nats/char).
LONG_LINE = 16384


@dataclass
class LineScore:
    chars: int  # characters of the line that were scored
    bits: float  # their total surprise in bits

    @property
    def bits_per_char(self) -> float:
        return self.bits / self.chars if self.chars else math.nan


@torch.no_grad()
def score_lines(
    model: CharGRU,
    lines: list[np.ndarray],
    start: int | None,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    chunk: int = 512,
) -> list[LineScore]:
    """Score each line (an array of ids) on its own, from a fresh state, in padded batches.

    With `start` (the id of "\\n") every line is read as if it began a line of text, so its first character
    is scored too; without it the first character is only context. Lines are sorted by length so a batch
    holds lines of similar length, and padding (masked out) only ever follows a line's scored characters.
    A line longer than LONG_LINE is cut into segments scored side by side, each first reading the 128
    characters before it, as `score_ids` scores a whole text.
    """
    was_training = model.training
    model.eval()
    ctx = [np.concatenate(([start], ids)) if start is not None else np.asarray(ids) for ids in lines]
    out: list[LineScore] = [LineScore(0, 0.0)] * len(lines)
    order = sorted(range(len(ctx)), key=lambda i: len(ctx[i]))
    while order and len(ctx[order[-1]]) > LONG_LINE:  # one long line: its own segments, side by side
        i = order.pop()
        r = score_ids(model, ctx[i], device)
        out[i] = LineScore(r.chars, r.nats / math.log(2))
    for a in range(0, len(order), batch_size):
        rows = [i for i in order[a : a + batch_size] if len(ctx[i]) >= 2]
        if rows:
            for i, nats in zip(rows, _batch_nats(model, [ctx[i] for i in rows], device, chunk), strict=True):
                out[i] = LineScore(len(ctx[i]) - 1, nats / math.log(2))
    model.train(was_training)
    return out


def _batch_nats(model: CharGRU, seqs: list[np.ndarray], device: torch.device | str, chunk: int) -> list[float]:
    """Total nats of seq[1:] given what precedes it, for each sequence, run side by side."""
    width = max(len(s) for s in seqs) - 1
    x = np.zeros((len(seqs), width), dtype=np.int64)
    y = np.zeros_like(x)
    mask = np.zeros(x.shape, dtype=bool)
    for row, s in enumerate(seqs):
        n = len(s) - 1
        x[row, :n], y[row, :n], mask[row, :n] = s[:-1], s[1:], True
    xt, yt, mt = (torch.from_numpy(arr).to(device) for arr in (x, y, mask))
    hidden, nats = None, torch.zeros(len(seqs), dtype=torch.float64, device=device)
    for c in range(0, width, chunk):
        logits, hidden = model(xt[:, c : c + chunk], hidden)
        nll = F.cross_entropy(logits.transpose(1, 2), yt[:, c : c + chunk], reduction="none")
        nats += (nll.double() * mt[:, c : c + chunk]).sum(1)
    return nats.tolist()


def split_lines(text: str) -> list[str]:
    """The lines of a text without their "\\n"; a final newline does not start one more (empty) line."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def line_records(
    model: CharGRU,
    tok: CharTokenizer,
    text: str | Sequence[str],
    skip_unknown: bool,
    device: torch.device | str = "cpu",
    block: int = 4096,
    what: str = "the text",
) -> Iterator[tuple[str, LineScore]]:
    """(line, LineScore) for each line of `text` (a text, cut at its newlines, or its lines), in order, scored
    `block` lines at a time.

    Lines are scored in blocks so that a text of millions of lines never holds all its ids at once, and the
    first records can be printed before the last lines are scored. Unknown characters raise one error for the
    whole input, before anything is scored, unless `skip_unknown`.
    """
    lines = split_lines(text) if isinstance(text, str) else list(text)
    joined = text if isinstance(text, str) else "\n".join(lines)
    tok.encode(joined, "skip" if skip_unknown else "error", what=what)  # one clear error for the whole input
    start = tok.id_of("\n") if "\n" in tok else None
    for a in range(0, len(lines), block):
        part = lines[a : a + block]
        ids = [tok.encode(line, "skip") for line in part]
        yield from zip(part, score_lines(model, ids, start, device), strict=True)
