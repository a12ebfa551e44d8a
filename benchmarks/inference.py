"""Sampling and scoring speed: charlm against the plain per-character nn.GRU loop, and against the matmul peak.

    python benchmarks/inference.py           # these figures alone (about a minute); run_all.py includes them
    python benchmarks/inference.py --quick   # tiny sizes: checks the script runs, figures mean nothing

One stream: the plain loop (model on one character, softmax, multinomial), charlm's loop in this process,
and `charlm sample` itself (its time for --length N less its time for --length 1, so start-up is not
counted). 256 streams, and `evaluate`, also as a fraction of the fp32 matmul peak: characters/s times the
model's matrix-product FLOPs per character. First character: from starting `charlm sample` to its first
byte on stdout, start-up included.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig
from charlm.inference import sample as sampling
from charlm.inference.evaluate import score_ids
from charlm.model import CharGRU
from charlm.tokenizer import CharTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ALPHABET,
    CHARLM,
    best_time,
    cli_seconds,
    flops_per_train_char,
    matmul_peak,
    random_text,
    save_model,
)


def flops_per_char(m: ModelConfig) -> float:
    """Matrix-product FLOPs of the model's forward pass per character (input, recurrent and head products)."""
    return flops_per_train_char(m) / 3


def plain_sample(model: CharGRU, n: int, batch: int = 1) -> float:
    """chars/s of the straightforward loop: the model on one character, softmax, multinomial, per step."""
    gen = torch.Generator().manual_seed(0)
    x, h = torch.zeros(batch, 1, dtype=torch.long), None

    def run() -> None:
        nonlocal x, h
        with torch.no_grad():
            for _ in range(n):
                logits, h = model(x, h)
                x = torch.multinomial(logits[:, -1].softmax(-1), 1, generator=gen)
                x.tolist()  # what a caller does with each character

    return n * batch / best_time(run, 5)


def charlm_sample(model: Any, n: int, batch: int = 1) -> float:
    """chars/s of charlm's sampling loop in this process, on `model` as given (a torch model or its weights)."""
    opts = sampling.SampleOptions(length=n, seed=0)
    return n * batch / best_time(lambda: list(sampling.generate_chunks(model, [0], opts, batch)), 5)


def first_char_s(run: Path, repeats: int) -> float:
    """Seconds from starting `charlm sample` to its first character on stdout."""
    import subprocess

    def once() -> float:
        t0 = time.perf_counter()
        p = subprocess.Popen([*CHARLM, "sample", str(run), "--length", "200", "-q"], stdout=subprocess.PIPE)
        assert p.stdout is not None
        p.stdout.read(1)
        t = time.perf_counter() - t0
        p.kill(), p.wait()
        return t

    return min(once() for _ in range(repeats))


def cli_sample_rate(run: Path, n: int, repeats: int) -> float:
    """chars/s of one stream through `charlm sample RUN --length n`: its time less that of --length 1."""
    args = ["sample", str(run), "--seed", "0", "-q", "--length"]
    return (n - 1) / (cli_seconds([*args, str(n)], repeats) - cli_seconds([*args, "1"], repeats))


def figures(model: CharGRU, run: Path, peak: float, quick: bool, one_chars: int, cli_chars: int, eval_chars: int):
    """Every figure, as (sample, evaluate) dicts; `run` is `model` saved as a checkpoint."""
    fpc, tok = flops_per_char(model.config), ckpt_io.resolve(run).tokenizer
    n1, nb = (50, 10) if quick else (one_chars, 128)
    one_plain = plain_sample(model, n1)
    one_ours = charlm_sample(sampling.load(ckpt_io.resolve(run), "cpu", 1)[0], n1)  # what the command loads
    one_cli = cli_sample_rate(run, 500 if quick else cli_chars, 1 if quick else 3)
    many = charlm_sample(model, nb, 256)
    sample = {
        "plain_loop_one_stream_chars_per_sec": one_plain,
        "charlm_one_stream_chars_per_sec": one_ours,
        "ratio_one_stream": one_ours / one_plain,
        "cli_one_stream_chars_per_sec": one_cli,
        "ratio_cli_one_stream": one_cli / one_plain,
        "plain_loop_256_streams_chars_per_sec": plain_sample(model, nb // 4, 256),
        "charlm_256_streams_chars_per_sec": many,
        "fraction_of_matmul_peak_256_streams": many * fpc / (peak * 1e9),
        "first_char_s": first_char_s(run, 1 if quick else 3),
    }
    ids = tok.encode(random_text(20_000 if quick else eval_chars, seed=2))
    rate = (len(ids) - 1) / best_time(lambda: score_ids(model, ids), 2)
    return sample, {"chars_per_sec": rate, "fraction_of_matmul_peak": rate * fpc / (peak * 1e9)}


def rows(sa: dict[str, float], ev: dict[str, float]) -> list[tuple[str, str]]:
    """Table rows of `figures`' results (results saved before a figure existed show nan for it)."""
    nan = float("nan")
    return [
        ("sample 1 stream: plain loop", f"{sa['plain_loop_one_stream_chars_per_sec']:,.0f} chars/s"),
        ("sample 1 stream: charlm", f"{sa['charlm_one_stream_chars_per_sec']:,.0f} chars/s"),
        ("sample 1 stream: charlm / plain", f"{sa['ratio_one_stream']:.2f}"),
        ("sample 1 stream: charlm sample command", f"{sa.get('cli_one_stream_chars_per_sec', nan):,.0f} chars/s"),
        ("sample 1 stream: command / plain", f"{sa.get('ratio_cli_one_stream', nan):.2f}"),
        ("sample 256 streams: plain loop", f"{sa['plain_loop_256_streams_chars_per_sec']:,.0f} chars/s"),
        ("sample 256 streams: charlm", f"{sa['charlm_256_streams_chars_per_sec']:,.0f} chars/s"),
        ("sample 256 streams: of fp32 peak", f"{100 * sa.get('fraction_of_matmul_peak_256_streams', nan):.1f}%"),
        ("charlm sample: first character", f"{sa['first_char_s']:.2f} s"),
        ("evaluate", f"{ev['chars_per_sec']:,.0f} chars/s"),
        ("evaluate: of fp32 peak", f"{100 * ev.get('fraction_of_matmul_peak', nan):.1f}%"),
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs")
    p.add_argument("--hidden", type=int, default=ModelConfig(1).hidden, help="model size")
    p.add_argument("--sample-chars", type=int, default=2000, help="characters per one-stream timing in process")
    p.add_argument("--cli-chars", type=int, default=100_000, help="characters of the timed `charlm sample`")
    p.add_argument("--eval-chars", type=int, default=300_000, help="characters scored by the evaluate timing")
    a = p.parse_args(argv)
    tok = CharTokenizer(ALPHABET)
    m = ModelConfig(vocab_size=len(ALPHABET), hidden=16 if a.quick else a.hidden)
    peak = matmul_peak(256 if a.quick else 2048, 3 if a.quick else 10)
    with tempfile.TemporaryDirectory() as tmp:
        run = save_model(Path(tmp) / "run", m, tok)
        model = CharGRU(m).eval()
        sa, ev = figures(model, run, peak, a.quick, a.sample_chars, a.cli_chars, a.eval_chars)
    out = [("fp32 matmul peak", f"{peak:.0f} GFLOP/s"), *rows(sa, ev)]
    width = max(len(k) for k, _ in out)
    print("\n".join(f"| {k:<{width}} | {v} |" for k, v in out))


if __name__ == "__main__":
    main()
