"""The library side of the shell features: per-line scoring, sparklines, the training display."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rich.console import Console  # noqa: E402

from charlm.config import ModelConfig  # noqa: E402
from charlm.inference.evaluate import score_ids, score_lines, split_lines  # noqa: E402
from charlm.model import CharGRU  # noqa: E402
from charlm.tokenizer import CharTokenizer  # noqa: E402
from charlm.ui.charts import BLOCKS, curves, metric_series, resample, sparkline  # noqa: E402
from charlm.ui.progress import TrainDisplay, preview  # noqa: E402

TEXT = "the cat sat\non the mat\n\nand a dog ran off\nx\n"


@pytest.fixture(scope="module")
def lm() -> tuple[CharGRU, CharTokenizer]:
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    return CharGRU(ModelConfig(vocab_size=tok.vocab_size, hidden=16, embed=8)).eval(), tok


def test_score_lines_batched_equals_one_by_one(lm) -> None:
    model, tok = lm
    rng = np.random.default_rng(0)
    lines = [rng.integers(0, tok.vocab_size, size=n) for n in [0, 1, 5, 17, 3, 40, 2, 9, 1, 33]]
    nl = tok.id_of("\n")
    batched = score_lines(model, lines, nl, batch_size=4, chunk=7)  # lines of mixed length share a batch
    for ids, got in zip(lines, batched, strict=True):
        alone = score_lines(model, [ids], nl, batch_size=1)[0]
        assert got.chars == alone.chars == len(ids)
        assert got.bits == pytest.approx(alone.bits, rel=1e-5, abs=1e-9)
        # the same as scoring the line after a "\n" in one ordinary pass
        ref = score_ids(model, np.concatenate(([nl], ids)), streams=1) if len(ids) else None
        if ref is not None:
            assert got.bits == pytest.approx(ref.nats / math.log(2), rel=1e-5)


def test_score_lines_without_a_newline_leaves_the_first_character_unscored(lm) -> None:
    model, tok = lm
    ids = tok.encode("the mat")
    s = score_lines(model, [ids, ids[:1]], None)
    assert s[0].chars == len(ids) - 1 and s[1].chars == 0 and math.isnan(s[1].bits_per_char)
    assert s[0].bits == pytest.approx(score_ids(model, ids, streams=1).nats / math.log(2), rel=1e-5)


def test_score_lines_leaves_the_model_mode_alone(lm) -> None:
    model, tok = lm
    model.train()
    score_lines(model, [tok.encode("cat")], tok.id_of("\n"))
    assert model.training
    model.eval()


def test_split_lines() -> None:
    assert split_lines("a\nb\n") == ["a", "b"]
    assert split_lines("a\n\nb") == ["a", "", "b"]
    assert split_lines("") == []


def test_sparkline_scales_lowest_to_highest() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == BLOCKS
    assert sparkline([3, 1]) == "█▁"
    assert sparkline([2, 2, 2]) == "▁▁▁"
    assert sparkline([]) == ""
    assert sparkline([1, float("nan"), 2]) == "▁█"
    assert len(sparkline(list(range(1000)), width=40)) == 40


def test_resample_keeps_means() -> None:
    assert resample([1, 3, 5, 7], 2) == [2, 6]
    assert resample([1, 2], 5) == [1, 2]


def test_curves_share_one_scale() -> None:
    lines = curves({"train bpc": [4.0, 2.0], "val bpc": [3.0]}, width=10)
    assert lines[0].startswith("train bpc  █▁") and lines[1].startswith("val bpc    ▅")
    assert "4.000 -> 2.000 (min 2.000)" in lines[0]


def test_metric_series_converts_nats_to_bits() -> None:
    s = metric_series([{"step": 1, "train_loss": math.log(2) * 3, "val_bpc": 2.5}, {"step": 2, "train_loss": None}])
    assert s == {"train bpc": [pytest.approx(3.0)], "val bpc": [2.5]}


def test_preview_keeps_model_mode_and_global_random_state(lm) -> None:
    model, tok = lm
    model.train()
    state = torch.get_rng_state()
    text = preview(model, tok, length=30)
    assert len(text) == 30 and set(text) <= set(TEXT)
    assert model.training and torch.equal(state, torch.get_rng_state())
    model.eval()


def test_train_display_on_a_terminal_draws_the_curve_and_a_sample(lm) -> None:
    model, tok = lm
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, color_system=None, width=100)
    with TrainDisplay(console=con) as d:
        for step in range(1, 5):
            d("step", {"step": step, "loss": 3.0 - step * 0.5, "chars_per_sec": 1e3, "elapsed": 1.0, "progress": 0.2})
        d("eval", {"step": 4, "val_bpc": 2.0, "val_loss": 2.0 * math.log(2), "model": model, "tokenizer": tok})
        assert d.chart()[0].startswith("train bpc") and d.chart()[1].startswith("val bpc")
    out = buf.getvalue()
    assert "validation 2.0000 bits/char" in out and "sample: " in out and "val bpc" in out


def test_train_display_off_a_terminal_shows_no_chart_or_sample(lm) -> None:
    model, tok = lm
    buf = io.StringIO()
    with TrainDisplay(console=Console(file=buf, width=100)) as d:
        d("eval", {"step": 4, "val_bpc": 2.0, "val_loss": 1.3, "model": model, "tokenizer": tok})
    out = buf.getvalue()
    assert "validation 2.0000" in out and "sample:" not in out and "▁" not in out and "\x1b" not in out
