"""Measure charlm against bare PyTorch loops of the same shape, in one run, on this machine.

    python benchmarks/run_all.py                   # default model, a few minutes on 2 cores
    python benchmarks/run_all.py --large-mb 1024   # the 1 GB encoding/training-memory case
    python benchmarks/run_all.py --quick           # tiny sizes: checks the script runs, figures mean nothing

Prints a table on stdout and writes JSON (default benchmarks/results.json) with the machine's description.
Training quality (validation loss after a time budget) is benchmarks/quality.py: it takes minutes per point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from charlm.checkpoint.manifest import mark
from charlm.config import ModelConfig, TrainConfig
from charlm.device import pick_precision
from charlm.model import CharGRU
from charlm.tokenizer import CharTokenizer
from charlm.training.trainer import TrainData, Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inference  # noqa: E402  (the sampling and scoring figures, on the helpers in common.py)
from common import (  # noqa: E402
    ALPHABET,
    CHARLM,
    ROOT,
    best_time,
    cli_seconds,
    flops_per_train_char,
    machine,
    matmul_peak,
    random_text,
    save_model,
)

__all__ = ["ALPHABET", "CHARLM", "ROOT", "best_time", "cli_seconds", "flops_per_train_char", "machine",
           "matmul_peak", "random_text", "save_model"]  # fmt: skip


def bare_train(m: ModelConfig, t: TrainConfig, ids: np.ndarray, steps: int, amp: torch.dtype | None = None) -> float:
    """chars/s of a plain embedding -> nn.GRU -> linear loop with Adam, same shape as charlm's model; with `amp`,
    the forward pass runs under torch.autocast to that dtype (what charlm's --precision bf16 does)."""
    torch.manual_seed(0)
    emb, gru, head = nn.Embedding(m.vocab_size, m.embed), nn.GRU(m.embed, m.hidden, m.layers, batch_first=True), None
    head = nn.Linear(m.hidden, m.vocab_size)
    params = [*emb.parameters(), *gru.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    x = torch.from_numpy(ids[: t.batch_size * t.seq_len].astype(np.int64)).view(t.batch_size, t.seq_len)
    y = torch.from_numpy(ids[1 : t.batch_size * t.seq_len + 1].astype(np.int64)).view(t.batch_size, t.seq_len)
    h = None

    def step() -> None:
        nonlocal h
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            out, h = gru(emb(x), h)
            logits = head(out)
        h = h.detach()
        loss = nn.functional.cross_entropy(logits.float().view(-1, m.vocab_size), y.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    return steps * t.batch_size * t.seq_len / best_time(lambda: [step() for _ in range(steps)], 1)


def charlm_train(m: ModelConfig, t: TrainConfig, ids: np.ndarray, tok: CharTokenizer) -> dict[str, float]:
    """chars/s of charlm's Trainer.fit (with its validations and checkpoints), and the share of wall time
    spent outside the model's own forward/backward/update (data, logging, validation, checkpoints)."""
    n_val = max(len(ids) // 10, 2)
    with tempfile.TemporaryDirectory() as run:
        data = TrainData(tok, ids[:-n_val], ids[-n_val:], {"sources": [], "fingerprint": "bench"})
        trainer = Trainer(Path(run), m, t, data)
        inside = {"model": 0.0, "batch": 0.0}
        step, next_batch = trainer.train_step, trainer.streams.next_batch

        def timed(fn: Any, key: str) -> Any:
            def wrapper() -> Any:
                t0 = time.perf_counter()
                out = fn()
                inside[key] += time.perf_counter() - t0
                return out

            return wrapper

        trainer.train_step, trainer.streams.next_batch = timed(step, "model"), timed(next_batch, "batch")
        t0 = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - t0
    model_time = inside["model"] - inside["batch"]
    chars = result.step * t.batch_size * t.seq_len
    return {
        "chars_per_sec": chars / wall,
        "model_chars_per_sec": chars / model_time,
        "overhead_pct": 100 * (wall - model_time) / wall,
        "steps": result.step,
        "wall_s": wall,
    }


def child_stats(setup: str, code: str) -> dict[str, float]:
    """Run `setup` then `code` in a fresh Python process: seconds spent in `code`, and the process's peak RSS."""
    wrapper = (
        "import sys, time\n" + setup + "\nt0 = time.perf_counter()\n"
        "try:\n    exec(CODE)\nexcept SystemExit as e:\n    if e.code:\n        raise\n"
        "dt = time.perf_counter() - t0\n"
        # VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork and exec
        "hwm = next(int(ln.split()[1]) for ln in open('/proc/self/status') if ln.startswith('VmHWM'))\n"
        "print('STATS', dt, hwm, file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", f"CODE = {code!r}\n" + wrapper], capture_output=True, text=True)
    stats = [ln.split() for ln in out.stderr.splitlines() if ln.startswith("STATS ")]
    if out.returncode or not stats:
        raise RuntimeError(f"benchmark child failed: {out.stderr[-2000:]}")
    return {"seconds": float(stats[-1][1]), "peak_rss_mb": float(stats[-1][2]) / 1024}


def encode_and_train(mb: float, folder: Path, quick: bool) -> dict[str, float]:
    """Encoding MB/s and peak RSS (own process each) for a generated corpus of `mb` megabytes, then the peak RSS
    of `charlm train` on it (a few steps of a small model; the ids are already cached)."""
    path, run = folder / f"corpus-{mb:g}MB.txt", folder / f"run-{mb:g}MB"
    block, left = random_text(1 << 20, seed=1), round(mb * 1e6)
    with open(path, "w") as f:
        while left > 0:
            left -= f.write(block[:left])
    size = path.stat().st_size
    run.mkdir(parents=True, exist_ok=True)
    mark(run)  # a run folder, so that `charlm train --out` takes the ids encoded into it here
    enc = child_stats(
        "from pathlib import Path\nfrom charlm.data.encode import encode_corpus",
        f"encode_corpus([{str(path)!r}], Path({str(run / 'data')!r}), 0.1, progress=False)",
    )
    argv = ["charlm", "train", str(path), "--out", str(run), "--hidden", "64", "--max-steps", "2" if quick else "5"]
    train = child_stats("from charlm.cli import main", f"sys.argv = {argv + ['-q']!r}\nmain()")
    path.unlink()
    return {
        "corpus_mb": size / 1e6,
        "encode_mb_per_s": size / 1e6 / enc["seconds"],
        "encode_peak_rss_mb": enc["peak_rss_mb"],
        "train_peak_rss_mb": train["peak_rss_mb"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    q = args.quick
    m = ModelConfig(vocab_size=len(ALPHABET), hidden=16 if q else args.hidden or ModelConfig(1).hidden)
    t = TrainConfig(max_steps=args.steps, eval_every=args.eval_every or TrainConfig().eval_every, device="cpu")
    amp = pick_precision(t.precision, torch.device("cpu"))
    if q:
        t.batch_size, t.seq_len = 4, 16
    tok = CharTokenizer(ALPHABET)
    ids = tok.encode(random_text(max(400_000, 2 * t.batch_size * t.seq_len * (args.steps + 1)))).astype(np.uint8)
    res: dict[str, Any] = {"machine": machine(), "model": m.to_dict(), "train_config": t.to_dict()}
    peak = matmul_peak(256 if q else 2048, 3 if q else 10)
    peak_amp = matmul_peak(256 if q else 2048, 3 if q else 10, amp) if amp is not None else peak
    bare = bare_train(m, t, ids, args.steps)
    bare_amp = bare_train(m, t, ids, args.steps, amp) if amp is not None else bare
    ours = charlm_train(m, t, ids, tok)
    fpc = flops_per_train_char(m)
    res["matmul_peak_gflops"] = peak
    res["train"] = {
        "precision": "bf16" if amp is not None else "fp32",
        "matmul_peak_gflops_in_that_precision": peak_amp,
        "bare_gru_chars_per_sec": bare,
        "bare_gru_same_precision_chars_per_sec": bare_amp,
        **{f"charlm_{k}": v for k, v in ours.items()},
        "ratio_charlm_to_bare": ours["chars_per_sec"] / bare,
        "ratio_charlm_to_bare_same_precision": ours["chars_per_sec"] / bare_amp,
        "flops_per_train_char": fpc,
        "fraction_of_matmul_peak": ours["chars_per_sec"] * fpc / (peak_amp * 1e9),
    }

    with tempfile.TemporaryDirectory() as tmp:
        ck = save_model(Path(tmp) / "run", m, tok)
        sample, evaluate = inference.figures(
            CharGRU(m).eval(), ck, peak, q, args.sample_chars, args.cli_chars, args.eval_chars
        )
        res["sample"], res["evaluate"] = sample, evaluate
        r = 1 if q else 5
        res["startup"] = {
            "help_s": cli_seconds(["--help"], r),
            "usage_error_s": cli_seconds(["train", "--hidden", "x"], r),
        }
        sizes = [0.05, 0.2] if q else [1.0, args.large_mb]
        res["encode"] = [encode_and_train(mb, Path(tmp), q) for mb in sizes]
    res["machine"]["load_average_at_end"] = os.getloadavg()
    return res


def table(res: dict[str, Any]) -> str:

    mc, tr = res["machine"], res["train"]
    prec = tr.get("precision", "fp32")
    same = tr.get("bare_gru_same_precision_chars_per_sec", tr["bare_gru_chars_per_sec"])
    rows = [
        ("machine", f"{mc['cpu']}, {mc['cores']} cores, torch {mc['torch']}, {mc['threads']} threads"),
        ("load average (start / end)", f"{mc['load_average_at_start'][0]:.2f} / {mc['load_average_at_end'][0]:.2f}"),
        ("model", f"hidden {res['model']['hidden']}, layers {res['model']['layers']}, embed {res['model']['embed']}"),
        ("fp32 matmul peak", f"{res['matmul_peak_gflops']:.0f} GFLOP/s"),
        ("train: charlm's precision", f"{prec} ({tr.get('matmul_peak_gflops_in_that_precision', 0):.0f} GFLOP/s peak)"),
        ("train: bare nn.GRU loop, fp32", f"{tr['bare_gru_chars_per_sec']:,.0f} chars/s"),
        (f"train: bare nn.GRU loop, {prec}", f"{tr.get('bare_gru_same_precision_chars_per_sec', 0):,.0f} chars/s"),
        ("train: charlm fit (all included)", f"{tr['charlm_chars_per_sec']:,.0f} chars/s"),
        ("train: charlm / bare fp32", f"{tr['ratio_charlm_to_bare']:.2f}"),
        (f"train: charlm / bare {prec}", f"{tr.get('ratio_charlm_to_bare_same_precision', 0):.2f}"),
        ("train: charlm steps alone / bare", f"{tr['charlm_model_chars_per_sec'] / same:.2f} (same precision)"),
        ("train: fraction of matmul peak", f"{100 * tr['fraction_of_matmul_peak']:.1f}% (of the {prec} peak)"),
        ("train: outside the model", f"{tr['charlm_overhead_pct']:.1f}% of wall time ({tr['charlm_steps']} steps)"),
        ("charlm --help", f"{res['startup']['help_s']:.2f} s"),
        ("charlm argument error", f"{res['startup']['usage_error_s']:.2f} s"),
    ]
    ev = res.get("evaluate") or {"chars_per_sec": res["evaluate_chars_per_sec"]}  # as results saved it before
    rows[-2:-2] = inference.rows(res["sample"], ev)
    for e in res["encode"]:
        rows.append(
            (
                f"{e['corpus_mb']:,.1f} MB corpus",
                f"encode {e['encode_mb_per_s']:.0f} MB/s, peak RSS {e['encode_peak_rss_mb']:.0f} MB; "
                f"train peak RSS {e['train_peak_rss_mb']:.0f} MB",
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{width}} | {v} |" for k, v in rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    p.add_argument("--hidden", type=int, default=None, help="model size (default: charlm's default)")
    p.add_argument("--steps", type=int, default=30, help="training steps timed, for each of charlm and the bare loop")
    p.add_argument("--eval-every", type=int, default=None, help="charlm's validation interval in the timed run")
    p.add_argument("--sample-chars", type=int, default=2000, help="characters sampled per timing")
    p.add_argument("--cli-chars", type=int, default=100_000, help="characters of the timed `charlm sample` command")
    p.add_argument("--eval-chars", type=int, default=300_000, help="characters scored by the evaluate timing")
    p.add_argument("--large-mb", type=float, default=100.0, help="size of the large generated corpus (1024 = 1 GB)")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json", help="where to write JSON")
    p.add_argument("--show", type=Path, default=None, help="print the table of an earlier JSON result and exit")
    args = p.parse_args(argv)
    if args.show:
        print(table(json.loads(args.show.read_text())))
        return
    if args.quick:
        args.steps = min(args.steps, 3)
    res = run(args)
    res["command"] = " ".join(["python", "benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    print(table(res))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
