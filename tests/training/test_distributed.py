"""Data-parallel training: real 2-process gloo runs launched by torchrun, held equal to one process.

Two processes over a global batch of B streams must take the same steps as one process over the same B
streams (same seed, dropout 0), so their weights agree to float rounding. The runs are tiny and short.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from charlm import checkpoint as ckpt_io
from charlm import training as run
from charlm.data.streams import TokenStreams
from charlm.errors import UsageError
from charlm.training.distributed import RankInfo

ROOT = Path(__file__).resolve().parents[2]
STEPS, EVERY = 6, 3
OPTS = {
    "hidden": 16,
    "layers": 2,
    "embed": 8,
    "batch_size": 4,
    "seq_len": 16,
    "lr": 0.05,
    "max_steps": STEPS,
    "eval_every": EVERY,
    "keep": 5,
    "device": "cpu",
    "precision": "fp32",  # the comparisons below are to 1e-5: bf16 would round differently on each rank's rows
}
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in OPTS.items()]

# Runs `charlm` as torchrun's entry point, after making rank 1 die once, just after the checkpoint at step 3
# is on disk (both ranks pass a barrier first, so the fault never races the write).
FAULTY_ENTRY = textwrap.dedent(
    """
    import os, sys
    from charlm.training import distributed
    from charlm.training.trainer import Trainer

    save = Trainer.save

    def faulty_save(self, metrics):
        path = save(self, metrics)
        if self.step == 3 and self.rank.restart == 0:
            distributed.barrier()
            if self.rank.rank == 1:
                os._exit(17)
        return path

    Trainer.save = faulty_save
    sys.argv = ["charlm", *sys.argv[1:]]
    from charlm.cli import main

    main()
    """
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "markov.txt"
    path.write_text((ROOT / "corpora" / "markov.txt").read_text(encoding="utf-8")[:12_000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process over the whole global batch."""
    out = tmp_path_factory.mktemp("single") / "run"
    result = run.train(run.TrainRequest([str(corpus)], out, overrides=dict(OPTS)))
    assert result.step == STEPS
    return out


def torchrun(
    args: list[str], tmp: Path, *, entry: list[str] | None = None, restarts: int = 0
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [f"--max-restarts={restarts}", *(entry or ["-m", "charlm"]), "train", *args, *FLAGS]
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if "error" in line.lower())
    return done


def weights(run_dir: Path, step: int, name: str = ckpt_io.WEIGHTS) -> dict[str, torch.Tensor]:
    return load_file(ckpt_io.step_dir(run_dir, step) / name)


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], keys: list[str] | None = None) -> None:
    for k in keys or sorted(a):
        assert a[k].shape == b[k].shape, k
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), f"{k}: differs by {(a[k] - b[k]).abs().max()}"


@pytest.fixture(scope="module")
def two(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("two")
    done = torchrun([str(corpus), "--out", str(tmp / "run")], tmp)
    assert done.stdout == ""  # progress goes to stderr, and only once: rank 0 alone reports
    assert done.stderr.count("done:") == 1
    return tmp / "run"


def test_two_processes_take_the_same_steps_as_one(single: Path, two: Path) -> None:
    assert_close(weights(single, STEPS), weights(two, STEPS))
    moved = max((weights(single, STEPS)[k] - weights(single, EVERY)[k]).abs().max() for k in weights(single, STEPS))
    assert moved > 1e-3  # the runs really trained, so agreeing means something
    # The carried hidden state is gathered whole, rows in stream order, and the optimizer moments agree.
    state1, state2 = weights(single, STEPS, ckpt_io.STATE), weights(two, STEPS, ckpt_io.STATE)
    assert state2["hidden"].shape == (OPTS["layers"], OPTS["batch_size"], OPTS["hidden"])
    assert_close(state1, state2, [k for k in state1 if not k.startswith("rng.")])
    assert {"rng.cpu.rank0", "rng.cpu.rank1"} <= set(state2)
    v1, v2 = ckpt_io.read_metrics(single), ckpt_io.read_metrics(two)
    assert [m["step"] for m in v2] == [EVERY, STEPS]
    assert [m["val_bpc"] for m in v2] == pytest.approx([m["val_bpc"] for m in v1], abs=1e-5)
    assert ckpt_io.resolve(two, "latest").meta["distributed"] == {"world_size": 2}


def test_a_distributed_checkpoint_resumes_exactly_in_one_process(single: Path, two: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(two, out)
    shutil.rmtree(ckpt_io.step_dir(out, STEPS))
    result = run.train(run.TrainRequest([], out, resume=True, overrides={"max_steps": STEPS}))
    assert result.step == STEPS
    assert_close(weights(single, STEPS), weights(out, STEPS))


def test_after_a_rank_dies_torchrun_restarts_and_the_run_resumes(single: Path, corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "faulty.py").write_text(FAULTY_ENTRY)
    out = tmp_path / "run"
    done = torchrun([str(corpus), "--out", str(out)], tmp_path, entry=["faulty.py"], restarts=1)
    assert "resuming from the last checkpoint" in done.stderr
    assert "resuming at step 3" in done.stderr
    # The restarted group continued from step 3 exactly: it ends where an uninterrupted run ends.
    assert_close(weights(single, STEPS), weights(out, STEPS))


def test_the_global_batch_must_split_evenly(corpus: Path, tmp_path: Path) -> None:
    req = run.TrainRequest([str(corpus)], tmp_path / "run", overrides=dict(OPTS))
    with pytest.raises(UsageError, match="cannot be split evenly across 3 processes"):
        run.prepare(req, rank=RankInfo(rank=0, world_size=3))


def test_each_rank_reads_its_own_block_of_streams() -> None:
    ids = np.arange(81, dtype=np.int32)
    whole = TokenStreams(ids, 4, 5)
    parts = [TokenStreams(ids, 4, 5, rows=RankInfo(rank=r, world_size=2).rows(4)) for r in range(2)]
    batches = [p.next_batch().x for p in parts]
    assert torch.equal(torch.cat(batches), torch.from_numpy(ids[:80].reshape(4, 20)[:, :5].astype(np.int64)))
    assert parts[0].chars_per_batch == 4 * 5  # what the whole run reads per step, not one rank's share
    assert whole.chars_per_batch == parts[0].chars_per_batch
