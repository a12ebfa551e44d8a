"""Validation loss over corpus size, model shape, dropout and time budget: the data charlm's sizing rule is fit to.

Each point trains `charlm train CORPUS --max-steps N` with N the steps that the budget buys for that shape at the
measured speed of this machine. Quality per step does not depend on how busy the machine is, so the runs can
share a loaded machine (one thread each, niced); only the speeds must come from a quiet one: they are timed
once by charlm's calibration and kept in the JSON file, so a rerun trains the same steps.

    python benchmarks/sweep.py                 # run the points not yet in benchmarks/sweep.json, print the table
    python benchmarks/sweep.py --table         # print the table only
    python benchmarks/sweep.py --calibrate     # time the shapes again (on a quiet machine) before running
    python benchmarks/sweep.py --only small    # the points whose line ("full 10m 2x384 d0.1 --ema 0.998") has this
    python benchmarks/sweep.py --grid variants # only the points that try other training options (VARIANTS)
    python benchmarks/sweep.py --grid combos   # the options that won on their own, together (COMBOS)
    python benchmarks/sweep.py --grid repeats  # the defaults again and with other seeds: the points' noise
    python benchmarks/sweep.py --grid variants --shard 1/2 --json a.json &  # the same on two cores, each shard
    python benchmarks/sweep.py --grid variants --shard 2/2 --json b.json    # in its own file (from sweep.json's)
    python benchmarks/sweep.py --merge a.json b.json                       # then into sweep.json

The corpora: the first 200,000 characters of tiny Shakespeare ("small"), all of it ("full"), and the shipped
corpora/markov.txt ("markov"); the last 10% of each is validation. A budget is a time ("30s" to "10m") or a
number of passes over the training text ("12x"). A point of VARIANTS adds `charlm train` options to one of
GRID's points: the learning rate decayed to zero (linear, or warmup-stable-decay), an average of the weights
(--ema), other sequence lengths and weight decays, and wider or deeper models at 10 minutes. A point with its
own --seq-len trains the steps its budget buys at that length's own calibrated speed. (The average of the
weights costs a little time per step that the step counts here do not charge it.)
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
DEFAULT_JSON = ROOT / "benchmarks" / "sweep.json"
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


# (corpus, budget, "layers x hidden", dropout, options for charlm train): what the next quiet run measures,
# the wider grid at 10 minutes included.
LINEAR, WSD = "--lr-schedule linear --min-lr-ratio 0", "--lr-schedule wsd --min-lr-ratio 0"
VARIANTS: list[tuple[str, str, str, float, str]] = [
    *[("full", "3m", "2x256", 0.0, o) for o in (LINEAR, WSD, "--ema 0.99", "--ema 0.998")],
    *[("full", "3m", "2x256", 0.0, f"--seq-len {n}") for n in (32, 128)],
    *[("full", "3m", "2x256", 0.0, f"--weight-decay {w}") for w in (0, 0.1)],
    *[("full", "3m", "2x256", 0.0, f"--lr {lr}") for lr in (0.002, 0.005)],
    *[("small", "2m", "2x256", 0.2, o) for o in (LINEAR, WSD, "--ema 0.99", "--weight-decay 0.1")],
    *[("full", "10m", "2x384", 0.1, o) for o in (LINEAR, WSD, "--ema 0.998", "--seq-len 128", "--weight-decay 0.1")],
    *[("full", "10m", s, d, "") for s, d in (("2x512", 0.1), ("3x384", 0.1), ("1x512", 0.0))],
]

# The options that won on their own at 3 minutes, together, at 3 and 10 minutes (a longer decay won at 3).
COMBOS: list[tuple[str, str, str, float, str]] = [
    ("full", "3m", "2x256", 0.0, f"{WSD} --lr 0.005"),
    ("full", "10m", "2x384", 0.1, f"{WSD} --lr 0.005"),
    ("full", "3m", "2x256", 0.0, f"{WSD} --decay-fraction 0.4 --lr 0.005"),
    ("full", "10m", "2x384", 0.1, f"{WSD} --decay-fraction 0.4"),
    ("small", "2m", "2x256", 0.2, f"{WSD} --decay-fraction 0.4"),
]

# The noise of a point: the defaults' 3-minute point trained again by today's trainer (the schedule named, so
# that the key differs from GRID's: training is deterministic, it lands on the same figure) and with another
# seed, and warmup-stable-decay with another seed and a longer decay.
REPEATS: list[tuple[str, str, str, float, str]] = [
    ("full", "3m", "2x256", 0.0, "--lr-schedule cosine"),
    ("full", "3m", "2x256", 0.0, "--seed 1"),
    ("full", "3m", "2x256", 0.0, f"{WSD} --seed 1"),
    ("full", "3m", "2x256", 0.0, f"{WSD} --decay-fraction 0.4"),
]


def points() -> list[tuple[str, str, str, float, str]]:
    """Every point: GRID's with no options of their own, then VARIANTS, COMBOS and REPEATS."""
    return [(c, b, s, d, "") for c, b, s, d in GRID] + VARIANTS + COMBOS + REPEATS


def seq_len_of(options: str) -> int:
    """The --seq-len a point's options give, else charlm's default."""
    words = options.split()
    return int(words[words.index("--seq-len") + 1]) if "--seq-len" in words else SEQ


def speed_key(shape: str, seq_len: int) -> str:
    """How a speed is stored: the shape's name at the default sequence length (as earlier sweeps kept them)."""
    return shape if seq_len == SEQ else f"{shape}@{BATCH}x{seq_len}"


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


