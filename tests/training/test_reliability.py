"""Training runs survive interruptions, full disks and numerical faults, and resume exactly."""

from __future__ import annotations

import errno
import hashlib
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from charlm import checkpoint as ckpt_io
from charlm import training as run
from charlm.checkpoint import format as ckpt_format
from charlm.checkpoint import runs as ckpt_runs
from charlm.errors import CheckpointError, UsageError

ROOT = Path(__file__).resolve().parents[2]
MARKOV = ROOT / "corpora" / "markov.txt"
TINY = {"hidden": 16, "embed": 8, "seq_len": 16, "batch_size": 4, "eval_every": 1000, "seed": 3}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(MARKOV.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return path


def request(corpus: Path, out: Path, resume: bool = False, **over) -> run.TrainRequest:
    return run.TrainRequest([] if resume else [str(corpus)], out, resume=resume, overrides={**TINY, **over})


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {**ckpt_io.read_tensors(folder), **ckpt_io.read_tensors(folder, ckpt_io.STATE)}


def assert_all_checkpoints_finite(out: Path) -> None:
    ckpts = ckpt_io.list_checkpoints(out)
    assert ckpts
    for ck in ckpts:
        for name, t in ckpt_io.read_tensors(ck.path).items():
            assert torch.isfinite(t).all(), f"{ck.path} {name} holds non-finite values"


class Events:
    """An on_event callback that records everything, and can act at a given step."""

    def __init__(self, at_step: int | None = None, action=None) -> None:
        self.seen: list[tuple[str, dict]] = []
        self.at_step, self.action = at_step, action

    def __call__(self, kind: str, info: dict) -> None:
        self.seen.append((kind, info))
        if kind == "step" and info["step"] == self.at_step and self.action is not None:
            self.action()

    def of(self, kind: str) -> list[dict]:
        return [i for k, i in self.seen if k == kind]


# ---------------------------------------------------------------- exact resume


@pytest.mark.parametrize("layers,dropout", [(1, 0.0), (2, 0.3)])
def test_interrupt_then_resume_equals_one_go_bit_for_bit(corpus: Path, tmp_path: Path, layers, dropout) -> None:
    n, m = 7, 6
    over = {"layers": layers, "dropout": dropout, "max_steps": n + m, "save_every": 3}
    one_go = run.train(request(corpus, tmp_path / "one", **over))
    assert one_go.step == n + m

    # A real SIGINT, raised while the run trains: the handler run.train installs asks the trainer to stop.
    events = Events(at_step=n, action=lambda: signal.raise_signal(signal.SIGINT))
    first = run.train(request(corpus, tmp_path / "two", **over), events)
    assert (first.stopped_by, first.step, first.interrupted) == ("SIGINT", n, True)
    assert ckpt_io.resolve(tmp_path / "two", "latest").step == n

    resumed = Events()
    second = run.train(request(corpus, tmp_path / "two", resume=True), resumed)
    assert second.step == n + m and second.stopped_by == "max_steps"
    assert resumed.of("start")[0]["step"] == n
    assert resumed.of("step")[0]["step"] == n + 1

    a, b = tensors(one_go.last), tensors(second.last)
    assert a.keys() == b.keys()
    assert {k for k in a if k.startswith("optim.")} and "hidden" in a and "rng.cpu" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_max_steps_then_resume_with_larger_max_steps_continues(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run.train(request(corpus, out, max_steps=5))
    assert first.step == 5 and first.stopped_by == "max_steps"
    again = run.train(request(corpus, out, resume=True, max_steps=5))
    assert again.stopped_by == "already_done" and again.step == 5

    events = Events()
    more = run.train(request(corpus, out, resume=True, max_steps=9), events)
    assert more.step == 9 and more.stopped_by == "max_steps"
    assert [i["step"] for i in events.of("step")] == [6, 7, 8, 9]
    # The schedule now runs over 9 steps: the learning rate at step 6 follows the new horizon.
    cfg = ckpt_io.resolve(out, "latest").train_config
    assert cfg.max_steps == 9
    from charlm.training.schedule import get_lr

    assert events.of("step")[0]["lr"] == pytest.approx(get_lr(5, 5 / 9, cfg))


def test_resume_keeps_the_runs_own_validation_file(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    """A run validated on --val FILE resumes without naming it again, from another working folder too."""
    text = corpus.read_text()
    val = tmp_path / "val.txt"
    val.write_text(text[-3000:])
    out = tmp_path / "run"
    first = run.train(run.TrainRequest([str(corpus)], out, val=str(val), overrides={**TINY, "max_steps": 4}))
    assert ckpt_io.resolve(out, "latest").meta["data"]["val_source"] == str(val.resolve())
    monkeypatch.chdir(tmp_path.parent)
    more = run.train(request(corpus, out, resume=True, max_steps=6))
    assert (first.step, more.step, more.stopped_by) == (4, 6, "max_steps")
    assert ckpt_io.resolve(out, "latest").meta["data"]["val_chars"] == 3000


# ---------------------------------------------------------------- numerical faults


def test_non_finite_loss_steps_are_skipped_and_reported(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    import charlm.training.trainer as train_mod

    real, calls = train_mod.lm_loss, {"n": 0}

    def flaky(logits, targets):
        calls["n"] += 1
        loss = real(logits, targets)
        return loss * float("nan") if calls["n"] in (3, 4) else loss

    monkeypatch.setattr(train_mod, "lm_loss", flaky)
    events = Events()
    result = run.train(request(corpus, tmp_path / "run", max_steps=6, save_every=1), events)
    warnings = [w["message"] for w in events.of("warn")]
    assert len(warnings) == 2 and all("not finite; step skipped" in w for w in warnings)
    assert result.step == 6 and calls["n"] == 8
    assert_all_checkpoints_finite(tmp_path / "run")


@pytest.mark.parametrize("poison_at", [5, 6])  # 6 is a save step: the poisoned weights would be saved at once
def test_infinite_weight_rolls_back_and_is_never_saved(corpus: Path, tmp_path: Path, poison_at: int) -> None:
    out = tmp_path / "run"
    holder: dict = {}

    def poison() -> None:  # once: after the roll-back the run passes this step again
        if not holder.get("done"):
            with torch.no_grad():
                holder["trainer"].model.head.weight[0, 0] = float("inf")
            holder["done"] = True

    events = Events(at_step=poison_at, action=poison)
    # patience 0: no plateau decay, so the learning rate falls by the roll-back alone
    trainer = run.prepare(request(corpus, out, max_steps=10, save_every=3, eval_every=3, patience=0), events)
    holder["trainer"] = trainer
    with ckpt_io.RunLock(out):
        result = trainer.fit()
    messages = " | ".join(w["message"] for w in events.of("warn"))
    assert "rolled back to step 3" in messages
    assert result.step == 10 and trainer.lr_scale == 0.5
    assert trainer.weights_finite()
    assert_all_checkpoints_finite(out)
    best = ckpt_io.resolve(out, "best")
    assert math.isfinite(best.val_bpc)


# ---------------------------------------------------------------- a full disk


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_disk_full_while_saving_keeps_the_last_checkpoint(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    run.train(request(corpus, out, max_steps=4, save_every=2))
    before = digest(ckpt_io.step_dir(out, 4))

    def full(path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_format, "_write_file", full)
    events = Events()
    with pytest.raises(CheckpointError) as e:
        run.train(request(corpus, out, resume=True, max_steps=8), events)
    msg = str(e.value)
    assert "No space left on device" in msg and "nothing was saved" in msg
    assert f"last good checkpoint is {ckpt_io.step_dir(out, 4)}" in msg and "--resume" in msg
    assert "\n" not in msg
    assert not events.of("save")  # it never claims a save that did not happen
    assert [c.step for c in ckpt_io.list_checkpoints(out)] == [0, 2, 4]
    assert digest(ckpt_io.step_dir(out, 4)) == before
    assert not list(out.glob(".tmp-*"))
    monkeypatch.undo()
    assert run.train(request(corpus, out, resume=True, max_steps=8)).step == 8


def test_disk_full_on_the_command_line_is_one_line(corpus: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from charlm.cli import main

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_format, "_write_file", full)
    args = ["--hidden", "16", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--max-steps", "3", "-q"]
    monkeypatch.setattr("sys.argv", ["charlm", "train", str(corpus), "--out", str(tmp_path / "run"), *args])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 1
    assert len(err.strip().splitlines()) == 1 and "No space left on device" in err and "Traceback" not in err
    assert not ckpt_io.list_checkpoints(tmp_path / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_run_folder_fails_cleanly(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run.train(request(corpus, out, max_steps=2))
    before = digest(ckpt_io.step_dir(out, 2))
    for p in [out, *out.iterdir()]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        with pytest.raises((CheckpointError, UsageError)):
            run.train(request(corpus, out, resume=True, max_steps=4))
        assert digest(ckpt_io.step_dir(out, 2)) == before
    finally:
        for p in [out, *out.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)


# ---------------------------------------------------------------- crash leftovers


def test_leftovers_of_a_crash_are_cleaned_or_recovered(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run.train(request(corpus, out, max_steps=3, save_every=1, keep=5))
    # A kill mid-write leaves a .tmp folder; mid-prune a .trash one; between the renames of a re-save, the
    # only copy of a step is in .old-step-*; and a line of metrics.jsonl may be cut short.
    (out / ".tmp-step-00000004-999").mkdir()
    (out / ".tmp-step-00000004-999" / "model.safetensors").write_bytes(b"half")
    os.rename(ckpt_io.step_dir(out, 0), out / ".trash-step-00000000-999")
    os.rename(ckpt_io.step_dir(out, 3), out / ".old-step-00000003-999")
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "val_b')
    assert ckpt_io.resolve(out, "latest").step == 3  # the set-aside copy still counts
    result = run.train(request(corpus, out, resume=True, max_steps=5, eval_every=5))
    assert result.step == 5
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".charlm-run", ".lock"]
    assert ckpt_io.step_dir(out, 3).is_dir()
    assert ckpt_io.read_metrics(out)[-1]["step"] == 5


def test_prune_never_leaves_a_half_deleted_checkpoint(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    run.train(request(corpus, out, max_steps=3, save_every=1, keep=10))

    def dies_halfway(path, ignore_errors=False):  # a kill after the first file is gone
        next(Path(path).iterdir()).unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_runs.shutil, "rmtree", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckpt_io.prune(out, keep=1)
    monkeypatch.undo()
    for ck in ckpt_io.list_checkpoints(out):
        tensors(ck.path)  # every checkpoint still listed loads whole


def test_second_interrupt_exits_at_once(corpus: Path, tmp_path: Path, monkeypatch, capfd) -> None:
    out = tmp_path / "run"
    run.train(request(corpus, out, max_steps=2))
    trainer = run.prepare(request(corpus, out, resume=True, max_steps=4))

    def exit_now(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", exit_now)
    with run.stop_on_signals(trainer):
        signal.raise_signal(signal.SIGINT)
        assert trainer.stop_requested == "SIGINT"  # the first asks for a clean stop
        with pytest.raises(SystemExit) as e:
            signal.raise_signal(signal.SIGINT)  # the second ends the process at once
    assert e.value.code == 130
    assert f"stopped at once by a second interrupt; the last checkpoint is {ckpt_io.step_dir(out, 2)}" in (
        capfd.readouterr().err
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers are put back


def test_resume_without_out_continues_the_newest_run(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run.train(request(corpus, Path("checkpoints/old"), max_steps=1))
    run.train(request(corpus, Path("checkpoints/new"), max_steps=2))
    result = run.train(run.TrainRequest([], None, resume=True, overrides={"max_steps": 3}))
    assert result.run == Path("checkpoints/new") and result.step == 3
    assert ckpt_io.resolve(Path("checkpoints/old"), "latest").step == 1
