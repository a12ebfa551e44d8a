"""Checkpoints from elsewhere: damaged, incomplete, from the future, or crafted to run code when loaded."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charlm import checkpoint as ckpt_io
from charlm import training as run
from charlm.cli import main

ROOT = Path(__file__).resolve().parents[2]
MARKOV = ROOT / "corpora" / "markov.txt"
TINY = {"hidden": 16, "embed": 8, "seq_len": 16, "batch_size": 4, "eval_every": 1000, "seed": 11}
TRAIN_ONLY = {"seq_len": 16, "batch_size": 4, "eval_every": 1000, "max_steps": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small finished run; tests copy its last checkpoint and damage the copy."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("trained")
    corpus = base / "corpus.txt"
    corpus.write_text(MARKOV.read_text(encoding="utf-8")[:6000], encoding="utf-8")
    run.train(run.TrainRequest([str(corpus)], base / "run", overrides={**TINY, "max_steps": 2}))
    return ckpt_io.step_dir(base / "run", 2)


@pytest.fixture
def copy(trained: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run" / trained.name
    shutil.copytree(trained, dest)
    return dest


def edit_meta(step: Path, change) -> None:
    meta = json.loads((step / ckpt_io.META).read_text())
    change(meta)
    (step / ckpt_io.META).write_text(json.dumps(meta))


def cli_error(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["charlm", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return e.value.code, err.strip()


def truncate(step: Path) -> None:
    f = step / ckpt_io.WEIGHTS
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def flip(step: Path) -> None:
    f = step / ckpt_io.WEIGHTS
    data = bytearray(f.read_bytes())
    data[-40] ^= 0xFF  # a byte inside the tensor data: the file still parses, only the checksum can tell
    f.write_bytes(bytes(data))


def no_checksums(step: Path) -> None:
    edit_meta(step, lambda m: m.pop("sha256"))


DAMAGE = {
    "truncated": (truncate, ckpt_io.WEIGHTS, "damaged"),
    "truncated-old-format": (lambda s: (no_checksums(s), truncate(s)), ckpt_io.WEIGHTS, "not a safetensors file"),
    "corrupted": (flip, ckpt_io.WEIGHTS, "its SHA-256 differs"),
    "empty": (lambda s: (s / ckpt_io.WEIGHTS).write_bytes(b""), ckpt_io.WEIGHTS, "damaged"),
    "empty-old-format": (
        lambda s: (no_checksums(s), (s / ckpt_io.WEIGHTS).write_bytes(b"")),
        ckpt_io.WEIGHTS,
        "not a safetensors file",
    ),
    "weights-missing": (lambda s: (s / ckpt_io.WEIGHTS).unlink(), ckpt_io.WEIGHTS, "missing"),
    "json-field-missing": (lambda s: edit_meta(s, lambda m: m.pop("vocab")), ckpt_io.META, "field(s) missing: vocab"),
    "json-cut-short": (
        lambda s: (s / ckpt_io.META).write_text((s / ckpt_io.META).read_text()[:100]),
        ckpt_io.META,
        "not a readable checkpoint description",
    ),
    "future-version": (
        lambda s: edit_meta(s, lambda m: m.update(version=99)),
        ckpt_io.META,
        "format version 99 is newer than this charlm reads (1)",
    ),
    "json-wrong-type": (
        lambda s: edit_meta(s, lambda m: m["model"].update(hidden="big")),
        ckpt_io.META,
        "model.hidden must be a whole number",
    ),
    "json-not-a-table": (
        lambda s: edit_meta(s, lambda m: m.update(model=[1, 2])), ckpt_io.META, "model must be a table"
    ),
    "vocabulary-does-not-fit": (
        lambda s: edit_meta(s, lambda m: m["vocab"]["code_points"].pop()),
        ckpt_io.META,
        "but the vocabulary",
    ),
    "shapes-do-not-fit": (
        lambda s: edit_meta(s, lambda m: m["model"].update(hidden=32)),
        ckpt_io.WEIGHTS,
        "has shape (48, 8) but the config needs (96, 8)",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_damaged_checkpoint_is_one_line_naming_the_file(copy: Path, monkeypatch, capsys, case, command) -> None:
    damage, file, says = DAMAGE[case]
    damage(copy)
    args = ["sample", str(copy), "--length", "5"] if command == "sample" else ["evaluate", str(copy), str(MARKOV)]
    code, err = cli_error(monkeypatch, capsys, *args)
    assert code == 1
    assert f"{copy / file}" in err and says in err, err


def test_a_run_folder_whose_only_checkpoint_is_damaged_says_what_is_wrong(copy: Path, monkeypatch, capsys) -> None:
    edit_meta(copy, lambda m: m.pop("step"))
    code, err = cli_error(monkeypatch, capsys, "info", str(copy.parent))
    assert code == 1 and f"{copy / ckpt_io.META}: field(s) missing: step" in err


def test_damaged_resume_state_is_refused(copy: Path, monkeypatch, capsys) -> None:
    (copy / ckpt_io.STATE).write_bytes(b"\x00" * 10)
    code, err = cli_error(monkeypatch, capsys, "train", "--resume", "--out", str(copy.parent), "--max-steps", "5")
    assert code == 1 and f"{copy / ckpt_io.STATE}" in err


def test_a_real_process_reports_a_truncated_checkpoint_in_one_line(copy: Path) -> None:
    truncate(copy)
    proc = subprocess.run(
        [sys.executable, "-m", "charlm", "sample", str(copy), "--length", "5"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert str(copy / ckpt_io.WEIGHTS) in proc.stderr


# ---------------------------------------------------------------- a pickle that runs code


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_never_runs(copy: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    marker = tmp_path / "payload-ran"
    evil = pickle.dumps(Payload(marker))
    # First show that the payload works: unpickling it does create the marker.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof)))
    assert proof.exists()

    no_checksums(copy)  # so that it is the file format, not only the checksum, that refuses it
    (copy / ckpt_io.WEIGHTS).write_bytes(evil)
    (copy / ckpt_io.STATE).write_bytes(evil)
    (tmp_path / "model.pt").write_bytes(evil)
    torch.save({"weights": Payload(marker)}, tmp_path / "torch-model.pt")
    corpus = tmp_path / "c.txt"
    corpus.write_text(MARKOV.read_text(encoding="utf-8")[:3000], encoding="utf-8")

    attempts = [
        ["sample", str(copy), "--length", "5"],
        ["sample", str(copy / ckpt_io.WEIGHTS), "--length", "5"],
        ["evaluate", str(copy), str(corpus)],
        ["sample", str(tmp_path / "model.pt")],
        ["info", str(tmp_path / "torch-model.pt")],
        ["train", "--resume", "--out", str(copy.parent), "--max-steps", "5"],
        ["train", str(corpus), "--init-from", str(copy), "--out", str(tmp_path / "ft"), "--max-steps", "1"],
    ]
    for args in attempts:
        code, err = cli_error(monkeypatch, capsys, *args)
        assert code in (1, 2), (args, err)
        assert not marker.exists(), f"the payload ran for: charlm {' '.join(args)}"
    # a pickle named model.safetensors inside a real step folder is named as not a safetensors file
    code, err = cli_error(monkeypatch, capsys, "sample", str(copy))
    assert "not a safetensors file" in err and str(copy / ckpt_io.WEIGHTS) in err
    assert not marker.exists()


# ---------------------------------------------------------------- fine-tuning on new characters


def test_init_from_extends_the_vocabulary_and_keeps_known_rows(trained: Path, tmp_path: Path) -> None:
    old = ckpt_io.resolve(trained)
    old_tok = old.tokenizer
    old_w = ckpt_io.read_tensors(old.path)
    corpus = tmp_path / "new.txt"
    corpus.write_text(MARKOV.read_text(encoding="utf-8")[:4000] + "\nÉtude Ω ☃ ÉΩ☃ 123\n" * 20, encoding="utf-8")
    warnings: list[str] = []

    def on_event(kind: str, info: dict) -> None:
        if kind == "warn":
            warnings.append(info["message"])

    req = run.TrainRequest([str(corpus)], tmp_path / "ft", init_from=trained.parent, overrides=TRAIN_ONLY)
    trainer = run.prepare(req, on_event)
    new_tok = trainer.data.tokenizer
    added = [c for c in new_tok.chars if c not in old_tok]
    assert set("ÉΩ☃123") <= set(added) and set(old_tok.chars) <= set(new_tok.chars)
    assert len(warnings) == 1 and f"grows by {len(added)} character(s)" in warnings[0]
    new_w = trainer.model.state_dict()
    for c in old_tok.chars:
        i, j = old_tok.id_of(c), new_tok.id_of(c)
        assert torch.equal(new_w["embed.weight"][j], old_w["embed.weight"][i])
        assert torch.equal(new_w["head.weight"][j], old_w["head.weight"][i])
        assert torch.equal(new_w["head.bias"][j], old_w["head.bias"][i])
    for k in old_w:
        if k.startswith("gru."):
            assert torch.equal(new_w[k], old_w[k])
    with ckpt_io.RunLock(trainer.run):
        result = trainer.fit()
    assert result.step == 2
    model, tok = ckpt_io.load_model(ckpt_io.resolve(tmp_path / "ft"))
    assert tok.chars == new_tok.chars and model.config.vocab_size == new_tok.vocab_size
