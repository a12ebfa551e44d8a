"""Validation loss over corpus size, model shape, dropout and time budget: the data charlm's sizing rule is fit to.

Each point trains `charlm train CORPUS --max-steps N` with N the steps that the budget buys for that shape at the
measured speed of this machine. Quality per step does not depend on how busy the machine is, so the runs can
share a loaded machine (one thread each, niced); only the speeds must come from a quiet one: they are timed
once by charlm's calibration and kept in the JSON file, so a rerun trains the same steps.

    python benchmarks/sweep.py                 # run the points not yet in benchmarks/sweep.json, print the table
    python benchmarks/sweep.py --table         # print the table only
    python benchmarks/sweep.py --calibrate     # time the shapes again (on a quiet machine) before running
    python benchmarks/sweep.py --only small    # the points whose corpus name contains this

The corpora: the first 200,000 characters of tiny Shakespeare ("small"), all of it ("full"), and the shipped
corpora/markov.txt ("markov"); the last 10% of each is validation. A budget is a time ("30s" to "10m") or a
number of passes over the training text ("12x").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
BATCH, SEQ = 32, 64  # charlm's defaults: every point uses them, so shapes differ in width and depth only
OVERHEAD = 0.9  # a real run spends ~10% of its time outside training steps (validation, batching)
BUDGETS = {"30s": 30, "1m": 60, "2m": 120, "3m": 180, "5m": 300, "10m": 600}

# (corpus, budget, "layers x hidden", dropout). Chosen to stay near an hour of one core: many short points on
# the small corpus, a few long ones on the full corpus (a "10m" point costs about 12 minutes of one core).
GRID: list[tuple[str, str, str, float]] = [
    *[("small", "30s", s, d) for s, d in (("1x256", 0.0), ("2x256", 0.0), ("2x256", 0.2))],
    *[("small", "2m", s, d) for s, d in (("2x256", 0.0), ("2x256", 0.2), ("2x256", 0.35), ("2x384", 0.3))],
    *[("small", "5m", s, d) for s, d in (("2x256", 0.0), ("2x256", 0.3), ("2x384", 0.35))],
    ("small", "15x", "2x256", 0.25),  # a budget of "15x" is 15 passes over the training text
    *[("small", "12x", s, 0.2) for s in ("1x256", "2x256")],
    *[("markov", "1m", s, 0.0) for s in ("1x256", "2x256")],
    *[("markov", "1m", "1x256", d) for d in (0.05, 0.15)],
    ("full", "3m", "2x256", 0.0),
    *[("full", "10m", "2x384", d) for d in (0.0, 0.1)],
]


def corpus_file(name: str, folder: Path) -> Path:
    if name == "markov":
        return ROOT / "corpora" / "markov.txt"
    if not SHAKESPEARE.is_file():
        raise SystemExit(f"{SHAKESPEARE}: not found (the sweep needs tiny Shakespeare there)")
    if name == "full":
        return SHAKESPEARE
    path = folder / "small.txt"
    path.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    return path


def shape_of(name: str) -> tuple[int, int]:
    layers, hidden = name.split("x")
    return int(layers), int(hidden)


def measure_speeds(shapes: list[str]) -> dict[str, float]:
    """Characters per second of each shape's training step on this CPU in fp32, at torch's own thread count."""
    import torch

    from charlm.training.calibrate import Shape, calibrate

    cands = [Shape(*shape_of(s), batch_size=BATCH, seq_len=SEQ) for s in shapes]
    calibrate(torch.device("cpu"), 65, cands[:1], steps=1)  # first use of the CPU kernels: not timed
    speeds = calibrate(torch.device("cpu"), 65, cands, steps=4)
    return {s.name: v for s, v in speeds.items()}


def machine() -> dict[str, Any]:
    import torch

    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(getattr(torch.cpu, f, lambda: False)() for f in checks)
    return {"cpu": cpu, "cores": os.cpu_count(), "bf16_native": native, "torch": torch.__version__, "precision": "fp32"}


def train_point(corpus: Path, layers: int, hidden: int, dropout: float, steps: int, folder: Path) -> dict[str, Any]:
    """One `charlm train` run on one niced thread; its summary and validation curve."""
    out = folder / f"run-{time.monotonic_ns()}"
    eval_every = max(25, steps // 10)
    cmd = [
        "nice", "-n", "10", sys.executable, "-m", "charlm", "train", str(corpus), "--out", str(out),
        "--layers", str(layers), "--hidden", str(hidden), "--dropout", str(dropout),
        "--max-steps", str(steps), "--eval-every", str(eval_every),
        "--precision", "fp32", "--device", "cpu", "--json", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"charlm train failed: {done.stderr.strip()[-1000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    curve = [(r["step"], r["val_loss"], r["train_loss"]) for r in rows if "val_loss" in r]
    best = min(curve, key=lambda c: c[1])
    return {
        "steps": summary["steps"],
        "eval_every": eval_every,
        "best_val_nats": best[1],
        "best_step": best[0],
        "final_val_nats": curve[-1][1],
        "final_train_nats": curve[-1][2],
        "curve": curve,
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
    }


def table(results: dict[str, Any]) -> str:
    lines = [
        "| corpus | budget | shape | dropout | steps | passes | best val nats/char | at step | last val | last train |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {point: i for i, point in enumerate(GRID)}  # the grid's order: by corpus, then budget
    for p in sorted(
        results["points"], key=lambda p: order.get((p["corpus"], p["budget"], p["shape"], p["dropout"]), 99)
    ):
        lines.append(
            f"| {p['corpus']} | {p['budget']} | {p['shape']} | {p['dropout']} | {p['steps']:,} | {p['passes']:.1f} "
            f"| {p['best_val_nats']:.4f} | {p['best_step']:,} | {p['final_val_nats']:.4f} "
            f"| {p['final_train_nats']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "sweep.json")
    p.add_argument("--calibrate", action="store_true", help="time the shapes again before running")
    p.add_argument("--table", action="store_true", help="print the table of the stored results only")
    p.add_argument("--only", default="", help="run only the points whose corpus name contains this")
    args = p.parse_args(argv)
    results = json.loads(args.json.read_text()) if args.json.is_file() else {"points": []}
    if not args.table:
        shapes = sorted({s for _, _, s, _ in GRID})
        if args.calibrate or not all(s in results.get("speeds", {}) for s in shapes):
            results["speeds"] = measure_speeds(shapes)
            results["machine"] = {**machine(), "load_average_at_calibration": os.getloadavg()[0]}
        run_grid(results, args.only, args.json)
    print(table(results))


def run_grid(results: dict[str, Any], only: str, path: Path) -> None:
    done = {(q["corpus"], q["budget"], q["shape"], q["dropout"]) for q in results["points"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for corpus, budget, shape, dropout in GRID:
            if (corpus, budget, shape, dropout) in done or only not in corpus:
                continue
            file = corpus_file(corpus, folder)
            chars_per_step = BATCH * SEQ
            train_chars = math.floor(len(file.read_text(encoding="utf-8")) * 0.9)
            if budget.endswith("x"):
                steps = round(float(budget[:-1]) * train_chars / chars_per_step)
            else:
                steps = max(1, round(BUDGETS[budget] * results["speeds"][shape] * OVERHEAD / chars_per_step))
            r = train_point(file, *shape_of(shape), dropout, steps, folder)
            point = {"corpus": corpus, "budget": budget, "shape": shape, "dropout": dropout,
                     "train_chars": train_chars, "passes": steps * chars_per_step / train_chars, **r}  # fmt: skip
            results["points"].append(point)
            path.write_text(json.dumps(results, indent=1) + "\n")  # after every point: the sweep can be stopped
            print(f"{corpus} {budget} {shape} d{dropout}: {r['best_val_nats']:.4f} ({r['wall_s']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
