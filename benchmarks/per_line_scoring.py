"""Per-line scoring speed: `score_lines` in padded batches against one line at a time.

    python benchmarks/per_line_scoring.py [--lines 2000] [--hidden 128] [--long-line 2000000]

Prints lines per second for both and the largest difference in total bits between them; then the time to
score one long line (cut into segments side by side, as `score_lines` does past LONG_LINE characters) against
reading it in one row, and the difference in bits per character (the one-row pass on at most 200,000
characters of it, as it reads about 6,000 characters a second on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from charlm.config import ModelConfig
from charlm.inference import evaluate
from charlm.inference.evaluate import score_lines
from charlm.model import CharGRU


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--long-line", type=int, default=2_000_000, help="characters of the long line (0: skip it)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = CharGRU(ModelConfig(vocab_size=64, hidden=args.hidden, embed=32)).eval()
    rng = np.random.default_rng(0)
    lines = [rng.integers(0, 64, size=int(n)) for n in rng.integers(5, 80, size=args.lines)]
    t = time.perf_counter()
    batched = score_lines(model, lines, 0)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    alone = [score_lines(model, [ids], 0, batch_size=1)[0] for ids in lines]
    t_alone = time.perf_counter() - t
    diff = max(abs(a.bits - b.bits) for a, b in zip(batched, alone, strict=True))
    print(f"{args.lines} lines of 5-79 characters, GRU hidden {args.hidden}, {torch.get_num_threads()} threads")
    print(f"batched:     {args.lines / t_batched:10,.0f} lines/s ({t_batched:.2f}s)")
    print(f"one by one:  {args.lines / t_alone:10,.0f} lines/s ({t_alone:.2f}s)")
    print(f"speed-up {t_alone / t_batched:.1f}x; largest difference in total bits {diff:.2e}")
    if args.long_line:
        long_line(model, rng.integers(0, 64, size=args.long_line))


def long_line(model: CharGRU, ids: np.ndarray) -> None:
    t = time.perf_counter()
    score_lines(model, [ids], 0)
    t_cut = time.perf_counter() - t
    part = ids[:200_000]
    short = score_lines(model, [part], 0)[0]
    saved, evaluate.LONG_LINE = evaluate.LONG_LINE, len(ids) + 1
    try:
        t = time.perf_counter()
        whole = score_lines(model, [part], 0)[0]
        t_row = (time.perf_counter() - t) * len(ids) / len(part)
    finally:
        evaluate.LONG_LINE = saved
    print(f"one line of {len(ids):,} characters: {t_cut:.1f}s cut into segments, ~{t_row:.0f}s in one row")
    print(f"difference on its first {len(part):,}: {abs(short.bits - whole.bits) / len(part):.2e} bits/char")


if __name__ == "__main__":
    main()
