"""The `forecast` command: read a series, train a GRU forecaster on it (or load one with --from), and print the
forecast on stdout; progress, notes and errors go to stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from charlm.cli.options import Quiet, setting
from charlm.cli.output import print_json
from charlm.errors import UsageError
from charlm.ui.console import say, shell_word

STDIN = "-"


def _number(v: float) -> str:
    return f"{v:.6g}"


def _when(row: Any) -> str:
    t = row.timestamp
    if t is None:
        return str(row.step)
    return t.date().isoformat() if (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0) else t.isoformat()


def print_forecast(fc: Any) -> None:
    """One tab-separated row per future step under a header: step (or timestamp), median, p10, p90."""
    first = "timestamp" if fc.rows and fc.rows[0].timestamp is not None else "step"
    lines = [f"{first}\tmedian\tp10\tp90"]
    lines += [f"{_when(r)}\t{_number(r.median)}\t{_number(r.p10)}\t{_number(r.p90)}" for r in fc.rows]
    print("\n".join(lines))


def print_backtest(bt: Any) -> None:
    """The backtest's scores, tab-separated: one metric per row, charlm's and the seasonal-naive forecast's."""
    names = (("MASE", "mase"), ("sMAPE", "smape"), ("CRPS", "crps"), ("pinball", "pinball"), ("coverage80", "coverage"))
    lines = ["metric\tcharlm\tseasonal_naive"]
    for label, key in names:
        lines.append(f"{label}\t{getattr(bt.charlm, key):.4f}\t{getattr(bt.naive, key):.4f}")
    print("\n".join(lines))


def plot_target(path: Path, inputs: list[str], force: bool = False) -> Path:
    """Where --plot may write, by the rule every option that writes a file follows (charlm.outfile): not an
    input, not a run folder's own file, not over a file charlm did not draw."""
    from charlm import outfile
    from charlm.ui.plot import require_matplotlib

    require_matplotlib()  # before training, not after it
    outfile.check_file(path, option="--plot", kind="png", force=force, inputs=[i for i in inputs if i != STDIN])
    return path


def forecast(
    series: Annotated[
        Optional[str],
        typer.Argument(
            help="CSV or TSV with a header, one number per line, or - for stdin. With --from: new observations.",
            show_default=False,
        ),
    ] = None,
    horizon: Annotated[
        Optional[int],
        typer.Option("--horizon", "-H", help="Steps to forecast. \\[default: the season, or 10]", show_default=False),
    ] = None,
    column: Annotated[Optional[str], setting("The column of values (CSV/TSV).", "the first numeric one")] = None,
    time_column: Annotated[
        Optional[str], setting("The column of timestamps.", "one named date, time, month... that holds times")
    ] = None,
    season: Annotated[
        Optional[int], setting("Season length in steps.", "from the timestamps, else the autocorrelation")
    ] = None,
    fill: Annotated[bool, typer.Option("--fill", help="Interpolate missing, NaN or infinite values.")] = False,
    likelihood: Annotated[str, typer.Option(help="gaussian, student-t, or quantile (pinball loss).")] = "student-t",
    max_time: Annotated[Optional[str], setting("Training budget, e.g. 20s, 2m.", "30s")] = None,
    max_steps: Annotated[Optional[int], setting("Stop training after this many steps.")] = None,
    hidden: Annotated[Optional[int], setting("GRU state size.", "32, or 64 from 1000 values")] = None,
    layers: Annotated[Optional[int], setting("Stacked GRU layers.", 1)] = None,
    paths: Annotated[int, typer.Option(help="Sample paths the forecast is read from (at least 100).")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed (training and sample paths).")] = 1337,
    out: Annotated[Optional[Path], setting("Run folder for the forecaster.", "checkpoints/<series name>-forecast")] = (
        None
    ),
    resume: Annotated[bool, typer.Option(help="Continue training the run in --out where it stopped.")] = False,
    from_run: Annotated[
        Optional[Path], typer.Option("--from", help="Forecast from this saved run without training.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the forecast as one JSON object.")] = False,
    plot: Annotated[Optional[Path], setting("Also draw the history and the forecast into this PNG.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Let --plot replace an existing file that charlm did not write.")
    ] = False,
    backtest: Annotated[
        bool, typer.Option("--backtest", help="Hold out the last H values, forecast them, print the scores.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Forecast a series with a GRU: the median and the 10%-90% interval of each of the next H steps.

    Trains a small GRU forecaster (DeepAR-style: a distribution of each next value, sample paths drawn side by
    side) into a run folder; `charlm forecast --from RUN` forecasts again from it, with any new observations.
    """
    from charlm.series.data import read_series  # NumPy only: a bad series is refused before torch loads

    if from_run is not None:
        given = {"--resume": resume, "--backtest": backtest, "--max-time": max_time, "--max-steps": max_steps,
                 "--hidden": hidden, "--layers": layers, "--season": season, "--out": out}  # fmt: skip
        extra = [k for k, v in given.items() if v not in (None, False)]
        if extra:
            raise UsageError(f"--from forecasts from a trained run without training; drop {', '.join(extra)}")
    elif series is None and not resume:
        raise UsageError("give a SERIES (a CSV, a TSV, one number per line, or - for stdin), or --from RUN")
    target = plot_target(plot, [series] if series else [], force) if plot is not None else None
    data = read_series(series, column, time_column, fill) if series is not None else None
    if resume and out is None:
        raise UsageError("--resume needs --out RUN: the run folder to continue")
    from charlm.series.run import ForecastJob, TrainingInterrupted, run_forecast
    from charlm.training.request import default_out
    from charlm.ui.forecast import ForecastDisplay

    run = out if out is not None or from_run is not None else default_out([series or STDIN], suffix="-forecast")
    job = ForecastJob(
        series=data, horizon=horizon, season=season, likelihood=likelihood, max_time=max_time, max_steps=max_steps,
        hidden=hidden, layers=layers, paths=paths, seed=seed, out=run, resume=resume, from_run=from_run,
        backtest=backtest,
    )  # fmt: skip
    try:
        with ForecastDisplay(quiet=quiet) as display:
            fc = run_forecast(job, display)
    except TrainingInterrupted as e:
        raise typer.Exit(143 if e.signal_name == "SIGTERM" else 130) from None
    if target is not None:
        from charlm import outfile
        from charlm.ui.plot import plot_forecast

        with outfile.replacing(target, option="--plot") as f:  # whole or not at all
            plot_forecast(fc, f)
        if not quiet:
            say(f"wrote {target}")
    if not quiet and fc.run is not None and from_run is None:
        say(f"forecaster saved in {fc.run}; forecast again with: charlm forecast --from {shell_word(fc.run)}")
    if json_out:
        print_json(fc.to_dict())
    elif fc.backtest is not None:
        print_backtest(fc.backtest)
    else:
        print_forecast(fc)
