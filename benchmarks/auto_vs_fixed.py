"""Automatic configuration against the fixed defaults it replaced, budget for budget, on each CPU kind.

For each budget, one after another in this process: `charlm train CORPUS --max-time T` (automatic), then the
same with the previous release's fixed defaults given by hand (2 layers of 256, embedding 64, no dropout, 32
streams of 64, lr 3e-3 decayed by a cosine to a tenth, validation every 500 steps); each run's best checkpoint
is then scored on the last 10% of its text with `charlm evaluate` (nats/char). The texts: tiny Shakespeare
(1, 3 and 10 minutes) and its first 200,000 characters (1 and 5 minutes).

    python benchmarks/auto_vs_fixed.py                          # the native kind: bf16 where the CPU has it
    python benchmarks/auto_vs_fixed.py --kind avx2              # ATEN_CPU_CAPABILITY=avx2 and --precision fp32
    python benchmarks/auto_vs_fixed.py --kind native,avx2       # both, one after the other
    python benchmarks/auto_vs_fixed.py --budgets 15s --small-budgets 15s --allow-load   # a quick check
    python benchmarks/auto_vs_fixed.py --budgets '' --small-budgets 1m --seeds 1,2,3   # a row's mean of 3 seeds

Timing figures need a quiet machine, so it refuses to start when the 1-minute load average is above
--max-load (0.5) unless --allow-load. It prints a table (with the CPU model and whether bf16 is native) and
appends every pair to benchmarks/auto_vs_fixed.json. With --seeds each budget trains one pair a seed (auto,
fixed, auto, fixed, ...: a drift in the machine's speed falls on both) and the table shows their means.
Automatic should never be worse than fixed by more than TOLERANCE nats/char.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep  # noqa: E402
from sweep import ROOT, machine  # noqa: E402

FIXED = ["--hidden", "256", "--layers", "2", "--embed", "64", "--dropout", "0", "--batch-size", "32",
         "--seq-len", "64", "--lr", "0.003", "--lr-schedule", "cosine", "--min-lr-ratio", "0.1",
         "--eval-every", "500"]  # fmt: skip
KINDS = {"native": ({}, []), "avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, ["--precision", "fp32"])}
TOLERANCE = 0.005  # nats/char: how much worse than fixed automatic may come out
TEXTS = {"full": "tiny Shakespeare", "small": "its first 200,000 characters"}


def charlm(args: list[str], env: dict[str, str]) -> str:
    """stdout of `python -m charlm ARGS` (this checkout's charlm); a failure stops the benchmark."""
    done = subprocess.run(
        [sys.executable, "-m", "charlm", *args], capture_output=True, text=True, env={**os.environ, **env}
    )
    if done.returncode:
        raise SystemExit(f"charlm {args[0]} failed: {done.stderr.strip()[-1000:]}")
    return done.stdout


def one_run(corpus: Path, val: Path, budget: str, extra: list[str], env: dict[str, str], out: Path) -> dict[str, Any]:
    """Train into `out`, then score its best checkpoint on `val`: nats/char, steps, speed, what was chosen."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = json.loads(
        charlm(["train", str(corpus), "--out", str(out), "--max-time", budget, *extra, "--json", "-q"], env)
        .strip()
        .splitlines()[-1]
    )
    wall = time.perf_counter() - t0
    score = json.loads(charlm(["evaluate", str(out), str(val), "--json"], env).strip().splitlines()[-1])
    info = json.loads(charlm(["info", str(out), "--json"], env))
    auto = info.get("auto") or {}
    return {
        "nats_per_char": score["loss"],  # charlm evaluate: nats per character scored
        "steps": summary["steps"],
        "chars_per_sec": round(summary["chars_per_sec"]),
        "wall_s": round(wall, 1),
        "shape": f"{info['model']['layers']}x{info['model']['hidden']}",
        "dropout": info["model"]["dropout"],
        "batch_size": info["training"]["batch_size"],
        "auto": {k: auto[k] for k in ("reason", "calibration", "calibration_seconds", "replanned") if k in auto},
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def held_out(corpus: Path, folder: Path) -> Path:
    """The last 10% of the text (charlm's default split), as a file for `charlm evaluate`."""
    text = corpus.read_text(encoding="utf-8")
    path = folder / f"{corpus.stem}.val.txt"
    path.write_text(text[len(text) - int(len(text) * 0.1) :], encoding="utf-8")
    return path


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row a (kind, text, budget): the first seed's pair with each side's nats/char and steps averaged over
    the seeds (and how many there were)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r["text"], r["budget"]), []).append(r)
    out = []
    for group in groups.values():
        row = {**group[0], "seeds": len(group)}
        for side in ("auto", "fixed"):
            runs = [g[side] for g in group]
            row[side] = {**runs[0], "nats_per_char": sum(r["nats_per_char"] for r in runs) / len(runs),
                         "steps": round(sum(r["steps"] for r in runs) / len(runs))}  # fmt: skip
        out.append(row)
    return out


