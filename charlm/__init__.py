"""charlm: train character-level language models (GRU, LSTM, plain RNN) on your own text, then sample and score.

    import charlm
    model = charlm.load("checkpoints/my_text")        # the best checkpoint of a run (see charlm.api)
    print(model.sample(200, temperature=0.8, seed=1))
    run = charlm.train("my_text.txt", max_time="2m")  # -> charlm.Run

The names below are loaded on first use (module ``__getattr__``), so ``import charlm`` and ``charlm --help``
start at once and sampling on a CPU never imports torch. `load`, `train`, `Model`, `Run`, `Score`,
`LineScore` and `Explained` are defined in charlm.api; the exceptions, all subclasses of `CharlmError`, in
charlm.errors. The stages under them (charlm.checkpoint, charlm.training, charlm.inference, ...) are
importable on their own.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each public name and the module that defines it, imported when the name is first used.
_LAZY = {
    # loading a model, and what its methods return
    "load": "charlm.api",
    "Model": "charlm.api",
    "Score": "charlm.api",
    "LineScore": "charlm.api",
    "Explained": "charlm.api",
    # training
    "train": "charlm.api",
    "Run": "charlm.api",
    "CharlmWarning": "charlm.api",
    # a model as ONNX
    "export": "charlm.api",
    # errors
    "CharlmError": "charlm.errors",
    "UsageError": "charlm.errors",
    "CorpusError": "charlm.errors",
    "UnknownCharactersError": "charlm.errors",
    "CheckpointError": "charlm.errors",
    "CheckpointNotFoundError": "charlm.errors",
    "RunLockedError": "charlm.errors",
    "TrainingInterrupted": "charlm.errors",
    "MissingExtraError": "charlm.errors",
    "SeriesError": "charlm.errors",
    # forecasting a numeric series
    "forecast": "charlm.series.run",
    "Forecast": "charlm.series.forecast",
    # more capabilities register here, one line each
}

__all__ = [  # the same names as _LAZY (a test holds them equal), written out for tools that read __all__
    "CharlmError",
    "CharlmWarning",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CorpusError",
    "Explained",
    "Forecast",
    "LineScore",
    "MissingExtraError",
    "Model",
    "Run",
    "RunLockedError",
    "Score",
    "SeriesError",
    "TrainingInterrupted",
    "UnknownCharactersError",
    "UsageError",
    "__version__",
    "export",
    "forecast",
    "load",
    "train",
]

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports these on first use
    from charlm.api import CharlmWarning, Explained, LineScore, Model, Run, Score, export, load, train
    from charlm.errors import (
        CharlmError,
        CheckpointError,
        CheckpointNotFoundError,
        CorpusError,
        MissingExtraError,
        RunLockedError,
        SeriesError,
        TrainingInterrupted,
        UnknownCharactersError,
        UsageError,
    )
    from charlm.series.forecast import Forecast
    from charlm.series.run import forecast


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'charlm' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # the next use is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
