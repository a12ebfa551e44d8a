"""The parameters several commands share, declared once, and the checkpoint they name turned into a model.

Commands import from here and from the library, never from each other or from the app, so the imports of
charlm.cli run one way: app -> commands -> options/output -> library.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from charlm.config import SEED_MAX, ModelConfig, TrainConfig
from charlm.errors import UsageError
from charlm.ui.console import say

if TYPE_CHECKING:  # the library is imported only by the commands that need it, to keep `charlm --help` quick
    from charlm.api import Model
    from charlm.checkpoint import Checkpoint

Ckpt = Annotated[
    Optional[Path],
    typer.Argument(
        help="A run folder, a step-* checkpoint folder or a file in one. Default: the newest run under ./checkpoints.",
        show_default=False,
    ),
]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]
SkipUnknown = Annotated[
    bool, typer.Option("--skip-unknown", help="Drop characters the model never saw, instead of stopping with an error.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but the payload and errors.")]
Jsonl = Annotated[bool, typer.Option("--jsonl", help="Print one JSON object per record, one per line.")]
ReplaceBadBytes = Annotated[bool, typer.Option(help="Read bytes that are not UTF-8 as U+FFFD.")]


def setting(help: str, default: Any = None, **kwargs: Any) -> Any:
    """An option left None when not given (so the library can tell), its default shown in the help text."""
    shown = help + (f" \\[default: {default}]" if default is not None else "")
    return typer.Option(help=shown, show_default=False, **kwargs)


_M, _T = ModelConfig(vocab_size=1), TrainConfig()  # the defaults shown in --help
# Chosen for each new run from its budget, corpus and device (charlm.training.auto) unless given.
AUTO = "auto"
# The model and schedule settings `train` and `compare` share, each None unless given.
Cell = Annotated[Optional[str], setting("Recurrent cell: gru, lstm or rnn (tanh).", _M.cell)]
Hidden = Annotated[Optional[int], setting("State size of each recurrent layer.", AUTO)]
Layers = Annotated[Optional[int], setting("Stacked recurrent layers.", AUTO)]
Embed = Annotated[Optional[int], setting("Character embedding size.", _M.embed)]
Dropout = Annotated[Optional[float], setting("Dropout between layers and before the head.", AUTO)]
SeqLen = Annotated[Optional[int], setting("Characters per stream per step (BPTT length).", _T.seq_len)]
BatchSize = Annotated[Optional[int], setting("Parallel streams per step.", AUTO)]
Lr = Annotated[Optional[float], setting("Peak learning rate (AdamW; warmup, then --lr-schedule's decay).", AUTO)]
LrSchedule = Annotated[
    Optional[str],
    setting(
        "Learning-rate decay after warmup: wsd (flat, then linear over --decay-fraction), cosine, or linear.",
        _T.lr_schedule,
    ),
]
MinLrRatio = Annotated[
    Optional[float], setting("Where the decay ends, as a share of the peak learning rate (0: zero).", _T.min_lr_ratio)
]
DecayFraction = Annotated[
    Optional[float], setting("wsd: the last share of the budget in which the learning rate decays.", _T.decay_fraction)
]
WeightDecay = Annotated[Optional[float], setting("AdamW's weight decay.", _T.weight_decay)]
Ema = Annotated[
    Optional[float],
    setting("Validate and save an average of the weights with this decay, e.g. 0.999 (0: off).", _T.ema),
]
MaxSteps = Annotated[Optional[int], setting("Stop after this many steps.")]
MaxTime = Annotated[Optional[str], setting("Stop after this long, e.g. 90s, 10m, 2h. With neither limit: 5m.")]
ValFraction = Annotated[
    Optional[float], setting("Last fraction of the text held out for validation.", _T.val_fraction)
]
EvalEvery = Annotated[Optional[int], setting("Steps between validations (each saves a checkpoint).", AUTO)]
SEED_RANGE = {"min": 0, "max": SEED_MAX}  # refused as the options are read, in one line
Seed = Annotated[Optional[int], setting("Random seed.", _T.seed, **SEED_RANGE)]
TrainDevice = Annotated[Optional[str], setting("auto, cpu, cuda or mps.", _T.device)]
Precision = Annotated[
    Optional[str],
    setting("Training arithmetic: auto (bf16 on CPUs that compute it natively), fp32 or bf16.", _T.precision),
]
Corpus = Annotated[
    Optional[list[str]], typer.Argument(help="UTF-8 text file(s) to learn from, or - for stdin.", show_default=False)
]
JsonSummary = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout at the end.")]
# The library's parameters whose flag is not their name with dashes (see `flag`).
FLAG_NAMES = {"n": "--num-samples", "corpus": "CORPUS", "path": "CHECKPOINT"}


def utf8_text(value: Optional[str]) -> Optional[str]:
    """A text argument (a prime, a stop string, --text, a regex) as the UTF-8 the user typed, whatever the locale.

    Under a locale Python does not read as UTF-8 (LC_ALL=C, PYTHONUTF8=0) the arguments' bytes arrive as
    surrogate escapes; file names keep them (that is how the file system takes them back), text is decoded.
    """
    if value is None or not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        raise typer.BadParameter("is not UTF-8 text") from None


def text_option(*names: str, help: str, **kwargs: Any) -> Any:
    """An option whose value is text (read as UTF-8 whatever the locale: see utf8_text)."""
    return typer.Option(*names, help=help, callback=utf8_text, **kwargs)


def given(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings the user gave (the library tells given from default)."""
    return {k: v for k, v in settings.items() if v is not None}


def checkpoint_and_text(paths: list[str], texts: int, usage: str) -> tuple[Optional[Path], list[str]]:
    """Split `[CHECKPOINT] FILE|-` arguments: the last `texts` are text, one more before them is the checkpoint.

    Click cannot declare an optional argument in front of a required one, so the count is checked here.
    """
    if not texts <= len(paths) <= texts + 1:
        raise UsageError(usage)
    given = len(paths) - texts
    return (Path(paths[0]) if given else None), paths[given:]


def flag(name: str) -> str:
    """The command line's name for the library's parameter `name` (messages from the library name parameters):
    the one place the two are mapped. It is the parameter's name with dashes (--max-time for max_time), but
    for those in FLAG_NAMES."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def resolve(checkpoint: Optional[Path], quiet: bool) -> Checkpoint:
    """The best checkpoint of what was named, of any kind (a language model's or a forecaster's); when nothing
    was named, stderr says which run was picked."""
    from charlm import checkpoint as ckpt_io

    ck = ckpt_io.resolve(checkpoint, "best")
    if checkpoint is None and not quiet:
        say(f"using {ck.path}")
    return ck


def load_model(checkpoint: Optional[Path], device: str, quiet: bool) -> Model:
    """The model of the checkpoint named (a run's best), on `device`; when nothing was named, stderr says which
    run was picked."""
    from charlm import api

    model = api.load(checkpoint, device=device)
    if checkpoint is None and not quiet:
        say(f"using {model.path}")
    return model
