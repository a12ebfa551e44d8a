"""A series to forecast: read from a CSV/TSV column or one number per line, checked, its gaps filled on request,
its timestamps' step and its season length found.

Everything a user can get wrong in a series is found here and said in one line (a SeriesError); the file read
is only ever opened for reading.
"""

from __future__ import annotations

import calendar
import csv
import io
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from charlm.errors import SeriesError

STDIN = "-"
TIME_NAMES = ("date", "time", "timestamp", "datetime", "ds", "day", "month", "week", "year", "period")
# The season each regular step implies (a calendar's own cycle); a yearly series has none.
SEASON_OF_STEP = {"quarter": 4, "month": 12, "week": 52, "day": 7, "hour": 24, "30min": 48, "15min": 96}
MAX_ROWS_NAMED = 5  # rows listed in a message before "and N more"


@dataclass
class Series:
    """The values, oldest first, and (where the input has them) their timestamps and regular step."""

    values: np.ndarray  # float64, finite
    name: str = "series"
    source: str = ""
    timestamps: list[datetime] | None = None
    step: str | None = None  # "year", "quarter", "month", "week", "day", "hour", "30min", "15min", "minute", ...
    filled: list[int] = field(default_factory=list)  # 0-based positions whose value was interpolated

    def __len__(self) -> int:
        return len(self.values)

    def future_timestamps(self, horizon: int) -> list[datetime] | None:
        """The timestamps of the next `horizon` steps, continuing the series' regular step."""
        if self.timestamps is None or self.step is None:
            return None
        return [advance(self.timestamps[-1], self.step, k) for k in range(1, horizon + 1)]

    def calendar_phase(self, extra: int = 0) -> np.ndarray | None:
        """Each time's position in its calendar cycle, in [0, 1) (month of year, day of week, hour of day...),
        for the values and `extra` steps after them; None where there are no timestamps or no cycle."""
        if self.timestamps is None or self.step not in SEASON_OF_STEP:
            return None
        times = self.timestamps + (self.future_timestamps(extra) or [])
        return np.array([phase(t, self.step) for t in times])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "values": [float(v) for v in self.values],
            "timestamps": [t.isoformat() for t in self.timestamps] if self.timestamps is not None else None,
            "step": self.step,
            "filled": self.filled,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Series:
        times = d.get("timestamps")
        return cls(
            np.asarray(d["values"], dtype=np.float64),
            d.get("name", "series"),
            d.get("source", ""),
            [datetime.fromisoformat(t) for t in times] if times is not None else None,
            d.get("step"),
            list(d.get("filled", [])),
        )


# ---------------------------------------------------------------- timestamps


def _months_later(t: datetime, months: int) -> datetime:
    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


FIXED_STEPS = {
    "week": timedelta(weeks=1), "day": timedelta(days=1), "hour": timedelta(hours=1),
    "30min": timedelta(minutes=30), "15min": timedelta(minutes=15), "minute": timedelta(minutes=1),
    "second": timedelta(seconds=1),
}  # fmt: skip
MONTH_STEPS = {"month": 1, "quarter": 3, "year": 12}


def advance(t: datetime, step: str, k: int) -> datetime:
    """`t` moved `k` regular steps on."""
    if step in MONTH_STEPS:
        return _months_later(t, MONTH_STEPS[step] * k)
    return t + FIXED_STEPS[step] * k


