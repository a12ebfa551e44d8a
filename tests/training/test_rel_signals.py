"""Real `charlm train` processes: Ctrl-C, SIGTERM, a second Ctrl-C, kill -9, and two trainings on one folder.

The processes start together (one start-up cost for all) and each test acts on its own one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from charlm import checkpoint as ckpt_io
from charlm import training as run
from charlm.errors import RunLockedError

ROOT = Path(__file__).resolve().parents[2]
MARKOV = ROOT / "corpora" / "markov.txt"
TINY = ["--hidden", "16", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--seed", "5"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
NAMES = ("sigint", "sigterm", "twice", "kill")


def charlm(*args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "charlm", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True, **kw)


def wait_for(cond, what: str, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four long trainings, each already past its first checkpoint (so its signal handlers are in place)."""
    base = tmp_path_factory.mktemp("signals")
    corpus = base / "corpus.txt"
    corpus.write_text(MARKOV.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    procs = {}
    for name in NAMES:
        args = ["train", str(corpus), "--out", str(base / name), "--max-steps", "100000", "--save-every", "3"]
        procs[name] = charlm(*args, *TINY, "--eval-every", "1000")
    for name, p in procs.items():
        wait_for(lambda n=name, p=p: ckpt_io.list_checkpoints(base / n) or p.poll() is not None, f"{name} to start")
        assert p.poll() is None, p.communicate()[1]
    yield base, procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()


def all_whole(out: Path) -> list[int]:
    steps = []
    for ck in ckpt_io.list_checkpoints(out):
        model, _ = ckpt_io.load_model(ck)
        ckpt_io.read_tensors(ck.path, ckpt_io.STATE)
        steps.append(ck.step)
    return steps


def resume_in_process(out: Path, extra: int) -> int:
    torch.set_num_threads(1)
    start = ckpt_io.resolve(out, "latest").step
    req = run.TrainRequest([], out, resume=True, overrides={"max_steps": start + extra})
    result = run.train(req)
    assert result.step == start + extra
    return start


def test_second_training_on_the_same_folder_is_refused(runs, monkeypatch, capsys) -> None:
    """This test's own process is the second one: it asks to train where a live charlm process trains."""
    from charlm.cli import main

    base, procs = runs
    busy = base / "kill"
    before = ckpt_io.resolve(busy, "latest").step
    monkeypatch.setattr("sys.argv", ["charlm", "train", "--resume", "--out", str(busy), "--max-steps", "100000"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.count("\n") == 1 and "another charlm train is writing to this run folder" in err
    with pytest.raises(RunLockedError), ckpt_io.RunLock(busy):  # past the check, the lock itself refuses
        pass
    assert procs["kill"].poll() is None  # the first one trains on
    wait_for(lambda: ckpt_io.resolve(busy, "latest").step > before, "the first training to save again")


@pytest.mark.parametrize("sig,code", [("sigint", 130), ("sigterm", 143)])
def test_signal_saves_says_how_to_resume_and_exits(runs, sig: str, code: int) -> None:
    base, procs = runs
    out, p = base / sig, procs[sig]
    wait_for(lambda: ckpt_io.resolve(out, "latest").step >= 3, "some training")
    p.send_signal(signal.SIGINT if sig == "sigint" else signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err
    assert f"stopped by {sig.upper()}; continue with: charlm train --resume --out {out}" in err
    assert "done:" in err
    steps = all_whole(out)
    last_line = [line for line in err.splitlines() if line.startswith("done: ")][0]
    assert last_line.startswith(f"done: {steps[-1]} steps")  # the step it stopped at was saved
    assert resume_in_process(out, 2) == steps[-1]


def test_second_ctrl_c_exits_at_once_leaving_checkpoints_whole(runs) -> None:
    base, procs = runs
    out, p = base / "twice", procs["twice"]
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    steps = all_whole(out)
    # Either the second signal came while the first was still being handled (stopped at once), or the two
    # arrived together and the kernel delivered one (a normal stop): both leave whole checkpoints.
    assert f"the last checkpoint is {ckpt_io.step_dir(out, steps[-1])}" in err or "stopped by SIGINT" in err
    resume_in_process(out, 1)


def test_kill_9_leaves_a_resumable_run(runs) -> None:
    base, procs = runs
    out, p = base / "kill", procs["kill"]
    wait_for(lambda: ckpt_io.resolve(out, "latest").step >= 6, "some training")
    p.kill()
    p.wait()
    assert all_whole(out)
    resume_in_process(out, 2)
