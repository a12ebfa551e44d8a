"""Make corpora/markov.txt: text drawn from a Markov chain whose entropy rate is known exactly.

The chain runs over tokens. A token is an invented word followed by one separator, a space or a newline,
and separators never occur inside words, so the text splits back into its tokens one way only. Each
token has a few possible successors with fixed probabilities. The entropy rate of the token chain is
    H = sum_i pi_i * H(P[i, :])            bits per token (pi: the chain's stationary distribution)
and since the text and the token sequence determine each other, the text's entropy rate is
    H / L                                   bits per character, L = sum_i pi_i * len(token_i).
No model can do better on average than H / L: it is the floor a character model should approach.

Run: python corpora/make_markov.py   (deterministic: the same seed always writes the same file)
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

SEED = 20261124
N_WORDS = 48
SUCCESSORS = (2, 6)  # each token can be followed by this many (min, max) distinct tokens
N_CHARS = 300_000
ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "th", "br", "kl"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
CODAS = ["", "", "n", "r", "s", "l", "m"]


def invent_words(rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < N_WORDS:
        syllables = rng.choice([1, 1, 2, 2, 2, 3])
        words.add("".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)))
    return sorted(words)


def build_chain(rng: random.Random) -> tuple[list[str], np.ndarray]:
    words = invent_words(rng)
    # Most tokens end in a space; some end a line, so the text has lines of varying length.
    tokens = [w + " " for w in words] + [w + "\n" for w in rng.sample(words, N_WORDS // 4)]
    n = len(tokens)
    P = np.zeros((n, n))
    for i in range(n):
        succ = rng.sample(range(n), rng.randint(*SUCCESSORS))
        weights = [rng.uniform(0.2, 1.0) ** 2 for _ in succ]
        for j, w in zip(succ, weights, strict=True):
            P[i, j] = w / sum(weights)
    return tokens, P


def stationary(P: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eig(P.T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return v / v.sum()


def entropy_rate(tokens: list[str], P: np.ndarray) -> tuple[float, float, float]:
    """(bits per token, mean token length, bits per character)."""
    pi = stationary(P)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_rows = -np.nansum(np.where(P > 0, P * np.log2(P), 0.0), axis=1)
    h = float(pi @ h_rows)
    length = float(pi @ np.array([len(t) for t in tokens]))
    return h, length, h / length


def is_irreducible(P: np.ndarray) -> bool:
    reach = (P > 0) | np.eye(len(P), dtype=bool)
    for _ in range(len(P).bit_length()):  # square the reachability relation until it covers any path length
        reach = (reach.astype(np.int64) @ reach.astype(np.int64)) > 0
    return bool(reach.all())


def main() -> None:
    rng = random.Random(SEED)
    while True:
        tokens, P = build_chain(rng)
        if is_irreducible(P):  # one stationary distribution, so the entropy rate is well defined
            break
    state, out, size = rng.randrange(len(tokens)), [], 0
    while size < N_CHARS:
        out.append(tokens[state])
        size += len(tokens[state])
        state = rng.choices(range(len(tokens)), weights=P[state])[0]
    text = "".join(out)
    here = Path(__file__).parent
    (here / "markov.txt").write_text(text, encoding="utf-8")
    h, length, bpc = entropy_rate(tokens, P)
    print(f"wrote {here / 'markov.txt'}: {len(text):,} characters, {len(tokens)} tokens over {N_WORDS} words")
    print(f"entropy rate: {h:.6f} bits/token / {length:.6f} chars/token = {bpc:.6f} bits/char")


if __name__ == "__main__":
    main()
