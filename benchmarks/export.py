"""`charlm export`: the sizes of model.onnx in fp32 and int8, the bits/char of each on a held-out text, and
onnxruntime's single-stream sampling speed against `charlm sample` on the same machine.

    python benchmarks/export.py                          # trains a 2-minute model on tiny Shakespeare first
    python benchmarks/export.py --checkpoint RUN --text held_out.txt
    python benchmarks/export.py --quick                  # tiny sizes: checks the script runs, figures mean nothing

Without --checkpoint it trains one with automatic configuration for --train-time on --corpus (default: tiny
Shakespeare at ../shared/corpora/tinyshakespeare.txt, or corpora/markov.txt when that is absent); charlm holds
out the last 10% of the text, and that part is the held-out text. Sampling speed, one stream, temperature 1: onnxruntime
on one thread with one call per character (ids (1, 1) and the state in, logits and the state out, then a
NumPy draw, as examples/onnx_sample.py does), against `charlm sample` (its time for --length N less its time
for --length 1, so start-up is not counted). The machine's CPU, bf16 support and load are printed with them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import best_time, cli_seconds, machine  # noqa: E402

from charlm import checkpoint as ckpt_io  # noqa: E402
from charlm.data.corpus import split_text  # noqa: E402
from charlm.device import pick_precision  # noqa: E402
from charlm.onnx_export import MODEL, OnnxModel, export  # noqa: E402

SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
MARKOV = ROOT / "corpora" / "markov.txt"


def train(corpus: Path, folder: Path, budget: str, extra: list[str]) -> Path:
    run = folder / "run"
    cmd = [sys.executable, "-m", "charlm", "train", str(corpus), "--out", str(run), "--max-time", budget, "-q"]
    done = subprocess.run([*cmd, *extra], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"training failed: {done.stderr[-2000:]}")
    return run


def onnx_sample_rate(model: OnnxModel, n: int, repeats: int) -> float:
    """Characters/s of one stream sampled one call per character (best of `repeats`)."""
    start = model.tokenizer["start"]

    def run() -> None:
        rng, state, x = np.random.default_rng(0), model.zero_state(1), start
        for _ in range(n):
            logits, state = model(np.array([[x]], np.int64), state)
            p = np.exp(logits[0, 0] - logits[0, 0].max()).astype(np.float64)
            x = int(rng.choice(len(p), p=p / p.sum()))

    run()  # warm-up
    return n / best_time(run, repeats)


def charlm_sample_rate(run: Path, n: int, repeats: int) -> float:
    """Characters/s of `charlm sample`, start-up not counted."""
    args = ["sample", str(run), "-q", "--seed", "0"]
    long, short = cli_seconds([*args, "--length", str(n)], repeats), cli_seconds([*args, "--length", "1"], repeats)
    return (n - 1) / max(long - short, 1e-9)


def charlm_evaluate(run: Path, text: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "charlm", "evaluate", str(run), str(text), "--json", "-q", "--skip-unknown"],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"charlm evaluate failed: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout)["bits_per_char"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="a trained run or checkpoint (default: train one)")
    p.add_argument("--corpus", type=Path, help="what a run is trained on (default: tiny Shakespeare, else markov.txt)")
    p.add_argument("--text", type=Path, help="the held-out text (default: the last 10%% of the training corpus)")
    p.add_argument("--train-time", default="2m", help="budget of the run trained when no --checkpoint is given")
    p.add_argument("--length", type=int, default=5000, help="characters sampled per timing")
    p.add_argument("--eval-chars", type=int, default=100_000, help="at most this many held-out characters scored")
    p.add_argument("--repeat", type=int, default=3, help="timings of each figure; the best is kept")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--quick", action="store_true", help="tiny model and sizes: checks the script runs")
    args = p.parse_args(argv)
    extra = []
    if args.quick:
        args.length, args.eval_chars, args.repeat, args.train_time = 200, 2000, 1, "5s"
        extra = ["--hidden", "32", "--layers", "1", "--batch-size", "4", "--seq-len", "16", "--max-steps", "20"]
    info = {**machine(), "bf16_native": pick_precision("auto", torch.device("cpu")) is not None}
    with tempfile.TemporaryDirectory(prefix="charlm-export-bench-") as tmp:
        folder = Path(tmp)
        corpus = args.corpus or (SHAKESPEARE if SHAKESPEARE.is_file() and not args.quick else MARKOV)
        if args.checkpoint is not None and args.text is None:
            sys.exit("--checkpoint needs --text: the held-out text to score")
        run = args.checkpoint or train(corpus, folder, args.train_time, extra)
        ck = ckpt_io.resolve(run)
        if args.text is None:  # the validation part charlm held out of the corpus the run was trained on
            held = split_text(corpus.read_text(encoding="utf-8"), ck.train_config.val_fraction)[1]
            text_name = f"the last {ck.train_config.val_fraction:.0%} of {corpus.name}"
        else:
            held, text_name = args.text.read_text(encoding="utf-8"), str(args.text)
        held = held[-args.eval_chars :]
        held_file = folder / "held_out.txt"
        held_file.write_text(held, encoding="utf-8")
        t0 = time.perf_counter()
        fp32 = export(ck, folder / "fp32")
        export_s = time.perf_counter() - t0
        int8 = export(ck, folder / "int8", int8=True, text=held, text_name=text_name)
        ids = ck.tokenizer.encode(held, "skip")
        models = {"fp32": OnnxModel(folder / "fp32" / MODEL), "int8": OnnxModel(folder / "int8" / MODEL)}
        m = ck.model_config
        res = {
            "machine": info,
            "model": {**m.to_dict(), "checkpoint": str(ck.path), "step": ck.step},
            "held_out": {"text": text_name, "chars": len(ids)},
            "export_seconds_fp32": export_s,
            "bytes": {"fp32": fp32.sizes[MODEL], "int8": int8.sizes[MODEL]},
            "bits_per_char": {
                "charlm_evaluate": charlm_evaluate(ck.path, held_file),
                **{k: om.bits_per_char(ids, 256) for k, om in models.items()},
            },
            "sample_chars_per_sec": {
                **{f"onnxruntime_{k}": onnx_sample_rate(om, args.length, args.repeat) for k, om in models.items()},
                "charlm_sample": charlm_sample_rate(ck.path, args.length, args.repeat),
            },
        }
    report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return res


def report(res: dict[str, Any]) -> None:
    mc, m, b, bpc, sp = res["machine"], res["model"], res["bytes"], res["bits_per_char"], res["sample_chars_per_sec"]
    print(
        f"machine: {mc['cpu']}, {mc['cores']} cores, bf16 native: {mc['bf16_native']}, torch {mc['torch']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in mc['load_average_at_start'])} ({mc['date_utc']} UTC)"
    )
    print(f"model: {m['cell']}, {m['layers']} x {m['hidden']}, vocabulary {m['vocab_size']}, step {m['step']}")
    print(f"held-out text: {res['held_out']['text']}, {res['held_out']['chars']:,} characters")
    print(f"export (fp32)        {res['export_seconds_fp32']:.2f} s, its onnxruntime check included")
    print(f"model.onnx size      fp32 {b['fp32']:,} bytes, int8 {b['int8']:,} bytes ({b['int8'] / b['fp32']:.0%})")
    print(
        f"bits/char            charlm evaluate {bpc['charlm_evaluate']:.5f}, onnxruntime fp32 {bpc['fp32']:.5f}, "
        f"int8 {bpc['int8']:.5f} ({bpc['int8'] - bpc['fp32']:+.5f})"
    )
    print(
        f"sampling, one stream onnxruntime fp32 {sp['onnxruntime_fp32']:,.0f} chars/s, int8 "
        f"{sp['onnxruntime_int8']:,.0f} chars/s; charlm sample {sp['charlm_sample']:,.0f} chars/s"
    )


if __name__ == "__main__":
    main()
