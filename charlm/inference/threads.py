"""Using several CPU cores for a recurrence: one share of the rows per thread, not torch's per-operation threads.

torch spreads each operation over its threads and waits for all of them at the operation's end. A
recurrence is a long series of small operations, so those waits add up, and when another program keeps
one core busy every operation waits for it (measured on 2 cores with one busy: scoring ran at a twentieth
of its one-thread speed). Cutting the rows into one share per thread instead, each share run start to end
by its own thread with torch's own threading off, leaves nothing to wait for until the end, and a busy
core only slows its own share. torch releases the GIL inside its operations, so the shares run in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

T = TypeVar("T")


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


def shares(rows: int, device: torch.device | str) -> list[slice]:
    """The rows cut into one contiguous share per thread torch may use: as many as it has threads, at most
    one per row, and a single share off the CPU (a GPU runs each operation on all its cores anyway)."""
    k = min(torch.get_num_threads(), rows) if torch.device(device).type == "cpu" else 1
    bounds = [rows * i // max(k, 1) for i in range(k + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def run_shares(fn: Callable[[slice], T], parts: list[slice]) -> list[T]:
    """fn(share) for each share, each on its own thread (the first on this one) with torch's own threading
    off; the results in the order of the shares."""
    if len(parts) == 1:
        return [fn(parts[0])]
    with intra_op_threads(1), ThreadPoolExecutor(len(parts) - 1) as pool:
        rest = [pool.submit(fn, rows) for rows in parts[1:]]
        return [fn(parts[0]), *(f.result() for f in rest)]
