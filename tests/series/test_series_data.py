"""Reading a series: CSV, TSV, one number per line, stdin; its timestamps' step; its season; and every way a
series can be refused (one line naming the rows)."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from charlm.errors import SeriesError
from charlm.series.data import advance, as_series, autocorrelation_season, detect_season, parse_time, read_series


def write(name: str, text: str) -> str:
    Path(name).write_text(text, encoding="utf-8")
    return name


def monthly_csv(n: int = 36, start: int = 2020) -> str:
    rows = [f"{start + i // 12}-{i % 12 + 1:02d}-01,{10 + (i % 12) + 0.5 * i:.1f},x" for i in range(n)]
    return "date,sales,note\n" + "\n".join(rows) + "\n"


def test_csv_with_a_date_column_picks_the_first_numeric_column_and_the_monthly_step() -> None:
    s = read_series(write("s.csv", monthly_csv()))
    assert s.name == "sales" and len(s) == 36 and s.step == "month"
    assert s.values[:2].tolist() == [10.0, 11.5]
    assert s.timestamps[0] == datetime(2020, 1, 1)
    assert s.future_timestamps(2) == [datetime(2023, 1, 1), datetime(2023, 2, 1)]
    assert detect_season(s)[0] == 12


def test_tsv_named_column_and_time_column() -> None:
    text = "when\ta\tb\n" + "".join(f"2021-01-{d:02d}\t{d}\t{d * d}\n" for d in range(1, 29))
    s = read_series(write("s.tsv", text), column="b", time_column="when")
    assert s.step == "day" and s.values[-1] == 28 * 28


def test_one_number_per_line_and_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    s = read_series(write("v.txt", "1\n2.5\n\n3e1\n"))
    assert s.values.tolist() == [1.0, 2.5, 30.0] and s.timestamps is None and s.name == "v"
    monkeypatch.setattr("sys.stdin", io.StringIO("4\n5\n6\n"))
    assert read_series("-").values.tolist() == [4.0, 5.0, 6.0]


def test_time_formats() -> None:
    assert parse_time("1949") == datetime(1949, 1, 1)
    assert parse_time("1949.0") == datetime(1949, 1, 1)
    assert parse_time("2020-03") == datetime(2020, 3, 1)
    assert parse_time("2020Q2") == datetime(2020, 4, 1)
    assert parse_time("2020-03-04 05:06:07") == datetime(2020, 3, 4, 5, 6, 7)
    assert parse_time("soon") is None
    assert advance(datetime(2020, 1, 31), "month", 1) == datetime(2020, 2, 29)


@pytest.mark.parametrize(
    ("text", "args", "says"),
    [
        ("v\n1\n2\nabc\n4\n", {}, "line 4: 'abc' in column 'v' is not a number"),
        ("v\n1\n2\n", {"column": "w"}, "no column named 'w' (its columns: v)"),
        ("t,v\n2020-01-01,1\nlater,2\n", {}, "line 3: 'later' in column 't' is not a time"),
        ("t,v\n2020-01-02,1\n2020-01-01,2\n2020-01-03,3\n", {}, "not in order: line 3"),
        ("t,v\n2020-01-01,1\n2020-01-01,2\n2020-01-02,3\n", {}, "line 3 repeats the timestamp of line 2"),
        ("v\n1\nnan\n3\ninf\n5\n", {}, "NaN or missing and infinite value(s) at line(s) 3, 5; --fill"),
        ("i,v\n1,1\n2,\n3,3\n", {"column": "v"}, "NaN or missing value(s) at line(s) 3"),
        ("v\n2\n2\n2\n2\n", {}, "all 4 values are equal (2)"),
        ("", {}, "empty"),
        ("t,v\n2020-01-01,1\n2020-01-03,2\n2020-01-04,3\n2020-01-05,4\n", {}, "1 timestamp(s) missing between line 2"),
    ],
)
def test_bad_series_are_refused_in_one_line(text: str, args: dict, says: str) -> None:
    path = write("bad.csv", text)
    with pytest.raises(SeriesError) as e:
        read_series(path, **args)
    assert says in str(e.value) and "\n" not in str(e.value)
    assert Path(path).read_text(encoding="utf-8") == text  # never touched


def test_fill_interpolates_gaps_and_missing_timestamps() -> None:
    s = read_series(write("g.csv", "v\n1\nnan\n3\ninf\n5\n"), fill=True)
    assert s.values.tolist() == [1, 2, 3, 4, 5] and s.filled == [1, 3]
    t = read_series(write("t.csv", "t,v\n2020-01-01,1\n2020-01-03,3\n2020-01-04,4\n2020-01-05,5\n"), fill=True)
    assert t.values.tolist() == [1, 2, 3, 4, 5] and t.timestamps[1] == datetime(2020, 1, 2)


def test_python_values_and_pandas() -> None:
    pd = pytest.importorskip("pandas")
    idx = pd.date_range("2020-01-01", periods=30, freq="MS")
    s = as_series(pd.Series(np.arange(30.0), index=idx))
    assert s.step == "month" and s.timestamps[-1] == datetime(2022, 6, 1)
    with pytest.raises(SeriesError, match="NaN"):
        as_series([1.0, float("nan"), 3.0])


def test_season_from_the_autocorrelation() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(200)
    assert autocorrelation_season(np.sin(2 * np.pi * t / 7) + 0.1 * rng.normal(size=200) + 0.05 * t) == 7
    assert autocorrelation_season(rng.normal(size=200)) == 1
