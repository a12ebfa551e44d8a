"""Using several CPU cores for a recurrence: shares of the rows run side by side, not torch's per-operation threads.

torch spreads each operation over its threads and waits for all of them at the operation's end. A
recurrence is a long series of small operations, so those waits add up, and when another program keeps
one core busy every operation waits for it. Measured on 2 cores with one busy, against one thread: scoring
ran at 1/30 of the speed, 256 samples at 1/60. Cutting the rows into shares instead, each run start to end
by one thread with torch's own threading off, leaves nothing to wait for until the end, and a busy core
only slows its own share (scoring kept its one-thread speed, sampling 0.6 of it, which also pays for the
GIL between its operations: 8% when both shares share one core). torch releases the GIL inside its
operations, so the shares run in parallel.

torch's thread count is one setting for the whole process, and a loaded model may be used by several threads
at once (a server): `intra_op_threads` changes it under a lock and keeps, per thread, the count each block
asked for, and `cpu_threads` reads this thread's own view of it, so how work is cut into shares (and so every
result) never depends on what another thread is doing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

S, T = TypeVar("S"), TypeVar("T")
_lock = threading.Lock()
_asked = threading.local()  # .counts: the counts this thread's open blocks asked for, innermost last
_open = 0  # intra_op_threads blocks open, in all threads together
_outer = 0  # torch's thread count outside every block (read when the first one opened)


def _mine() -> list[int]:
    if not hasattr(_asked, "counts"):
        _asked.counts = []
    return _asked.counts


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block: a process-wide setting, so while blocks of other
    threads are open the one set last holds (which changes only the speed, never a result: see `cpu_threads`).
    On leaving, the count is what this thread's enclosing block asked for, or the count from before the first
    block once none is open in any thread."""
    global _open, _outer
    mine = _mine()
    with _lock:
        if _open == 0:
            _outer = torch.get_num_threads()
        _open += 1
        mine.append(n)
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    try:
        yield
    finally:
        with _lock:
            _open -= 1
            mine.pop()
            back = mine[-1] if mine else _outer if _open == 0 else None
            if back is not None and torch.get_num_threads() != back:
                torch.set_num_threads(back)


def configured_threads() -> int:
    """torch's intra-op thread count as this thread sees it: what its innermost open `intra_op_threads` block
    asked for, else the count outside every block (whatever other threads' blocks have set meanwhile)."""
    mine = _mine()
    with _lock:
        return mine[-1] if mine else _outer if _open else torch.get_num_threads()


def cpu_threads(device: torch.device | str) -> int:
    """Threads to share work among: torch's intra-op count as this thread sees it (`configured_threads`) on a
    CPU, one elsewhere (a GPU runs each operation on all its cores anyway)."""
    return configured_threads() if torch.device(device).type == "cpu" else 1


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
