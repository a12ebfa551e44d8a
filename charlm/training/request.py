"""Checking `charlm train`'s request as a whole and encoding its corpus: from arguments to a RunPlan.

Every problem with the arguments and the corpus is collected and reported together, before anything is
written, as one UsageError. Then the corpus, whatever its source, is encoded into the run folder's id file
(charlm.data.encode), and the plan says what a Trainer is built from. It is small and picklable: under
torchrun rank 0 makes it and sends it to the other ranks (charlm.training.run).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from charlm import checkpoint as ckpt_io
from charlm.checkpoint.manifest import folder_problem
from charlm.config import ModelConfig, TrainConfig, parse_duration
from charlm.data.corpus import STDIN
from charlm.data.encode import CorpusChanged, EncodedCorpus, encode_corpus
from charlm.errors import CharlmError, CheckpointError, CorpusError, UsageError, param
from charlm.tokenizer import CharTokenizer
from charlm.training.auto import configure
from charlm.training.trainer import OnEvent, warn

MODEL_KEYS = ("cell", "embed", "hidden", "layers", "dropout")
# What may change when a run is resumed; everything else would break an exact continuation.
RESUMABLE_KEYS = ("max_steps", "max_time", "eval_every", "save_every", "keep", "patience", "device", "precision")
DEFAULT_MAX_TIME = 300.0  # seconds, when neither --max-steps nor --max-time is given


@dataclass
class TrainRequest:
    corpus: list[str]  # paths, or "-" for stdin; may be empty with resume (the run's own corpus is used)
    out: Path | None = None
    val: str | None = None  # a separate validation file
    resume: bool = False
    init_from: Path | None = None
    replace_bad_bytes: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # only the options the user gave


@dataclass
class RunPlan:
    """A checked request, its corpus encoded: what every rank builds its Trainer from."""

    run: Path
    model: ModelConfig
    train: TrainConfig
    corpus: EncodedCorpus
    info: dict[str, Any]  # sources, sizes, fingerprint: saved in every checkpoint
    resume_from: ckpt_io.Checkpoint | None = None
    init_from: ckpt_io.Checkpoint | None = None  # the checkpoint whose weights a fine-tuning run starts from
    auto: dict[str, Any] | None = None  # what automatic configuration chose and why (None: nothing to choose)


def default_out(
    corpus: list[str], root: Path = ckpt_io.DEFAULT_ROOT, fresh: bool = True, suffix: str = ""
) -> Path:
    """checkpoints/<first corpus name><suffix>, or with -2, -3 ... when that already holds something (never
    overwrite)."""
    stem = ("stdin" if not corpus or corpus[0] == STDIN else Path(corpus[0]).stem or "run") + suffix
    out, n = root / stem, 2
    while fresh and out.exists() and any(out.iterdir()):
        out, n = root / f"{stem}-{n}", n + 1
    return out


def _configs(req: TrainRequest, problems: list[str]) -> tuple[dict[str, Any], TrainConfig]:
    model_over = {k: v for k, v in req.overrides.items() if k in MODEL_KEYS}
    train_over = {k: v for k, v in req.overrides.items() if k not in MODEL_KEYS}
    if isinstance(train_over.get("max_time"), str):
        try:
            train_over["max_time"] = parse_duration(train_over["max_time"])
        except ValueError as e:
            problems.append(f"{param('max_time')}: {e}")
            del train_over["max_time"]
    cfg = TrainConfig(**train_over)
    if cfg.max_steps is None and cfg.max_time is None:
        cfg.max_time = DEFAULT_MAX_TIME
    problems += cfg.problems()
    problems += [p for p in ModelConfig(vocab_size=2, **model_over).problems()]
    return model_over, cfg


def _writable_problem(out: Path) -> str | None:
    """Why training could not write into `out` (checked before anything is written), or None."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{param('out')} {out}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{param('out')} {out}: cannot write into {existing} (permission denied)"
    return None


