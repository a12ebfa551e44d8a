"""Using several CPU cores for a recurrence: shares of the rows run side by side, not torch's per-operation threads.

torch spreads each operation over its threads and waits for all of them at the operation's end. A
recurrence is a long series of small operations, so those waits add up, and when another program keeps
one core busy every operation waits for it. Measured on 2 cores with one busy, against one thread: scoring
ran at 1/30 of the speed, 256 samples at 1/60. Cutting the rows into shares instead, each run start to end
by one thread with torch's own threading off, leaves nothing to wait for until the end, and a busy core
only slows its own share (scoring kept its one-thread speed, sampling 0.6 of it, which also pays for the
GIL between its operations: 8% when both shares share one core). torch releases the GIL inside its
operations, so the shares run in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

S, T = TypeVar("S"), TypeVar("T")


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block (a process-wide setting, restored after)."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


def cpu_threads(device: torch.device | str) -> int:
    """Threads to share work among: torch's intra-op count on a CPU, one elsewhere (a GPU runs each operation
    on all its cores anyway)."""
    return torch.get_num_threads() if torch.device(device).type == "cpu" else 1


def split(rows: int, n: int) -> list[slice]:
    """`rows` cut into `n` contiguous shares (as near equal as can be), or fewer when there are fewer rows."""
    n = max(1, min(n, rows))
    bounds = [rows * i // n for i in range(n + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def run_shares(fn: Callable[[S], T], parts: Sequence[S], threads: int) -> list[T]:
    """fn(share) for each share, on `threads` threads each with torch's own threading off (on the calling
    thread alone when `threads` is 1); the results in the order of the shares."""
    if threads <= 1 or len(parts) == 1:
        return [fn(p) for p in parts]
    with intra_op_threads(1), ThreadPoolExecutor(min(threads, len(parts))) as pool:
        return list(pool.map(fn, parts))
