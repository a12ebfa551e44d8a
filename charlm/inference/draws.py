"""What a sample is asked for, and the random draws every sampling path shares: no torch here.

`SampleOptions` and `check` (the options, checked as a whole), `Gumbel` (the random draws, from one NumPy
generator, so that a seed gives the same text on every path), `decode` (a chunk of steps: step, filter, add
the noise, take the largest) and the chunk sizes. Both `charlm.inference.sample` (NumPy) and
`charlm.inference.torch_step` (PyTorch) build on this module, which imports neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from charlm.config import SEED_MAX
from charlm.errors import UsageError, param
from charlm.inference.gru_numpy import GRUStep, GRUWeights
from charlm.tokenizer import OnUnknown

CHUNK = 64  # steps computed between yields; the random draws for a chunk are made in one call
INT8_MIN_BATCH = 64  # on a CPU, this many samples at once or more use PyTorch's int8 matrix products
PRIME_BLOCK = 4096  # characters of a prime torch reads per call, for one sample, its state then shared by all
# Above this temperature every character is equally likely to within float32 precision; higher ones are
# sampled as this one (the noise would overflow float32 and turn into NaN).
MAX_TEMPERATURE = 1e6


@dataclass
class SampleOptions:
    length: int = 1000  # characters to generate per sample (not counting the prime)
    temperature: float = 1.0  # 0 picks the most likely character every time (greedy)
    top_k: int | None = None  # sample only among the k most likely characters
    top_p: float | None = None  # sample only among the most likely characters whose probabilities sum to p
    seed: int | None = None  # the same seed (and model) gives the same text
    prime: str = ""  # text the model reads first; the output continues it
    stop: str | None = None  # end a sample before the first occurrence of this string
    on_unknown: OnUnknown = "error"


def check(opts: SampleOptions, num_samples: int = 1) -> None:
    """Raise one UsageError listing every bad option."""
    problems = []
    if not (math.isfinite(opts.temperature) and opts.temperature >= 0):
        problems.append(f"{param('temperature')} must be a finite number >= 0 (got {opts.temperature})")
    if opts.top_k is not None and opts.top_k < 1:
        problems.append(f"{param('top_k')} must be at least 1 (got {opts.top_k})")
    if opts.top_p is not None and not 0 < opts.top_p <= 1:
        problems.append(f"{param('top_p')} must be in (0, 1] (got {opts.top_p})")
    if opts.length < 0:
        problems.append(f"{param('length')} must be 0 or more (got {opts.length})")
    if opts.seed is not None and not 0 <= opts.seed <= SEED_MAX:
        problems.append(f"{param('seed')} must be in 0..{SEED_MAX} (got {opts.seed})")
    if num_samples < 1:
        problems.append(f"{param('n')} must be at least 1 (got {num_samples})")
    if problems:
        raise UsageError(problems)


class Gumbel:
    """Gumbel noise for a chunk of steps at a time, scaled by the temperature: argmax(logits + noise) is then
    an exact draw from softmax(logits / temperature) (the Gumbel-max trick), in two operations per step
    instead of a softmax, a cumulative sum and a search. Always a whole chunk, so a longer sample with the
    same seed begins with the same text. None at temperature 0: greedy decoding draws nothing."""

    def __init__(self, seed: int | None, temperature: float) -> None:
        self.rng, self.temperature = np.random.default_rng(seed), min(temperature, MAX_TEMPERATURE)

    def __call__(self, batch: int, vocab: int) -> np.ndarray | None:
        if not self.temperature:
            return None
        e = self.rng.standard_exponential((CHUNK, batch, vocab), dtype=np.float32)
        np.log(np.maximum(e, np.finfo(np.float32).tiny, out=e), out=e)  # -log of an Exp(1) draw is Gumbel
        e *= -self.temperature
        return e


def decode(step: Any, x: Any, out: Any, noise: Any, filt: Any, add: Any, argmax: Any, buf: Any) -> Any:
    """Fill `out` (T, B) with a chunk of ids: step, filter, add the noise, take the largest. Arrays are NumPy's
    or torch's, `add(a, b, out=)` and `argmax(logits, out)` that framework's. Returns the last ids."""
    for t in range(len(out)):
        logits = step(x)
        if filt is not None:  # -inf for the excluded characters; the temperature is in the noise
            logits = filt(logits)
        if noise is not None:
            logits = add(logits, noise[t], out=buf)
        x = argmax(logits, out[t])
    return x


def sampling_filter(opts: SampleOptions, fn: Any) -> Any:
    """`fn` (a filter_logits) applied with the options' top-k and top-p, or None when neither is set."""
    if opts.top_k is None and opts.top_p is None:
        return None
    return lambda logits: fn(logits, 1.0, opts.top_k, opts.top_p)


class Primed:
    """A prime as ids, and the state after reading all but its last character, computed once for one sample
    and shared by every sample and every group of them (a long prime read for each of 64 samples side by
    side would cost 64 times the time and memory). A GRU's state is computed by the NumPy step, which takes
    a third of the time torch's takes per character for one sample; other cells' by torch
    (`charlm.inference.torch_step.primed_state`)."""

    def __init__(self, prime: Any) -> None:
        self.prime = np.asarray(prime, np.int64)
        self.state: np.ndarray | None = None  # (state layers, 1, hidden)
        self._weights: GRUWeights | None = None

    def weights(self, model: Any) -> GRUWeights:
        """The NumPy weights of `model` (a torch GRU, or its GRUWeights already), made once."""
        if self._weights is None:
            self._weights = model if isinstance(model, GRUWeights) else GRUWeights.of(model)
        return self._weights

    def numpy_state(self, w: GRUWeights) -> np.ndarray:
        if self.state is None:
            step, x = GRUStep(w, 1), np.zeros(1, np.intp)
            for c in self.prime[:-1]:
                x[0] = c
                step(x)
            self.state = step.state()
        return self.state
