"""Per-line scoring speed: `score_lines` in padded batches against one line at a time.

    python benchmarks/per_line_scoring.py [--lines 2000] [--hidden 128]

Prints lines per second for both and the largest difference in total bits between them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from charlm.config import ModelConfig
from charlm.inference.evaluate import score_lines
from charlm.model import CharGRU


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=128)
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


if __name__ == "__main__":
    main()
