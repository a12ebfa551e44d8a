"""`charlm compare`: cells trained on the same text and budget, matched in size, each a normal run folder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from charlm import checkpoint as ckpt_io
from charlm.cli import app
from charlm.config import ModelConfig
from charlm.errors import UsageError
from charlm.model import count_params
from charlm.training.compare import compare, matched_width, parse_cells, time_to_reach
from charlm.ui.plot import compared_runs

runner = CliRunner()
TINY = [
    "--hidden", "96", "--embed", "8", "--batch-size", "4", "--seq-len", "16", "--lr", "0.01", "--device", "cpu",
    "--max-steps", "12", "--eval-every", "6", "--precision", "fp32",
]  # fmt: skip


def test_parse_cells_keeps_the_order_and_refuses_unknown_or_repeated_cells() -> None:
    assert parse_cells("lstm, GRU") == ["lstm", "gru"]
    with pytest.raises(UsageError, match="^cells must list some of gru, lstm, rnn"):
        parse_cells("gru,gru2")
    with pytest.raises(UsageError, match="names a cell twice"):
        parse_cells("gru,lstm,gru")


@pytest.mark.parametrize("hidden,embed,vocab,layers", [(256, 64, 65, 2), (64, 16, 30, 1), (512, 64, 200, 3)])
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_matched_width_gives_the_reference_parameter_count_within_2_percent(
    cell: str, hidden: int, embed: int, vocab: int, layers: int
) -> None:
    ref = ModelConfig(vocab_size=vocab, embed=embed, hidden=hidden, layers=layers)
    h = matched_width(cell, ref)
    mine = ModelConfig(vocab_size=vocab, embed=embed, hidden=h, layers=layers, cell=cell)
    assert abs(count_params(mine) - count_params(ref)) / count_params(ref) < 0.02
    assert (h < hidden) if cell == "lstm" else (h > hidden)  # an LSTM has 4 blocks per layer, a plain RNN 1


def test_time_to_reach_is_the_first_validation_at_or_below_the_target() -> None:
    metrics = [{"elapsed": 1.0, "val_bpc": 3.0}, {"elapsed": 2.0}, {"elapsed": 3.0, "val_bpc": 2.0}]
    assert time_to_reach(metrics, 2.5) == 3.0
    assert time_to_reach(metrics, 3.0) == 1.0
    assert time_to_reach(metrics, 1.0) is None and time_to_reach(metrics, None) is None


def test_compare_stops_after_an_interrupted_run_and_keeps_the_finished_ones(tmp_path: Path, tiny_run: Path) -> None:
    """The second cell is interrupted: compare returns both results and never starts the third."""
    calls = []

    def train_one(cell: str, settings: dict, run: Path):
        calls.append((cell, settings))
        cut = len(calls) == 2
        return SimpleNamespace(
            run=tiny_run, chars_per_sec=1.0, best_val_bpc=2.0, elapsed=1.0, stopped_by="SIGINT" if cut else "max_steps",
            interrupted=cut,
        )  # fmt: skip

    results = compare(["gru", "lstm", "rnn"], tmp_path / "cmp", {"max_steps": 5}, "width", train_one)
    assert [c for c, _ in calls] == ["gru", "lstm"] and [r.stopped_by for r in results] == ["max_steps", "SIGINT"]
    ref = ckpt_io.resolve(tiny_run).model_config
    # the second cell copies the reference's shape and schedule; with --match width its width too
    assert calls[1][1]["hidden"] == ref.hidden and calls[1][1]["layers"] == ref.layers and calls[1][1]["cell"] == "lstm"
    assert calls[1][1]["max_steps"] == 5


def test_cli_compare_trains_each_cell_into_its_own_run(tmp_path: Path, tiny_corpus: Path) -> None:
    parent = tmp_path / "cmp"
    res = runner.invoke(app, ["compare", str(tiny_corpus), "--out", str(parent), *TINY, "--json", "-q"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    rows = {r["cell"]: r for r in doc["cells"]}
    assert list(rows) == ["gru", "lstm", "rnn"]
    for cell, r in rows.items():
        ck = ckpt_io.resolve(Path(r["run"]))
        assert ck.model_config.cell == cell and ck.step == 12 and Path(r["run"]) == parent / cell
        assert abs(r["params"] - rows["gru"]["params"]) / rows["gru"]["params"] < 0.02
        assert r["best_val_bpc"] == pytest.approx(ckpt_io.resolve(Path(r["run"])).val_bpc)
        # each run is an ordinary one: it can be sampled from
        out = runner.invoke(app, ["sample", r["run"], "--length", "20", "--seed", "1", "-q"])
        assert out.exit_code == 0 and len(out.stdout) == 20, out.output
        scored = runner.invoke(app, ["evaluate", r["run"], str(tiny_corpus), "--json", "-q"])
        assert scored.exit_code == 0 and json.loads(scored.stdout)["chars"] > 0, scored.output
        described = json.loads(runner.invoke(app, ["info", r["run"], "--json"]).stdout)
        assert described["model"]["cell"] == cell and described["model"]["parameters"] == r["params"]
    assert rows["gru"]["time_to_reference"] is not None  # the reference reaches its own best
    assert set(compared_runs(parent)) == {"gru", "lstm", "rnn"}  # `charlm plot PARENT` draws one curve per cell
    table = runner.invoke(app, ["compare", str(tiny_corpus), "--out", str(tmp_path / "b"), *TINY, "--cells", "rnn"])
    assert table.exit_code == 0 and "RNN" in table.stdout and "best val" in table.stdout, table.output


def test_cli_compare_refuses_a_parent_that_already_holds_a_run(tmp_path: Path, tiny_corpus: Path) -> None:
    parent = tmp_path / "cmp"
    first = runner.invoke(app, ["compare", str(tiny_corpus), "--out", str(parent), *TINY, "--cells", "gru", "-q"])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["compare", str(tiny_corpus), "--out", str(parent), *TINY, "--cells", "lstm,gru"])
    assert again.exit_code == 2 and again.stdout == ""
    assert again.stderr.startswith("error: ") and again.stderr.count("\n") == 1 and "already holds a run for gru" in (
        again.stderr
    )
    assert not (parent / "lstm").exists()  # nothing trained


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cells", "gru2"], "--cells must list some of gru, lstm, rnn"),
        (["--match", "depth"], "--match must be params or width"),
        (["-"], "not from standard input"),
    ],
)
def test_cli_compare_bad_values_are_one_line_errors(tiny_corpus: Path, args: list[str], message: str) -> None:
    corpus = [] if args == ["-"] else [str(tiny_corpus)]
    res = runner.invoke(app, ["compare", *corpus, *TINY, *args])
    assert res.exit_code == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.output
    assert not Path("checkpoints").exists()


def test_train_refuses_an_unknown_cell_in_one_line(tiny_corpus: Path) -> None:
    res = runner.invoke(app, ["train", str(tiny_corpus), "--cell", "gru2", "--max-steps", "2"])
    assert res.exit_code == 2 and res.stdout == "" and res.stderr.count("\n") == 1
    assert "--cell must be gru, lstm or rnn (got 'gru2')" in res.stderr
    assert not Path("checkpoints").exists()