def phase(t: datetime, step: str) -> float:
    """Where `t` lies in the calendar cycle of a series with this step, in [0, 1)."""
    if step == "month":
        return (t.month - 1) / 12
    if step == "quarter":
        return ((t.month - 1) // 3) / 4
    if step == "week":
        return min(t.isocalendar()[1] - 1, 51) / 52
    if step == "day":
        return t.weekday() / 7
    return (t.hour * 60 + t.minute) / 1440  # hours and fractions of an hour: the time of day


def _infer_step(times: list[datetime]) -> str | None:
    """The regular step the timestamps follow (most of their gaps), or None when they follow none."""
    if len(times) < 2:
        return None
    month_gaps = [(b.year - a.year) * 12 + b.month - a.month for a, b in zip(times, times[1:], strict=False)]
    same_day = all(t.day == times[0].day or t.day >= 28 for t in times) and all(
        t.time() == times[0].time() for t in times
    )
    if same_day:
        for name, months in (("month", 1), ("quarter", 3), ("year", 12)):
            if np.median(month_gaps) == months:
                return name
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    usual = sorted(gaps)[len(gaps) // 2]
    return next((name for name, d in FIXED_STEPS.items() if d == usual), None)


_YEAR = re.compile(r"^\d{4}(\.0*)?$")
_YEAR_MONTH = re.compile(r"^(\d{4})[-/](\d{1,2})$")
_YEAR_QUARTER = re.compile(r"^(\d{4})[-\s]?Q([1-4])$", re.IGNORECASE)


def parse_time(text: str) -> datetime | None:
    """A timestamp as spreadsheets and pandas write them (ISO dates and times, 2020-03, 2020Q1, 1949), or None."""
    s = text.strip()
    if _YEAR.match(s):
        return datetime(int(float(s)), 1, 1)
    if m := _YEAR_MONTH.match(s):
        month = int(m.group(2))
        return datetime(int(m.group(1)), month, 1) if 1 <= month <= 12 else None
    if m := _YEAR_QUARTER.match(s):
        return datetime(int(m.group(1)), 3 * int(m.group(2)) - 2, 1)
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.replace(tzinfo=None) if t.tzinfo is not None else t


def _check_times(times: list[datetime], rows: list[int], word: str = "row") -> None:
    """Strictly increasing, or a one-line error naming the first row (or line) out of order or repeated."""
    for i in range(1, len(times)):
        if times[i] == times[i - 1]:
            raise SeriesError(
                f"{word} {rows[i]} repeats the timestamp of {word} {rows[i - 1]} ({times[i].isoformat()})"
            )
        if times[i] < times[i - 1]:
            raise SeriesError(
                f"timestamps are not in order: {word} {rows[i]} ({times[i].isoformat()}) comes before "
                f"{word} {rows[i - 1]} ({times[i - 1].isoformat()}); sort them by time"
            )


def _regular(
    times: list[datetime], values: list[float], rows: list[int], fill: bool, word: str = "row"
) -> tuple[list, list, str | None]:
    """The series on its regular step: timestamps missing between two rows become gaps (with --fill) or an error."""
    step = _infer_step(times)
    if step is None:
        return times, values, None
    out_t, out_v = [times[0]], [values[0]]
    for i in range(1, len(times)):
        k = 1
        while advance(times[i - 1], step, k) < times[i]:
            k += 1
        if advance(times[i - 1], step, k) != times[i]:
            raise SeriesError(
                f"{word} {rows[i]} ({times[i].isoformat()}) is not a whole number of {step} steps after {word} "
                f"{rows[i - 1]}; the timestamps are not evenly spaced"
            )
        if k > 1 and not fill:
            raise SeriesError(
                f"{k - 1} timestamp(s) missing between {word} {rows[i - 1]} and {word} {rows[i]} (the step is one "
                f"{step}); --fill interpolates them"
            )
        for j in range(1, k):
            out_t.append(advance(times[i - 1], step, j))
            out_v.append(math.nan)
        out_t.append(times[i])
        out_v.append(values[i])
    return out_t, out_v, step


# ---------------------------------------------------------------- reading


def _rows_named(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:MAX_ROWS_NAMED])
    return shown + (f" and {len(rows) - MAX_ROWS_NAMED} more" if len(rows) > MAX_ROWS_NAMED else "")


def _number(text: str) -> float | None:
    """A cell as a number (empty, NA and nan are missing: NaN), or None when it is text."""
    s = text.strip().replace("_", "")
    if s.lower() in ("", "na", "nan", "n/a", "null", "none", "-"):
        return math.nan
    try:
        return float(s)
    except ValueError:
        return None


def _read_text(source: str) -> str:
    if source == STDIN:
        return sys.stdin.read()
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SeriesError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise SeriesError(f"{source}: is a folder, not a series file") from None
    except UnicodeDecodeError:
        raise SeriesError(f"{source}: not a UTF-8 text file (give a CSV, a TSV or one number per line)") from None
    except OSError as e:
        raise SeriesError(f"{source}: cannot read it ({e.strerror or e})") from None


def _table(text: str, source: str) -> tuple[list[str], list[list[str]], int]:
    """Header, rows and the line number of the first row. One number per line is a table with one column."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise SeriesError(f"{source}: empty (give a CSV or TSV with a header, or one number per line)")
    head = lines[first]
    delimiter = "\t" if "\t" in head else ";" if head.count(";") > head.count(",") else ","
    rows = list(csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=delimiter))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows[0]) == 1 and _number(rows[0][0]) is not None and not math.isnan(_number(rows[0][0]) or 0.0):
        return ["value"], rows, first + 1  # no header: one number per line
    return [c.strip() for c in rows[0]], rows[1:], first + 2


def _pick(header: list[str], name: str | None, what: str, source: str) -> int:
    if name in header:
        return header.index(name)
    lowered = [h.lower() for h in header]
    if name is not None and name.lower() in lowered:
        return lowered.index(name.lower())
    raise SeriesError(f"{source}: no {what} named {name!r} (its columns: {', '.join(header)})")


def _time_column(header: list[str], rows: list[list[str]]) -> int | None:
    """The column holding timestamps when none was named: one named like a date or time whose first cell is
    one, else the first column whose first cell is a time and not a number."""
    if not rows or len(header) < 2:
        return None
    first = rows[0]
    for i, h in enumerate(header):
        if h.lower() in TIME_NAMES and i < len(first) and parse_time(first[i]) is not None:
            return i
    if parse_time(first[0]) is not None and _number(first[0]) is None:
        return 0
    if _number(first[0]) is None and sum(_number(c) is not None for c in first) == 1 and len(header) == 2:
        return 0  # two columns, the first not a number (nor a time we read): it must be meant as the time
    return None


def read_series(
    source: str, column: str | None = None, time_column: str | None = None, fill: bool = False
) -> Series:
    """The series in `source` (a file, or "-" for stdin), checked; see check_values for what is refused."""
    header, rows, first_line = _table(_read_text(source), source)
    t_col = _pick(header, time_column, "time column", source) if time_column else _time_column(header, rows)
    if column is not None:
        v_col = _pick(header, column, "column", source)
    else:
        candidates = [i for i in range(len(header)) if i != t_col]
        numeric = [i for i in candidates if rows and i < len(rows[0]) and _number(rows[0][i]) is not None]
        if not candidates:
            raise SeriesError(f"{source}: no column of values besides the time column {header[t_col or 0]!r}")
        v_col = (numeric or candidates)[0]
    name = header[v_col] if header != ["value"] else (Path(source).stem if source != STDIN else "stdin")
    values, times, line_nos = [], [], []
    for n, row in enumerate(rows):
        line = first_line + n
        cell = row[v_col] if v_col < len(row) else ""
        v = _number(cell)
        if v is None:
            raise SeriesError(f"{source}: line {line}: {cell.strip()!r} in column {header[v_col]!r} is not a number")
        values.append(v)
        line_nos.append(line)
        if t_col is not None:
            cell_t = row[t_col] if t_col < len(row) else ""
            t = parse_time(cell_t)
            if t is None:
                what = f"{cell_t.strip()!r} in column {header[t_col]!r}"
                raise SeriesError(f"{source}: line {line}: {what} is not a time")
            times.append(t)
    step = None
    if t_col is not None:
        _check_times(times, line_nos, "line")
        times, values, step = _regular(times, values, line_nos, fill, "line")
    series = Series(
        np.asarray(values, dtype=np.float64), name, source, times if t_col is not None else None, step
    )
    lines = line_nos if len(line_nos) == len(values) else None  # gaps in the timestamps add rows without a line
    return check_values(series, fill, lines)


def check_values(series: Series, fill: bool = False, lines: list[int] | None = None) -> Series:
    """NaN or infinite values refused, naming their rows (line numbers when read from a file), or interpolated
    with `fill`; a series whose values are all equal refused."""
    v = series.values
    bad = np.flatnonzero(~np.isfinite(v)).tolist()
    where = "line" if lines is not None else "row"
    named = [lines[i] if lines is not None else i + 1 for i in bad]
    if bad and not fill:
        kinds = sorted({"NaN or missing" if math.isnan(v[i]) else "infinite" for i in bad})
        raise SeriesError(
            f"{series.source or series.name}: {' and '.join(kinds)} value(s) at {where}(s) {_rows_named(named)}; "
            "--fill interpolates them"
        )
    if bad:
        good = np.flatnonzero(np.isfinite(v))
        if len(good) < 2:
            raise SeriesError(f"{series.source or series.name}: fewer than two numbers to fill the gaps from")
        v = v.copy()
        v[bad] = np.interp(bad, good, v[good])
        series.values, series.filled = v, bad
    if len(v) and float(np.max(v) - np.min(v)) == 0.0:
        raise SeriesError(f"{series.source or series.name}: all {len(v)} values are equal ({v[0]:g}); nothing to learn")
    return series


def as_series(values: Any, timestamps: Any = None, fill: bool = False, name: str = "series") -> Series:
    """A Series from Python values (a list, a NumPy array, a pandas Series) and optional timestamps."""
    if timestamps is None and hasattr(values, "index") and hasattr(values.index, "to_pydatetime"):
        timestamps = list(values.index.to_pydatetime())
    try:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise SeriesError("values: not a sequence of numbers") from None
    times: list[datetime] | None = None
    step = None
    if timestamps is not None:
        parsed = [t if isinstance(t, datetime) else parse_time(str(t)) for t in timestamps]
        if len(parsed) != len(v) or any(t is None for t in parsed):
            raise SeriesError("timestamps: give one date or time per value")
        times = [t for t in parsed if t is not None]
        rows = list(range(1, len(v) + 1))
        _check_times(times, rows)
        times, vals, step = _regular(times, list(v), rows, fill)
        v = np.asarray(vals, dtype=np.float64)
    return check_values(Series(v, name, "", times, step), fill)


# ---------------------------------------------------------------- season


def detect_season(series: Series, max_season: int | None = None) -> tuple[int, str]:
    """The season length and why: the calendar cycle of the timestamps' step, else the strongest repeat in the
    autocorrelation of the changes, else 1 (no season)."""
    n = len(series)
    if series.step in SEASON_OF_STEP and 2 * SEASON_OF_STEP[series.step] < n:
        s = SEASON_OF_STEP[series.step]
        return s, f"one {series.step} steps, {s} to a cycle"
    s = autocorrelation_season(series.values, max_season)
    if s > 1:
        return s, f"the autocorrelation repeats every {s} steps"
    return 1, "no repeating pattern in the autocorrelation"


def autocorrelation_season(values: np.ndarray, max_season: int | None = None) -> int:
    """The lag of the highest local peak of the autocorrelation of the first differences (detrended), if it
    stands clear of noise; 1 when none does."""
    d = np.diff(values)
    d = d - d.mean()
    n = len(d)
    top = min(max_season or n // 3, n // 3, 400)
    if top < 3 or not np.any(d):
        return 1
    spectrum = np.fft.rfft(d, 2 * n)
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: top + 2]
    acf = acf / acf[0]
    peaks = [k for k in range(2, top + 1) if acf[k] > acf[k - 1] and acf[k] >= acf[k + 1]]
    threshold = max(0.3, 3.5 / math.sqrt(n))  # noise alone passes 0.2 at one lag of the many now and then
    strong = [k for k in peaks if acf[k] > threshold]
    if not strong:
        return 1
    best = max(acf[k] for k in strong)
    return next(k for k in strong if acf[k] >= 0.9 * best)  # the shortest of the near-highest: not its multiple