def _check_out(req: TrainRequest, problems: list[str]) -> Path:
    out = req.out
    if out is None and req.resume and not req.corpus:  # plain `charlm train --resume`: the newest run
        runs = ckpt_io.find_runs()
        if not runs:
            problems.append(
                f"{param('resume')}: no run under {ckpt_io.DEFAULT_ROOT}/ to resume; "
                f"give its folder with {param('out')}"
            )
            return ckpt_io.DEFAULT_ROOT / "stdin"
        out = runs[-1]
    out = out if out is not None else default_out(req.corpus, fresh=not req.resume)
    if (why := folder_problem(out)) is not None:  # new, empty, or a charlm run folder: never a user's folder
        problems.append(why)
    elif ckpt_io.is_locked(out):
        problems.append(
            f"{param('out')} {out}: another charlm train is writing to this run folder; "
            f"wait for it or use another {param('out')}"
        )
    elif req.resume and not ckpt_io.list_checkpoints(out):
        what = "does not exist" if not out.exists() else "holds no checkpoint"
        problems.append(f"{param('resume')}: {out} {what} to resume (train without {param('resume')} to start a run)")
    elif not req.resume and out.is_dir() and ckpt_io.list_checkpoints(out):
        problems.append(
            f"{param('out')} {out}: already holds a run; add {param('resume')} to continue it, "
            f"or choose another {param('out')}"
        )
    elif (why := _writable_problem(out)) is not None:
        problems.append(why)
    return out


def _resume(
    req: TrainRequest, out: Path, cfg: TrainConfig, problems: list[str]
) -> tuple[ckpt_io.Checkpoint | None, TrainRequest, TrainConfig]:
    """The checkpoint a --resume continues from; the request with the run's own validation file, and the run's
    own settings but for those that may change."""
    if not req.resume or problems:
        return None, req, cfg
    ck = ckpt_io.resolve(out, "latest")
    lacking = [k for k in ("data", "optimizer") if k not in ck.meta]
    lacking += ["data.offset"] if "data" in ck.meta and "offset" not in ck.meta["data"] else []
    if lacking:
        problems.append(f"--resume: {ck.path / ckpt_io.META} lacks what a resume needs ({', '.join(lacking)})")
        return None, req, cfg
    old, old_model = ck.train_config, ck.model_config
    if req.val is None and ck.meta["data"].get("val_source"):
        req = replace(req, val=ck.meta["data"]["val_source"])
    fixed = [
        f"{param(k)} (the run's is {getattr(old_model if k in MODEL_KEYS else old, k)!r})"
        for k, v in req.overrides.items()
        if k not in RESUMABLE_KEYS and v != getattr(old_model if k in MODEL_KEYS else old, k, v)
    ]
    if fixed:
        fixed_list = ", ".join(fixed)
        problems.append(f"{param('resume')} keeps the run's model and settings; these cannot change: {fixed_list}")
    # the values as _configs read them (a --max-time of "4s" is seconds by now)
    cfg = replace(old, **{k: getattr(cfg, k) for k in req.overrides if k in RESUMABLE_KEYS})
    problems += cfg.problems()
    return ck, req, cfg


def _init_from(req: TrainRequest, problems: list[str]) -> ckpt_io.Checkpoint | None:
    if req.init_from is None or req.resume:
        return None
    try:
        return ckpt_io.resolve(req.init_from, "best")
    except CheckpointError as e:
        problems.append(f"{param('init_from')}: {e}")
        return None


def _encode(
    req: TrainRequest,
    out: Path,
    corpus: list[str],
    cfg: TrainConfig,
    known: ckpt_io.Checkpoint | None,
    on_event: OnEvent | None,
    problems: list[str],
) -> EncodedCorpus | None:
    """The corpus encoded into <run>/data, in the vocabulary of `known` (the run resumed or fine-tuned) plus
    the text's own; with problems already found, only its checks (nothing is written)."""
    expect = known.meta["data"].get("fingerprint", "") if known is not None and req.resume else None
    try:
        return encode_corpus(
            corpus,
            out / "data",
            cfg.val_fraction if 0.0 <= cfg.val_fraction < 1.0 else 0.0,  # a bad one is already reported
            req.replace_bad_bytes,
            not getattr(on_event, "quiet", False),
            max(cfg.seq_len, 1),
            max(cfg.batch_size, 1),
            val=[req.val] if req.val else [],
            vocab=known.tokenizer if known is not None else None,
            expect=expect,
            write=not problems,
            warn=lambda message: warn(on_event, message),
        )
    except CorpusChanged:
        problems.append(
            f"{param('resume')}: the corpus differs from the one {out} was trained on; "
            f"to train on new text, start a new run with {param('init_from')}"
        )
    except CorpusError as e:
        problems += e.problems
    return None


def plan_run(
    req: TrainRequest, on_event: OnEvent | None = None, world_size: int = 1, hold: ExitStack | None = None
) -> RunPlan:
    """Check the request as a whole, lock the run folder, and encode its corpus; raises UsageError listing
    every problem. The lock is taken before anything is written into the run folder; with `hold` it stays
    held (by that stack) after the plan is made, else it is released when the plan is returned."""
    with ExitStack() as own:
        return _plan(req, on_event, world_size, hold if hold is not None else own)


