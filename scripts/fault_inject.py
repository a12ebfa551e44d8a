"""Kill a real `charlm train` with SIGKILL at random moments, many times over one run, and check what is left.

After every kill the run folder must hold a checkpoint that loads (weights and resume state, checksums
verified), and the next `charlm train --resume` must continue from it. At the end the run is resumed to its
last step without interruption and its weights are compared with those of the same run trained in one go.

    python scripts/fault_inject.py --kills 60

A tiny model and a checkpoint every --save-every steps put many kills inside checkpoint writes and deletions.
Each child prints a progress line per step (the display's throttle is turned off), which is how the script
knows the last step a killed process finished, and so how many steps each kill cost.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from charlm import checkpoint as ckpt_io

ROOT = Path(__file__).resolve().parent.parent
CHILD = "import sys, charlm.ui.console as c; c.PLAIN_EVERY = 0; from charlm.cli import main; main()"
STEP = re.compile(r"^step (\d+) \|")


class Child:
    """One `charlm train` process, with its stderr read on a thread for progress lines."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, "train", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
        )
        self.first_step: int | None = None
        self.last_step: int | None = None
        self.lines: list[str] = []
        self.started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            m = STEP.match(line)
            if m:
                step = int(m.group(1))
                self.first_step = step if self.first_step is None else self.first_step
                self.last_step = step
                self.started.set()

    def kill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        return self.finish()

    def finish(self) -> int:
        code = self.proc.wait()
        self._reader.join()
        return code


def check_loads(run: Path) -> tuple[int, str]:
    """(latest checkpoint step, problem or ''): the latest and best checkpoints load, weights and state."""
    try:
        for which in ("latest", "best"):
            ck = ckpt_io.resolve(run, which)
            model, _ = ckpt_io.load_model(ck)
            ckpt_io.read_tensors(ck.path, ckpt_io.STATE)
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                return ck.step, f"{ck.path}: weights not finite"
        return ckpt_io.resolve(run, "latest").step, ""
    except Exception as e:  # any failure at all is what this script counts
        return -1, f"{type(e).__name__}: {e}"


def train_args(a: argparse.Namespace, out: Path, save_every: int | None) -> list[str]:
    args = [str(a.corpus), "--out", str(out), "--hidden", "16", "--embed", "8", "--seq-len", "16"]
    args += ["--batch-size", "4", "--max-steps", str(a.steps), "--eval-every", "50", "--keep", "2", "--seed", "7"]
    return args + (["--save-every", str(save_every)] if save_every else [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=60)
    p.add_argument("--steps", type=int, default=1500, help="the run's --max-steps")
    p.add_argument("--save-every", type=int, default=2)
    p.add_argument("--corpus", type=Path, default=ROOT / "corpora" / "markov.txt")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = random.Random(a.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="charlm-faults-"))
    run, ref = work / "run", work / "ref"

    kills, loadable, resumed, lost_max, in_write, startup_kills, failures = 0, 0, 0, 0, 0, 0, []
    pending = 0  # kills whose folder no --resume has yet continued from
    first = True
    t0 = time.time()
    while kills < a.kills:
        ck_before = check_loads(run)[0] if not first else -1
        left_before = {d.name for d in run.glob(".*-step-*")}
        child = Child(train_args(a, run, a.save_every) if first else ["--resume", "--out", str(run)], env)
        if rng.random() < 0.2:  # now and then, kill during start-up, restore or the lock's clean-up
            time.sleep(rng.uniform(0.0, 3.0))
        else:
            child.started.wait(timeout=60)
            time.sleep(rng.uniform(0.0, 0.4))
        if child.proc.poll() is not None:
            code = child.finish()
            if code != 0:
                failures.append(f"exit {code}: {child.lines[-1] if child.lines else ''}")
            break  # the run reached --max-steps before all kills were spent
        child.kill()
        kills += 1
        if child.first_step is not None and not first:
            if child.first_step == ck_before + 1:
                resumed, pending = resumed + pending, 0
            else:
                failures.append(f"kill {kills}: resumed at step {child.first_step}, expected {ck_before + 1}")
        leftovers = sorted({d.name for d in run.glob(".*-step-*")} - left_before)
        in_write += bool(leftovers)
        step, problem = check_loads(run)
        if step < 0 and not any(run.glob("step-*")) and first:
            startup_kills += 1  # killed before the first checkpoint: nothing to lose, start again
            continue
        first = False
        if problem:
            failures.append(f"kill {kills}: {problem}")
        else:
            loadable += 1
        lost = (child.last_step - step) if child.last_step is not None and step >= 0 else 0
        lost_max = max(lost_max, lost)
        pending += 1
        print(
            f"kill {kills:3d}: step reached {child.last_step}, latest checkpoint {step}, lost {lost}"
            + (f", interrupted a write/delete ({', '.join(leftovers)})" if leftovers else ""),
            flush=True,
        )

    # Finish the run without interruption, and train the same run in one go for comparison.
    ck_before = check_loads(run)[0]
    final = Child(["--resume", "--out", str(run)], env)
    code = final.finish()
    if code != 0:
        failures.append(f"final --resume exit {code}: {final.lines[-1] if final.lines else ''}")
    elif final.first_step is not None and final.first_step != ck_before + 1:
        failures.append(f"final --resume began at step {final.first_step}, expected {ck_before + 1}")
    resumed += pending if code == 0 else 0
    one_go = Child(train_args(a, ref, None), env).finish()
    same = False
    if code == 0 and one_go == 0:
        w1 = ckpt_io.read_tensors(ckpt_io.resolve(run, "latest").path)
        w2 = ckpt_io.read_tensors(ckpt_io.resolve(ref, "latest").path)
        same = w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)

    print(f"\nfault injection: {a.steps}-step run, checkpoint every {a.save_every} steps, {time.time() - t0:.0f}s")
    print(f"kill -9 sent:                              {kills} (plus {startup_kills} before the first checkpoint)")
    print(f"kills that interrupted a checkpoint write or deletion: {in_write}")
    print(f"kills after which the run folder loaded:   {loadable}/{kills}")
    print(f"kills that --resume continued exactly from: {resumed}/{kills}")
    print(f"steps lost by a kill, at most:             {lost_max}")
    print(f"final weights equal a run without kills:   {'yes, bit for bit' if same else 'NO'}")
    for f in failures:
        print(f"FAILURE {f}")
    print(f"(run folders in {work})")
    sys.exit(1 if failures or not same or loadable != kills else 0)


if __name__ == "__main__":
    main()