def measure_speeds(keys: list[tuple[str, int]]) -> dict[str, float]:
    """Characters per second of each (shape, sequence length)'s training step on this CPU in fp32, at torch's
    own thread count: the median of 5 of charlm's calibration steps."""
    import torch

    from charlm.training.calibrate import Shape, calibrate

    cands = {Shape(*shape_of(s), batch_size=BATCH, seq_len=n): speed_key(s, n) for s, n in keys}
    calibrate(torch.device("cpu"), 65, list(cands)[:1], steps=1)  # first use of the CPU kernels: not timed
    speeds = calibrate(torch.device("cpu"), 65, list(cands), steps=5)
    return {cands[s]: v for s, v in speeds.items()}


def machine() -> dict[str, Any]:
    import torch

    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(getattr(torch.cpu, f, lambda: False)() for f in checks)
    return {"cpu": cpu, "cores": os.cpu_count(), "bf16_native": native, "torch": torch.__version__, "precision": "fp32"}


def train_point(
    corpus: Path, layers: int, hidden: int, dropout: float, steps: int, folder: Path, options: str = ""
) -> dict[str, Any]:
    """One `charlm train` run on one niced thread (with `options` added); its summary and validation curve."""
    out = folder / f"run-{time.monotonic_ns()}"
    eval_every = max(25, steps // 10)
    cmd = [
        "nice", "-n", "10", sys.executable, "-m", "charlm", "train", str(corpus), "--out", str(out),
        "--layers", str(layers), "--hidden", str(hidden), "--dropout", str(dropout),
        "--max-steps", str(steps), "--eval-every", str(eval_every),
        "--precision", "fp32", "--device", "cpu", "--json", "--quiet", *options.split(),
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
        "| corpus | budget | shape | dropout | options | steps | passes | best val nats/char | at step | last val "
        "| last train |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {point: i for i, point in enumerate(points())}  # the grid's order: by corpus, then budget
    for p in sorted(results["points"], key=lambda p: order.get(point_key(p), len(order))):
        lines.append(
            f"| {p['corpus']} | {p['budget']} | {p['shape']} | {p['dropout']} | {p.get('options') or '-'} "
            f"| {p['steps']:,} | {p['passes']:.1f} "
            f"| {p['best_val_nats']:.4f} | {p['best_step']:,} | {p['final_val_nats']:.4f} "
            f"| {p['final_train_nats']:.3f} |"
        )
    return "\n".join(lines)


def point_key(p: dict[str, Any]) -> tuple[str, str, str, float, str]:
    return (p["corpus"], p["budget"], p["shape"], p["dropout"], p.get("options", ""))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--calibrate", action="store_true", help="time the shapes again before running")
    p.add_argument("--table", action="store_true", help="print the table of the stored results only")
    p.add_argument("--only", default="", help="run only the points whose line (as printed) contains this")
    p.add_argument("--merge", type=Path, nargs="+", help="add these shards' points to --json, print the table")
    p.add_argument("--shard", default="1/1", help="K/N: run every N-th point from the K-th (one process a core)")
    p.add_argument("--grid", choices=("all", "base", "variants", "combos", "repeats"), default="all", help="points")
    args = p.parse_args(argv)
    start = args.json if args.json.is_file() else DEFAULT_JSON  # a shard's own file starts from the stored one
    results = json.loads(start.read_text()) if start.is_file() else {"points": []}
    if args.merge:
        for shard in args.merge:
            known = {point_key(q) for q in results["points"]}
            results["points"] += [q for q in json.loads(shard.read_text())["points"] if point_key(q) not in known]
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if not args.table and not args.merge:
        grids = {"variants": VARIANTS, "combos": COMBOS, "repeats": REPEATS}
        base = [q for q in points() if not any(q in g for g in grids.values())]
        todo = {**grids, "base": base}.get(args.grid, points())
        keys = sorted({(s, seq_len_of(o)) for _, _, s, _, o in todo})  # every shard's: all timed at once
        speeds = results.get("speeds", {})
        if args.calibrate or not all(speed_key(*k) in speeds for k in keys):
            missing = keys if args.calibrate else [k for k in keys if speed_key(*k) not in speeds]
            results["speeds"] = {**speeds, **measure_speeds(missing)}
            results["machine"] = {**machine(), "load_average_at_calibration": os.getloadavg()[0]}
            args.json.write_text(json.dumps(results, indent=1) + "\n")
        k, n = (int(x) for x in args.shard.split("/"))
        run_grid(results, todo[k - 1 :: n], args.only, args.json)
    print(table(results))


def run_grid(results: dict[str, Any], todo: list[tuple[str, str, str, float, str]], only: str, path: Path) -> None:
    done = {point_key(q) for q in results["points"]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for corpus, budget, shape, dropout, options in todo:
            said = f"{corpus} {budget} {shape} d{dropout} {options}".strip()
            if (corpus, budget, shape, dropout, options) in done or only not in said:
                continue
            file = corpus_file(corpus, folder)
            seq_len = seq_len_of(options)
            chars_per_step = BATCH * seq_len
            train_chars = math.floor(len(file.read_text(encoding="utf-8")) * 0.9)
            if budget.endswith("x"):
                steps = round(float(budget[:-1]) * train_chars / chars_per_step)
            else:
                speed = results["speeds"][speed_key(shape, seq_len)]
                steps = max(1, round(BUDGETS[budget] * speed * OVERHEAD / chars_per_step))
            r = train_point(file, *shape_of(shape), dropout, steps, folder, options)
            point = {"corpus": corpus, "budget": budget, "shape": shape, "dropout": dropout, "options": options,
                     "train_chars": train_chars, "passes": steps * chars_per_step / train_chars, **r}  # fmt: skip
            results["points"].append(point)
            path.write_text(json.dumps(results, indent=1) + "\n")  # after every point: the sweep can be stopped
            print(f"{said}: {r['best_val_nats']:.4f} ({r['wall_s']:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
