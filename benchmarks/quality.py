"""Validation loss after a training time budget: `charlm train CORPUS --max-time T` with charlm's defaults (or
the options given after --), scored on the corpus's last 10% (nanoGPT's split).

    python benchmarks/quality.py --max-time 3m                      # ../shared/corpora/tinyshakespeare.txt
    python benchmarks/quality.py --max-time 90s -- --hidden 256     # a variant, for comparing defaults

Prints one table row and appends the result, with the machine's description, to benchmarks/quality.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"


def train(corpus: Path, max_time: str, extra: list[str]) -> dict:
    """Run `charlm train` in a temporary run folder; its JSON summary plus nats/char."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "charlm", "train", str(corpus), "--out", f"{tmp}/run", "--max-time", max_time]
        out = subprocess.run([*cmd, *extra, "--json", "-q"], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"charlm train failed: {out.stderr.strip()[-1000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    bpc = summary["best_val_bpc"]
    summary["best_val_nats"] = None if bpc is None else bpc * math.log(2)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=SHAKESPEARE)
    p.add_argument("--max-time", default="3m")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "quality.json")
    p.add_argument("extra", nargs="*", help="options passed on to charlm train (after --)")
    args = p.parse_args(argv)
    if not args.corpus.is_file():
        raise SystemExit(f"{args.corpus}: not found (give --corpus)")
    load = os.getloadavg()[0]
    r = train(args.corpus, args.max_time, args.extra)
    row = {
        "corpus": args.corpus.name,
        "max_time": args.max_time,
        "options": " ".join(args.extra) or "(defaults)",
        "best_val_nats": r["best_val_nats"],
        "steps": r["steps"],
        "chars_per_sec": r["chars_per_sec"],
        "load_average": [load, os.getloadavg()[0]],
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    nats = "-" if row["best_val_nats"] is None else f"{row['best_val_nats']:.4f}"
    print(
        f"| {row['options']} | {args.max_time} | {nats} nats/char | {row['steps']} steps | "
        f"{row['chars_per_sec']:,.0f} chars/s | load {load:.1f} -> {row['load_average'][1]:.1f} |"
    )
    rows = json.loads(args.json.read_text()) if args.json.is_file() else []
    args.json.write_text(json.dumps([*rows, row], indent=2) + "\n")


if __name__ == "__main__":
    main()