def _lock(out: Path, req: TrainRequest, hold: ExitStack, problems: list[str]) -> ckpt_io.RunLock | None:
    """Take the run lock (it creates and marks the folder), then check again what only the holder can be sure
    of: that another run did not just start there."""
    lock = ckpt_io.RunLock(out)
    try:
        hold.enter_context(lock)
    except CharlmError as e:
        problems += getattr(e, "problems", [e.problem])
        return None
    if not req.resume and ckpt_io.list_checkpoints(out):
        problems.append(f"--out {out}: already holds a run; add --resume to continue it, or choose another --out")
    return lock


def _plan(req: TrainRequest, on_event: OnEvent | None, world_size: int, hold: ExitStack) -> RunPlan:
    problems: list[str] = []
    model_over, cfg = _configs(req, problems)
    if req.resume and req.init_from:
        problems.append(f"{param('resume')} and {param('init_from')} cannot be used together")
    out = _check_out(req, problems)
    # A resumed run is locked before its checkpoint is read: taking the lock clears what a killed run left
    # half done (a checkpoint set aside by a re-save is put back), so the checkpoint read is the one that stays.
    lock = _lock(out, req, hold, problems) if req.resume and not problems else None
    resume_ck, req, cfg = _resume(req, out, cfg, problems)
    init_ck = _init_from(req, problems)
    corpus = req.corpus or (resume_ck.meta["data"].get("sources", []) if resume_ck else [])
    if not corpus and not (req.resume and problems):
        problems.append("give a CORPUS file to train on (or '-' for standard input)")
    if cfg.batch_size >= 1 and cfg.batch_size % world_size:
        problems.append(
            f"{param('batch_size')} {cfg.batch_size} (the global number of streams) cannot be split evenly across "
            f"{world_size} processes; use a multiple of {world_size}"
        )
    if lock is None and corpus and not problems:
        lock = _lock(out, req, hold, problems)
    try:
        enc = _encode(req, out, corpus, cfg, resume_ck or init_ck, on_event, problems) if corpus else None
    except CharlmError:  # the id file could not be written (a full disk): it is gone again, and so is the lock
        if lock is not None:
            lock.discard()
        raise
    if problems:
        if lock is not None:
            lock.discard()  # refused after all: leave no empty run folder behind
        raise UsageError(problems)
    assert enc is not None
    info = {
        "sources": [s if s == STDIN else str(Path(s).resolve()) for s in corpus],
        "val_source": req.val if req.val in (None, STDIN) else str(Path(req.val).resolve()),
        "train_chars": enc.chars - enc.val_chars,
        "val_chars": enc.val_chars,
        "fingerprint": enc.fingerprint,
    }
    auto = resume_ck.meta.get("auto") if resume_ck is not None else None  # a resumed run keeps its choice
    if resume_ck is None and init_ck is None:
        sizes = (enc.tokenizer.vocab_size, info["train_chars"], enc.val_chars)
        model_over, cfg, auto = configure(req.overrides, model_over, cfg, *sizes, on_event, enc.train_ids)
    model_cfg = _model_config(model_over, enc.tokenizer, resume_ck, init_ck, on_event)
    return RunPlan(out, model_cfg, cfg, enc, info, resume_ck, init_ck, auto)


def _model_config(
    model_over: dict[str, Any],
    tok: CharTokenizer,
    resume_ck: ckpt_io.Checkpoint | None,
    init_ck: ckpt_io.Checkpoint | None,
    on_event: OnEvent | None,
) -> ModelConfig:
    """A resumed run's own model; a fine-tuned one's, for a vocabulary that may have grown; or a new one."""
    if resume_ck is not None:
        return resume_ck.model_config
    if init_ck is None:
        return ModelConfig(vocab_size=tok.vocab_size, **model_over)
    old = init_ck.tokenizer
    if tok.vocab_size != old.vocab_size:
        new = [c for c in tok.chars if c not in old]
        warn(
            on_event,
            f"{param('init_from')}: the vocabulary grows by {len(new)} character(s) the checkpoint never "
            f"saw ({''.join(new)[:20]!r}); they start untrained",
        )
    if any(k != "dropout" for k in model_over):
        shape = "/".join(param(k) for k in ("cell", "embed", "hidden", "layers"))
        warn(on_event, f"{param('init_from')} keeps the checkpoint's model shape; {shape} are ignored")
    dropout = {k: v for k, v in model_over.items() if k == "dropout"}
    return replace(init_ck.model_config, vocab_size=tok.vocab_size, **dropout)
