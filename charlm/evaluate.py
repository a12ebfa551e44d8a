"""Scoring text with a trained model: loss in nats per character, bits per character and perplexity."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.model import CharGRU


@dataclass
class EvalResult:
    chars: int  # characters scored (each predicted from the ones before it)
    nats: float  # total negative log-likelihood

    @property
    def loss(self) -> float:
        return self.nats / self.chars if self.chars else math.nan

    @property
    def bits_per_char(self) -> float:
        return self.loss / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.chars else math.nan

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "loss": self.loss, "bits_per_char": self.bits_per_char, "perplexity": self.perplexity}


@torch.no_grad()
def score_ids(
    model: CharGRU,
    ids: np.ndarray,
    device: torch.device | str = "cpu",
    streams: int = 64,
    burn_in: int = 128,
    chunk: int = 512,
) -> EvalResult:
    """Score ids[1:] given what precedes each, in up to `streams` segments run side by side.

    Running segments in parallel is what makes scoring fast, but a segment started from a zero state would
    score its first characters without context. So each segment first reads the `burn_in` characters before
    it, unscored, and only the first segment (which has nothing before it) starts cold, exactly as a single
    pass would. Rows are padded at the end only, so padding never touches a scored prediction.
    """
    n_pred = len(ids) - 1
    if n_pred < 1:
        return EvalResult(0, 0.0)
    was_training = model.training
    model.eval()
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
    xt, yt, mt = (torch.from_numpy(a).to(device) for a in (x, y, mask))
    hidden, nats = None, torch.zeros((), dtype=torch.float64, device=device)
    for a in range(0, width, chunk):
        logits, hidden = model(xt[:, a : a + chunk], hidden)
        nll = F.cross_entropy(logits.transpose(1, 2), yt[:, a : a + chunk], reduction="none")
        nats += nll[mt[:, a : a + chunk]].double().sum()
    model.train(was_training)
    return EvalResult(int(mask.sum()), float(nats))
