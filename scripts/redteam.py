"""Run charlm's red-team battery on a tiny run and print how many cases it handled cleanly.

    python scripts/redteam.py [--fast] [-k SUBSTRING] [-v]

It trains one tiny run in a temporary folder, then runs every case of the case modules in this folder
(redteam_checkpoint.py, and redteam_cli.py where present). Each module has

    CASES: list[tuple[str, bool, Callable[[Path, Path], str | None]]]   # (name, fast, fn)

and fn(workdir, run) gets a private empty working folder and a copy of the tiny run, and returns None when
charlm behaved (a one-line error, a non-zero exit, no traceback, no file of the user's touched) or a string
saying what went wrong. --fast runs only the cases marked fast (what CI runs). The exit status is 1 when any
case failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODULES = ("redteam_checkpoint", "redteam_cli")


def load_cases() -> list[tuple[str, bool, object]]:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    cases = []
    for name in MODULES:
        if not (HERE / f"{name}.py").exists():
            continue
        module = importlib.import_module(name)
        cases += [(f"{name.removeprefix('redteam_')}:{n}", fast, fn) for n, fast, fn in module.CASES]
    return cases


def train_tiny_run(base: Path) -> Path:
    from redteam_checkpoint import TINY, charlm, tiny_text, worked

    (base / "tiny.txt").write_text(tiny_text(), encoding="utf-8")
    args = ["train", "tiny.txt", "--out", "run", *TINY, "--max-steps", "100", "--eval-every", "50", "--keep", "2"]
    if (problem := worked(charlm([*args, "-q"], base))) is not None:
        sys.exit(f"could not train the tiny run: {problem}")
    return base / "run"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="only the fast cases (what CI runs)")
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("-v", action="store_true", help="print every case as it runs")
    args = ap.parse_args()
    os.environ.setdefault("NO_COLOR", "1")
    import torch

    torch.set_num_threads(1)
    cases = [c for c in load_cases() if (c[1] or not args.fast) and args.k in c[0]]
    failing: list[tuple[str, str]] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="charlm-redteam-") as tmp:
        base = Path(tmp)
        run = train_tiny_run(base)
        for i, (name, _, fn) in enumerate(cases):
            work = base / f"case-{i}"
            (work / "w").mkdir(parents=True)
            copy = work / "run"
            shutil.copytree(run, copy, symlinks=True)
            started = time.monotonic()
            try:
                problem = fn(work / "w", copy)  # type: ignore[operator]
            except Exception:  # noqa: BLE001 (a case that breaks is a failing case)
                problem = "the case itself raised: " + traceback.format_exc().strip().splitlines()[-1]
            if problem is not None:
                failing.append((name, problem))
            if args.v:
                print(f"{'FAIL' if problem else 'ok  '} {name} ({time.monotonic() - started:.1f}s)", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
    clean = len(cases) - len(failing)
    print(f"cases {len(cases)}, clean {clean}, failing {len(failing)} ({time.monotonic() - t0:.0f}s)")
    for name, problem in failing:
        print(f"  FAIL {name}: {problem}")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
