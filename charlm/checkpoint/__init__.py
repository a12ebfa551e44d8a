"""The only package that reads or writes checkpoints, and the public interface to them.

A run folder holds one sub-folder per checkpoint, ``step-00001200/`` (see format.py for its files),
plus ``metrics.jsonl`` (one line per validation) and a ``.lock`` file held while a run trains.

    format.py    one checkpoint: its files, the atomic save, reading them back checked, loading the model
    runs.py      a run folder: its checkpoints, the best one, resolving what the user gives, pruning
    schema.py    checkpoint.json and tensor headers as untrusted input: the one check of each
    manifest.py  what makes a folder a run folder, and what --out may be
    metrics.py   metrics.jsonl
    lock.py      the run lock, and clearing what a killed process left half done
    layout.py    the names of step folders and of the hidden copies a save or delete makes

Callers use this package as ``from charlm import checkpoint as ckpt_io`` and the names below.
"""

from charlm.checkpoint.format import (
    FORMAT,
    META,
    REQUIRED,
    STATE,
    VERSION,
    WEIGHTS,
    Checkpoint,
    check_fits,
    load_model,
    load_weights,
    read_meta,
    read_tensors,
    save,
)
from charlm.checkpoint.layout import step_dir
from charlm.checkpoint.lock import RunLock, is_locked
from charlm.checkpoint.metrics import append_metrics, read_metrics
from charlm.checkpoint.runs import DEFAULT_ROOT, Which, best_of, find_runs, list_checkpoints, prune, resolve

__all__ = [
    "DEFAULT_ROOT",
    "FORMAT",
    "META",
    "REQUIRED",
    "STATE",
    "VERSION",
    "WEIGHTS",
    "Checkpoint",
    "check_fits",
    "RunLock",
    "Which",
    "append_metrics",
    "best_of",
    "find_runs",
    "is_locked",
    "list_checkpoints",
    "load_model",
    "load_weights",
    "prune",
    "read_meta",
    "read_metrics",
    "read_tensors",
    "resolve",
    "save",
    "step_dir",
]