def table(rows: list[dict[str, Any]], about: dict[str, Any]) -> str:
    bf16 = "bf16 native" if about["bf16_native"] else "no native bf16"
    lines = [
        f"{about['cpu']}, {about['cores']} cores, {bf16}, torch {about['torch']}",
        "",
        "| kind | text | budget | seeds | automatic: nats/char (steps; choice) | fixed 2x256: nats/char (steps) "
        "| auto - fixed | within 0.005 | calibration s | re-plan |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in mean_rows(rows):
        a, f = r["auto"], r["fixed"]
        diff = a["nats_per_char"] - f["nats_per_char"]
        choice = f"{a['shape']}, dropout {a['dropout']:g}, batch {a['batch_size']}"
        replanned = a["auto"].get("replanned")
        changed = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in (replanned or {}).get("changed", {}).items())
        replan = "-" if replanned is None else f"{replanned['measured_chars_per_sec']:,} chars/s: {changed or 'kept'}"
        lines.append(
            f"| {r['kind']} | {TEXTS[r['text']]} | {r['budget']} | {r['seeds']} "
            f"| {a['nats_per_char']:.4f} ({a['steps']:,}; "
            f"{choice}) | {f['nats_per_char']:.4f} ({f['steps']:,}) | {diff:+.4f} | "
            f"{'yes' if diff <= TOLERANCE else 'NO'} | {a['auto'].get('calibration_seconds', '-')} | {replan} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", default="native", help="native, avx2, or both as native,avx2")
    p.add_argument("--budgets", default="1m,3m,10m", help="budgets on tiny Shakespeare, comma-separated")
    p.add_argument("--small-budgets", default="1m,5m", help="budgets on its first 200,000 characters")
    p.add_argument("--shakespeare", type=Path, default=sweep.SHAKESPEARE, help="where tiny Shakespeare is")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "auto_vs_fixed.json")
    p.add_argument("--seeds", default="", help="comma-separated --seed values: one pair each (default: charlm's)")
    p.add_argument("--max-load", type=float, default=0.5, help="the busiest 1-minute load average to start at")
    p.add_argument("--allow-load", action="store_true", help="run on a busy machine anyway (figures disturbed)")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.kind.split(",") if k.strip()]
    try:
        seeds: list[int | None] = [int(s) for s in args.seeds.split(",") if s.strip()] or [None]
    except ValueError:
        raise SystemExit(f"--seeds must be comma-separated integers (got {args.seeds!r})") from None
    if not kinds or any(k not in KINDS for k in kinds):
        raise SystemExit(f"--kind must be native, avx2 or native,avx2 (got {args.kind!r})")
    if not args.shakespeare.is_file():
        raise SystemExit(f"{args.shakespeare}: not found (give --shakespeare PATH)")
    sweep.SHAKESPEARE = args.shakespeare  # what sweep.corpus_file reads
    load = os.getloadavg()[0]
    if load > args.max_load and not args.allow_load:
        raise SystemExit(
            f"the machine is busy (load average {load:.2f} > {args.max_load}): timed budgets would measure the "
            "other work; wait for a quiet machine, or add --allow-load to run anyway"
        )
    plan = [("full", b) for b in args.budgets.split(",") if b] + [
        ("small", b) for b in args.small_budgets.split(",") if b
    ]
    about = {**machine(), "load_average_at_start": round(load, 2)}
    del about["precision"]  # each kind says its own
    stored = json.loads(args.json.read_text()) if args.json.is_file() else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in kinds:
            env, precision = KINDS[kind]
            for (text, budget), seed in itertools.product(plan, seeds):
                corpus = sweep.corpus_file(text, folder)
                val = held_out(corpus, folder)
                pair: dict[str, Any] = {"kind": kind, "text": text, "budget": budget}
                seeded = [] if seed is None else ["--seed", str(seed)]
                if seed is not None:
                    pair["seed"] = seed
                for name, extra in (("auto", [*precision, *seeded]), ("fixed", [*FIXED, *precision, *seeded])):
                    out = folder / f"{kind}-{text}-{budget}-{name}-{seed}"
                    pair[name] = one_run(corpus, val, budget, extra, env, out)
                    print(f"{kind} {text} {budget} {name}{'' if seed is None else f' seed {seed}'}: "
                          f"{pair[name]['nats_per_char']:.4f} nats/char ({pair[name]['steps']:,} steps)",
                          file=sys.stderr, flush=True)  # fmt: skip
                rows.append(pair)
                stored.append({**pair, "machine": about, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())})
                args.json.write_text(json.dumps(stored, indent=1) + "\n")  # after every pair: it can be stopped
    print(table(rows, about))
    worst = max(r["auto"]["nats_per_char"] - r["fixed"]["nats_per_char"] for r in mean_rows(rows))
    print(f"\nworst auto - fixed: {worst:+.4f} nats/char (tolerance {TOLERANCE}); load average {load:.2f} at start")
    if not math.isfinite(worst):
        raise SystemExit("a run gave no finite score")


if __name__ == "__main__":
    main()
