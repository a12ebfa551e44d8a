"""What the benchmark scripts share: the machine's description, timing, the matmul peak, model FLOPs, text,
checkpoints of untrained models and timing the command line. Each script imports this; none imports another
script's helpers.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig, TrainConfig
from charlm.model import CharGRU
from charlm.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parent.parent
CHARLM = [sys.executable, "-m", "charlm"]
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\n-"  # 65 characters, like Shakespeare


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average_at_start": os.getloadavg(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def best_time(fn: Any, repeats: int) -> float:
    """The fastest of `repeats` runs: on a shared machine, the one least disturbed by other work."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_peak(n: int, repeats: int, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of one large square matrix product in `dtype`."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    return 2 * n**3 / best_time(lambda: a @ b, repeats) / 1e9


def flops_per_train_char(m: ModelConfig) -> float:
    """Matrix-product FLOPs per character for forward + backward (3x the forward)."""
    fwd, inp = 0, m.embed
    for _ in range(m.layers):
        fwd += 2 * 3 * m.hidden * (inp + m.hidden)
        inp = m.hidden
    fwd += 2 * m.hidden * m.vocab_size
    return 3.0 * fwd


def random_text(chars: int, seed: int = 0) -> str:
    """Text with word-like structure over 65 characters (content does not affect speed)."""
    rng = np.random.default_rng(seed)
    codes = np.frombuffer(ALPHABET.encode(), dtype=np.uint8)
    return codes[rng.integers(0, len(codes), chars)].tobytes().decode()


def save_model(folder: Path, m: ModelConfig, tok: CharTokenizer) -> Path:
    """A checkpoint of an untrained model (speed does not depend on the weights)."""
    torch.manual_seed(0)
    meta = {"model": m.to_dict(), "train": TrainConfig().to_dict(), "vocab": tok.to_dict(), "step": 1, "metrics": {}}
    meta["data"] = {"sources": [], "offset": 0}
    return ckpt_io.save(folder, meta, CharGRU(m).state_dict(), {})


def cli_seconds(args: list[str], repeats: int) -> float:
    """Wall seconds of a charlm command (best of `repeats`), through its installed entry point."""
    exe = Path(sys.executable).with_name("charlm")
    cmd = [str(exe), *args] if exe.exists() else [*CHARLM, *args]
    return best_time(lambda: subprocess.run(cmd, capture_output=True), repeats)
