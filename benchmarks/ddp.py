"""Data-parallel throughput: characters/s for 1 and N torchrun processes, and the scaling efficiency.

Every run trains the same model on the same global batch (strong scaling: N processes share the streams),
so with perfect scaling N processes would be N times as fast. Efficiency = rate(N) / (N * rate(1)).
On CUDA each process gets its own GPU (NCCL), so N can be at most the number of GPUs; on CPU (gloo) the
processes share the machine's cores. Every process gets --threads CPU threads (default 1, what torchrun
itself sets for several processes): torch's default of one thread per core, in processes that share those
cores with each other or with other work, spins and slows down several-fold, which would swamp the figures.

    python benchmarks/ddp.py                     # 1 and 2 processes, a 256-unit GRU, 10 steps, best of 3
    python benchmarks/ddp.py --procs 1 2 4 --hidden 512 --steps 100 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(procs: int | None, args: argparse.Namespace, corpus: Path, tmp: Path) -> float:
    """chars/s of one run: under torchrun with `procs` processes, or a plain process when procs is None."""
    out = tmp / f"run-{procs}"
    flags = [str(corpus), "--out", str(out), "--json", "-q", "--device", args.device]
    flags += ["--hidden", str(args.hidden), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    flags += ["--max-steps", str(args.steps), "--eval-every", str(args.steps * 10), "--val-fraction", "0.01"]
    if procs is None:
        cmd = [sys.executable, "-m", "charlm", "train", *flags]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        cmd += ["-m", "charlm", "train", *flags]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"run with {procs} process(es) failed:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout)["chars_per_sec"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32, help="global streams per step, split across processes")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process (OMP_NUM_THREADS)")
    p.add_argument("--repeat", type=int, default=3, help="runs of each configuration; the best is reported")
    p.add_argument("--corpus", type=Path, default=ROOT / "corpora" / "markov.txt")
    args = p.parse_args()
    print(
        f"machine: {os.cpu_count()} CPU cores, device {args.device}; GRU hidden {args.hidden}, global batch "
        f"{args.batch_size} x {args.seq_len} chars, {args.steps} steps, {args.threads} thread(s) per process, "
        f"best of {args.repeat} runs"
    )
    configs: list[int | None] = [None, *args.procs]
    best: dict[int | None, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):  # interleaved, so that a burst of other load hits every configuration alike
            for n in configs:
                rate = train(n, args, args.corpus, Path(tmp) / str(r))
                best[n] = max(best.get(n, 0.0), rate)
    print(f"plain process (no torchrun):             {best[None]:>10,.0f} chars/s")
    base = best[args.procs[0]] / args.procs[0]  # per-process rate of the smallest torchrun run
    for n in args.procs:
        eff = best[n] / (n * base)
        print(f"torchrun, {n} process(es):               {best[n]:>10,.0f} chars/s   scaling efficiency {eff:6.1%}")


if __name__ == "__main__":
    main()
