"""What `charlm train` does, from arguments to a finished run folder: check everything first, then train.

Every problem with the arguments and the corpus is collected and reported together, before anything is
written, as one UsageError.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig, TrainConfig, parse_duration
from charlm.data.corpus import STDIN, check_trainable, read_corpus, split_text, streams_problem
from charlm.data.encode import EncodedCorpus, check_corpus, encode_corpus
from charlm.errors import CharlmError, CheckpointError, CorpusError, UsageError
from charlm.tokenizer import CharTokenizer
from charlm.training.trainer import OnEvent, TrainData, Trainer, TrainResult, remap_vocab

MODEL_KEYS = ("embed", "hidden", "layers", "dropout")
# What may change when a run is resumed; everything else would break an exact continuation.
RESUMABLE_KEYS = ("max_steps", "max_time", "eval_every", "save_every", "keep", "device", "precision")
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


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def default_out(corpus: list[str], root: Path = ckpt_io.DEFAULT_ROOT, fresh: bool = True) -> Path:
    """checkpoints/<first corpus name>, or <name>-2, -3 ... when that already holds a run (never overwrite)."""
    stem = "stdin" if not corpus or corpus[0] == STDIN else Path(corpus[0]).stem or "run"
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
            problems.append(f"--max-time: {e}")
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
        return f"--out {out}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--out {out}: cannot write into {existing} (permission denied)"
    return None


def _check_out(req: TrainRequest, problems: list[str]) -> Path:
    out = req.out
    if out is None and req.resume and not req.corpus:  # plain `charlm train --resume`: the newest run
        runs = ckpt_io.find_runs()
        if not runs:
            problems.append(f"--resume: no run under {ckpt_io.DEFAULT_ROOT}/ to resume; give its folder with --out")
            return ckpt_io.DEFAULT_ROOT / "stdin"
        out = runs[-1]
    out = out if out is not None else default_out(req.corpus, fresh=not req.resume)
    if out.exists() and not out.is_dir():
        problems.append(f"--out {out}: is a file, not a folder")
    elif ckpt_io.is_locked(out):
        problems.append(
            f"--out {out}: another charlm train is writing to this run folder; wait for it or use another --out"
        )
    elif req.resume and not ckpt_io.list_checkpoints(out):
        what = "does not exist" if not out.exists() else "holds no checkpoint"
        problems.append(f"--resume: {out} {what} to resume (train without --resume to start a run)")
    elif not req.resume and out.is_dir() and ckpt_io.list_checkpoints(out):
        problems.append(f"--out {out}: already holds a run; add --resume to continue it, or choose another --out")
    elif (why := _writable_problem(out)) is not None:
        problems.append(why)
    return out


def _read(req: TrainRequest, corpus: list[str], seq_len: int, problems: list[str]) -> tuple[str, str] | None:
    try:
        text = read_corpus(corpus, req.replace_bad_bytes)
        name = corpus[0] if len(corpus) == 1 else f"{len(corpus)} files"
        if req.val:
            val = read_corpus([req.val], req.replace_bad_bytes)
            check_trainable(val, req.val, 1)
            train = text
        else:
            train, val = text, ""
        check_trainable(train, name, seq_len)
        return train, val
    except CorpusError as e:
        problems += e.problems
        return None


def prepare(
    req: TrainRequest, on_event: OnEvent | None = None, trainer_cls: Callable[..., Trainer] = Trainer
) -> Trainer:
    """Check the request as a whole and build a Trainer (or `trainer_cls`); raises UsageError listing every problem."""
    problems: list[str] = []
    model_over, cfg = _configs(req, problems)
    if req.resume and req.init_from:
        problems.append("--resume and --init-from cannot be used together")
    out = _check_out(req, problems)
    resume_ck = None
    if req.resume and not problems:
        resume_ck = ckpt_io.resolve(out, "latest")
        old = resume_ck.train_config
        if req.val is None and resume_ck.meta["data"].get("val_source"):
            req = replace(req, val=resume_ck.meta["data"]["val_source"])  # the run's own validation file
        ignored = [
            k
            for k, v in req.overrides.items()
            if k not in RESUMABLE_KEYS and v != getattr(old, k, v) and k not in MODEL_KEYS
        ]
        if ignored:
            problems.append(f"--resume keeps the run's settings; these cannot change: {', '.join(ignored)}")
        cfg = replace(old, **{k: v for k, v in req.overrides.items() if k in RESUMABLE_KEYS})
        problems += cfg.problems()
    init_ck = None
    if req.init_from is not None and not req.resume:
        try:
            init_ck = ckpt_io.resolve(req.init_from, "best")
        except CheckpointError as e:
            problems.append(f"--init-from: {e}")
    corpus = req.corpus or (resume_ck.meta["data"].get("sources", []) if resume_ck else [])
    if not corpus and not (req.resume and problems):
        problems.append("give a CORPUS file to train on (or '-' for standard input)")
    # One or more files, validated on their own tail: encoded once, streaming, into <run>/data (memory-mapped).
    streamed = bool(corpus) and not req.val and STDIN not in corpus and req.init_from is None
    texts: tuple[str, str] | EncodedCorpus | None = None
    if streamed:
        texts = _encode(req, out, corpus, cfg, on_event, problems)
    else:
        texts = _read(req, corpus, cfg.seq_len, problems) if corpus else None
        if texts is not None and not req.val:
            texts = split_text(texts[0], cfg.val_fraction)
            _check_streams(texts[0], cfg, problems)
    if problems:
        raise UsageError(problems)
    assert texts is not None
    return _build(req, out, cfg, model_over, texts, corpus, resume_ck, init_ck, on_event, trainer_cls)


def _check_streams(train: str, cfg: TrainConfig, problems: list[str]) -> None:
    """The training text must fill --batch-size streams of at least one --seq-len window each."""
    if cfg.seq_len < 1 or cfg.batch_size < 1:
        return  # already reported
    try:
        check_trainable(train, "the training part of the corpus", cfg.seq_len)
    except CorpusError as e:
        problems += e.problems
        return
    if problem := streams_problem(len(train), cfg.batch_size, cfg.seq_len):
        problems.append(problem)


def _encode(
    req: TrainRequest, out: Path, corpus: list[str], cfg: TrainConfig, on_event: OnEvent | None, problems: list[str]
) -> EncodedCorpus | None:
    """The corpus encoded into <run>/data; with problems already found, only its checks (nothing is written)."""
    args = (cfg.val_fraction, req.replace_bad_bytes, max(cfg.seq_len, 1), max(cfg.batch_size, 1))
    try:
        if problems:
            check_corpus(corpus, *args)
            return None
        quiet = getattr(on_event, "quiet", False)
        return encode_corpus(corpus, out / "data", args[0], args[1], not quiet, args[2], args[3])
    except CorpusError as e:
        problems += e.problems
        return None


def _build(
    req: TrainRequest,
    out: Path,
    cfg: TrainConfig,
    model_over: dict[str, Any],
    texts: tuple[str, str] | EncodedCorpus,
    corpus: list[str],
    resume_ck: ckpt_io.Checkpoint | None,
    init_ck: ckpt_io.Checkpoint | None,
    on_event: OnEvent | None,
    trainer_cls: Callable[..., Trainer] = Trainer,
) -> Trainer:
    enc = texts if isinstance(texts, EncodedCorpus) else None
    train, val = texts if enc is None else ("", "")
    info = {
        "sources": [s if s == STDIN else str(Path(s).resolve()) for s in corpus],
        "val_source": req.val if req.val in (None, STDIN) else str(Path(req.val).resolve()),
        "train_chars": len(train) if enc is None else len(enc.train_ids),
        "val_chars": len(val) if enc is None else len(enc.val_ids),
        "fingerprint": fingerprint(train + "\x00" + val) if enc is None else enc.fingerprint,
    }
    init_weights = None
    if resume_ck is not None:
        tok, model_cfg = resume_ck.tokenizer, resume_ck.model_config
        if resume_ck.meta["data"].get("fingerprint") != info["fingerprint"]:
            raise UsageError(
                f"--resume: the corpus differs from the one {out} was trained on; "
                "to train on new text, start a new run with --init-from"
            )
    elif init_ck is not None:
        src = init_ck
        old_tok, model_cfg = src.tokenizer, src.model_config
        tok = CharTokenizer(old_tok.chars + [c for c in CharTokenizer.from_text(train, val).chars if c not in old_tok])
        weights = ckpt_io.read_tensors(src.path)
        if tok.vocab_size != old_tok.vocab_size:
            new = [c for c in tok.chars if c not in old_tok]
            _warn(
                on_event,
                f"--init-from: the vocabulary grows by {len(new)} character(s) the checkpoint never "
                f"saw ({''.join(new)[:20]!r}); they start untrained",
            )
            weights = remap_vocab(weights, old_tok, tok)
        model_cfg = replace(
            model_cfg, vocab_size=tok.vocab_size, **{k: v for k, v in model_over.items() if k == "dropout"}
        )
        if any(k != "dropout" for k in model_over):
            _warn(on_event, "--init-from keeps the checkpoint's model shape; --embed/--hidden/--layers are ignored")
        init_weights = weights
    else:
        tok = CharTokenizer.from_text(train, val) if enc is None else enc.tokenizer
        model_cfg = ModelConfig(vocab_size=tok.vocab_size, **model_over)
    if enc is not None:
        data = TrainData(tok, enc.train_ids, enc.val_ids, info)
    else:
        data = TrainData(tok, tok.encode(train), tok.encode(val) if val else tok.encode(""), info)
    try:
        trainer = trainer_cls(out, model_cfg, cfg, data, on_event, resume_from=resume_ck, init_weights=init_weights)
    except CorpusError:
        raise
    except (RuntimeError, KeyError) as e:
        raise CharlmError(f"cannot start training: {e}") from None
    return trainer


def _warn(on_event: OnEvent | None, message: str) -> None:
    if on_event is not None:
        on_event("warn", {"message": message})


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """Ctrl-C or SIGTERM asks the trainer to stop after its current step and save; a second Ctrl-C quits at
    once (every checkpoint already on disk is whole, since each is renamed into place only when complete)."""

    def handler(signum: int, frame: object) -> None:
        if trainer.stop_requested:
            show_cursor = b"\x1b[?25h" if os.isatty(2) else b""  # a live progress bar hides it
            last = ckpt_io.list_checkpoints(trainer.run)
            where = f"; the last checkpoint is {last[-1].path}" if last else ""
            os.write(2, show_cursor + f"\nstopped at once by a second interrupt{where}\n".encode())
            os._exit(128 + signum)
        trainer.stop_requested = signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train(req: TrainRequest, on_event: OnEvent | None = None) -> TrainResult:
    """Check, lock the run folder, train; the lock is released however training ends."""
    trainer = prepare(req, on_event)
    with ckpt_io.RunLock(trainer.run), stop_on_signals(trainer):
        return trainer.fit()
