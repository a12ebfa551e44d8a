"""charlm in Python: `load` a trained model to sample, stream, score and explain text; `train` one.

    import charlm
    model = charlm.load("checkpoints/my_text")            # a run folder, a step-* folder or a file in one
    text = model.sample(500, temperature=0.8, seed=1)     # -> str
    run = charlm.train("corpus.txt", max_time="2m")       # -> Run: .model (the best checkpoint), .metrics, .path

The command line is built on these calls, with the same defaults, so the same seed gives the same text from
either. A `Model` may be used by several threads at once: it holds only what it read from the checkpoint
(never changed after), and every call builds its own state. Sampling a GRU on a CPU runs in NumPy and never
imports torch; the torch module is loaded the first time a call needs it (`Model.module`).
Errors are `charlm.errors.CharlmError` subclasses whose messages name the parameter at fault.
"""

from __future__ import annotations

import html
import itertools
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, overload

from charlm import checkpoint as ckpt_io
from charlm.checkpoint.schema import expected_shapes
from charlm.config import ModelConfig, TrainConfig
from charlm.errors import CharlmError, CheckpointError, TrainingInterrupted, UsageError, param
from charlm.inference.scores import Score
from charlm.tokenizer import CharTokenizer

if TYPE_CHECKING:  # each imports torch, which sampling on a CPU never needs
    import torch

    from charlm.inference.draws import SampleOptions
    from charlm.inference.gru_numpy import GRUWeights
    from charlm.interpret.explain import Explanation
    from charlm.model import CharLM
    from charlm.onnx_export import ExportResult
    from charlm.training.request import TrainRequest
    from charlm.training.types import TrainResult

PathLike = Union[str, "os.PathLike[str]"]
Which = Literal["best", "latest"]
Auto = Literal["auto"]
OnEvent = Callable[[str, dict[str, Any]], Any]


class CharlmWarning(UserWarning):
    """What training warns about when nothing displays it (``progress=False`` and no ``on_event``)."""


def _path(value: PathLike | None, name: str) -> Path | None:
    if value is None:
        return None
    try:
        return Path(os.fspath(value))
    except TypeError:
        raise UsageError(f"{param(name)} must be a path (a str or os.PathLike), not {type(value).__name__}") from None


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class LineScore:
    """One line scored on its own, as if it began a line of text: the record of `charlm evaluate --per-line`."""

    line: int  # 1 for the first line
    text: str
    chars: int  # characters scored
    bits: float  # their total surprise, in bits

    @property
    def bits_per_char(self) -> float:
        """NaN for a line with nothing to score."""
        return self.bits / self.chars if self.chars else math.nan

    def to_dict(self) -> dict[str, Any]:
        """The record `charlm evaluate --per-line --jsonl` prints."""
        return {"line": self.line, "bits_per_char": self.bits_per_char, "bits": self.bits, "chars": self.chars,
                "text": self.text}  # fmt: skip


@dataclass(frozen=True)
class Explained:
    """Per-character surprisal, the model's top guesses and (with gates) each layer's gates and states.

    ``explanation`` is the full record (charlm.interpret.explain.Explanation); in a notebook this draws the
    text coloured by surprise, with the guesses and unit values on hover (`to_html` is that page).
    """

    explanation: Explanation
    title: str = "charlm explain"

    @property
    def chars(self) -> list[str]:
        """The text, one character each."""
        return self.explanation.chars

    @property
    def bits(self) -> list[float]:
        """Surprise of each character in bits; NaN for the first, which nothing predicts."""
        return [float(b) for b in self.explanation.bits]

    @property
    def bits_per_char(self) -> float:
        """The mean surprise of the characters predicted (all but the first)."""
        return self.explanation.bits_per_char

    def records(self, gates: bool = False) -> list[dict[str, Any]]:
        """One dict per character: the records of `charlm explain --json`."""
        from charlm.interpret.explain import records

        return records(self.explanation, with_gates=gates)

    def to_dict(self, gates: bool = False) -> dict[str, Any]:
        """What `charlm explain --json` prints: the summary, gate saturation (with `gates`, if traced) and
        the per-character records."""
        from charlm.interpret.explain import document

        return document(self.explanation, gates)

    def to_html(self, unit: tuple[int, int] | None = None) -> str:
        """The self-contained page of `charlm explain --html`; `unit` (layer, unit) colours by that unit."""
        from charlm.ui import html as page

        return page.render(self.explanation, self.title, unit)

    def _repr_html_(self) -> str:
        # The page in a frame of its own, so its script and style touch nothing else in the notebook.
        return f'<iframe srcdoc="{html.escape(self.to_html())}" style="width:100%;height:24em;border:0"></iframe>'

    def __repr__(self) -> str:
        ex = self.explanation
        return f"<Explained {len(ex.chars)} characters, {ex.bits_per_char:.4f} bits/char>"


# ---------------------------------------------------------------- a loaded model


def _count_params(ck: ckpt_io.Checkpoint) -> int:
    """The parameters of the checkpoint's model, from the tensor shapes its config names (without torch); the
    weight file's header was held to exactly these shapes when the checkpoint was read."""
    return sum(math.prod(shape) for shape in expected_shapes(ck.meta["model"]).values())


class Model:
    """A trained model, loaded from a checkpoint (see `load`). Safe to use from several threads at once.

    Read-only: ``checkpoint`` (the `charlm.checkpoint.Checkpoint` it came from), ``path``, ``config``
    (ModelConfig), ``train_config``, ``tokenizer``, ``device`` (as asked: auto, cpu, cuda, mps), ``step``,
    ``best_bits_per_char``, ``info``; ``module`` is the torch module itself, loaded on first use.
    """

    def __init__(self, checkpoint: ckpt_io.Checkpoint, device: str = "auto") -> None:
        """Use `load`; this takes an already resolved checkpoint."""
        self._ck, self._device = checkpoint, device
        # read from checkpoint.json once; shared by every call, never changed
        self._config, self._train_config, self._tokenizer = (
            checkpoint.model_config,
            checkpoint.train_config,
            (checkpoint.tokenizer),
        )
        self._lock = threading.Lock()  # guards the lazily loaded weights below
        self._module: CharLM | None = None
        self._torch_device: torch.device | None = None
        self._weights: Any = None  # the NumPy weights of a GRU, once read (False: they do not fit)
        self._params: int | None = None

    # ------------------------------------------------------------ what it is

    @property
    def checkpoint(self) -> ckpt_io.Checkpoint:
        """The checkpoint it was loaded from: its folder and its checkpoint.json, as read."""
        return self._ck

    @property
    def path(self) -> Path:
        """The step-* folder it was loaded from."""
        return self._ck.path

    @property
    def name(self) -> str:
        """The run folder's name (what `charlm serve` calls the model)."""
        path = self._ck.path
        return path.parent.name if path.name.startswith("step-") else path.name

    @property
    def config(self) -> ModelConfig:
        """The model's shape: cell, vocab_size, embed, hidden, layers, dropout."""
        return self._config

    @property
    def train_config(self) -> TrainConfig:
        """The settings it was trained with."""
        return self._train_config

    @property
    def tokenizer(self) -> CharTokenizer:
        """Its vocabulary: characters <-> ids."""
        return self._tokenizer

    @property
    def device(self) -> str:
        """The device asked for: auto, cpu, cuda, cuda:N or mps (`torch_device` is where torch runs it)."""
        return self._device

    @property
    def step(self) -> int:
        """Training steps behind this checkpoint."""
        return self._ck.step

    @property
    def parameters(self) -> int:
        """How many numbers the model is made of."""
        if self._params is None:
            self._params = _count_params(self._ck)
        return self._params

    @property
    def best_bits_per_char(self) -> float | None:
        """The run's best validation bits/char (over its checkpoints on disk), or None if never validated."""
        best = ckpt_io.best_of(ckpt_io.list_checkpoints(self._ck.path.parent))
        return best.val_bpc if best is not None and math.isfinite(best.val_bpc) else None

    @property
    def info(self) -> dict[str, Any]:
        """What `charlm info --json` prints: shape, size, vocabulary, training so far, data, metrics."""
        from charlm.ui.info import describe

        return describe(self._ck)

    @property
    def module(self) -> CharLM:
        """The torch module (charlm.model.CharLM) in eval mode on the device asked for, loaded on first use.
        Shared: treat it as read-only (forward passes from several threads are fine)."""
        with self._lock:
            if self._module is None:
                from charlm.device import pick_device

                dev = pick_device(self._device)
                self._module, _ = ckpt_io.load_model(self._ck, dev)
                self._torch_device = dev
            return self._module

    @property
    def torch_device(self) -> torch.device:
        """The torch device `module` lives on."""
        self.module  # noqa: B018 (loads it)
        assert self._torch_device is not None
        return self._torch_device

    def __repr__(self) -> str:
        c, best = self.config, self.best_bits_per_char
        cell = {"gru": "GRU", "lstm": "LSTM", "rnn": "RNN"}.get(c.cell, c.cell)
        bpc = f"best {best:.4f} bits/char" if best is not None else "not validated"
        return (
            f"<charlm.Model {cell}, {c.layers} layer{'s' if c.layers != 1 else ''} x {c.hidden} hidden, "
            f"{self.parameters:,} parameters, "
            f"{c.vocab_size} characters, {self.step:,} steps trained, {bpc}: {self.path}>"
        )

    # ------------------------------------------------------------ sampling

    def numpy_weights(self, streams: int = 1) -> GRUWeights | None:
        """The NumPy weights `streams` samples at once step on, as `sample` steps them: those of a GRU on the
        CPU (read once, without torch), or None where torch steps the model (`module`)."""
        from charlm.inference import sample as sampling
        from charlm.inference.gru_numpy import GRUWeights

        if not sampling.numpy_path(self.config, self._device, streams):
            return None
        with self._lock:
            if self._weights is None:
                try:
                    state = ckpt_io.read_tensors(self._ck, framework="numpy")
                    self._weights = GRUWeights(self.config, state)
                except (KeyError, ValueError):
                    self._weights = False  # the weights do not fit the config: the torch loader says how
            weights: GRUWeights | None = None if self._weights is False else self._weights
        return weights

    def _sampler(self, streams: int) -> tuple[Any, Any]:
        """What `streams` samples at once step on: the NumPy weights of a GRU on the CPU, or the torch module."""
        weights = self.numpy_weights(streams)
        if weights is not None:
            return weights, "cpu"
        return self.module, self.torch_device

    def _options(
        self,
        length: int,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        prime: str,
        stop: str | None,
        seed: int | None,
        skip_unknown: bool,
        n: int,
    ) -> Any:
        from charlm.inference import sample as sampling

        opts = check_sample(length, n=n, temperature=temperature, top_k=top_k, top_p=top_p, prime=prime,
                            stop=stop, seed=seed, skip_unknown=skip_unknown)  # fmt: skip
        sampling.prime_ids(self.tokenizer, opts.prime, opts.on_unknown)  # unknown characters: an error now
        return opts

    @overload
    def sample(
        self,
        length: int = ...,
        *,
        n: None = None,
        temperature: float = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        prime: str = ...,
        stop: str | None = ...,
        seed: int | None = ...,
        skip_unknown: bool = ...,
    ) -> str: ...

    @overload
    def sample(
        self,
        length: int = ...,
        *,
        n: int,
        temperature: float = ...,
        top_k: int | None = ...,
        top_p: float | None = ...,
        prime: str = ...,
        stop: str | None = ...,
        seed: int | None = ...,
        skip_unknown: bool = ...,
    ) -> list[str]: ...

    def sample(
        self,
        length: int = 1000,
        *,
        n: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        prime: str = "",
        stop: str | None = None,
        seed: int | None = None,
        skip_unknown: bool = False,
    ) -> str | list[str]:
        """Generate `length` characters continuing `prime` (with none, as at the start of a line).

        `n` samples generated side by side give a list; without `n`, one sample as a str. `temperature` 0 is
        greedy, 1 the model's own odds; `top_k`/`top_p` keep only the likeliest characters; `stop` ends a
        sample before its first occurrence; the same `seed` gives the same text. Characters of `prime` the
        model never saw raise UnknownCharactersError, or are dropped with `skip_unknown`.
        """
        if n is None:
            return "".join(self.stream(length, temperature=temperature, top_k=top_k, top_p=top_p, prime=prime,
                                       stop=stop, seed=seed, skip_unknown=skip_unknown))  # fmt: skip
        from charlm.inference import sample as sampling

        opts = self._options(length, temperature, top_k, top_p, prime, stop, seed, skip_unknown, n)
        engine, device = self._sampler(n)
        return sampling.sample_many(engine, self.tokenizer, opts, n, device)

    def stream(
        self,
        length: int = 1000,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        prime: str = "",
        stop: str | None = None,
        seed: int | None = None,
        skip_unknown: bool = False,
    ) -> Iterator[str]:
        """One sample (the options of `sample`) as pieces of text while it is generated. The options are
        checked now, before the first piece."""
        from charlm.inference import sample as sampling

        opts = self._options(length, temperature, top_k, top_p, prime, stop, seed, skip_unknown, 1)
        engine, device = self._sampler(1)
        return sampling.stream(engine, self.tokenizer, opts, device)

    def stream_many(
        self,
        length: int = 1000,
        *,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        prime: str = "",
        stop: str | None = None,
        seed: int | None = None,
        skip_unknown: bool = False,
    ) -> Iterator[tuple[int, str]]:
        """`n` samples (the options of `sample`; the same text as `sample(n=n)`) as (sample number, piece)
        while they are generated: every sample yields at least one piece, and all of one sample's come before
        the next's. They are generated side by side in groups of bounded memory, the first of each group as
        it streams, so a million samples, or two of a billion characters, need no more memory than a few."""
        from charlm.inference import sample as sampling

        opts = self._options(length, temperature, top_k, top_p, prime, stop, seed, skip_unknown, n)
        engine, device = self._sampler(n)
        return sampling.sample_pieces(engine, self.tokenizer, opts, n, device)

    # ------------------------------------------------------------ scoring and explaining

    def _ids(self, text: str, skip_unknown: bool, source: str, purpose: str) -> Any:
        if not isinstance(text, str):
            raise UsageError(f"{param('text')} must be a str, not {type(text).__name__}")
        ids = self.tokenizer.encode(text, "skip" if skip_unknown else "error", what=source)
        if len(ids) < 2:
            raise UsageError(f"{source}: needs at least two (known) characters to {purpose}")
        return ids

    def score(self, text: str, *, skip_unknown: bool = False, source: str = "the text") -> Score:
        """How surprised the model is by `text`: nats and bits per character, perplexity (`charlm evaluate`).

        Long texts are scored as up to 64 segments side by side, each first reading the 128 characters before
        it. `source` is what error messages call the text (a file name, say)."""
        from charlm.inference.evaluate import score_ids

        ids = self._ids(text, skip_unknown, source, "score")
        return score_ids(self.module, ids, self.torch_device)

    def iter_score_lines(
        self, lines: str | Iterable[str], *, skip_unknown: bool = False, source: str = "the text"
    ) -> Iterator[LineScore]:
        """`score_lines` one record at a time, in order, the first before the last lines are scored.
        Unknown characters raise before the first record."""
        from charlm.inference.evaluate import line_records

        given = lines if isinstance(lines, str) else list(lines)
        records = line_records(self.module, self.tokenizer, given, skip_unknown, self.torch_device, what=source)
        first = next(records, None)  # runs the check for unknown characters now
        scored = itertools.chain([first] if first is not None else [], records)
        return (LineScore(n, line, s.chars, s.bits) for n, (line, s) in enumerate(scored, 1))

    def score_lines(
        self, lines: str | Iterable[str], *, skip_unknown: bool = False, source: str = "the text"
    ) -> list[LineScore]:
        """Each line on its own, as if it began a line (`charlm evaluate --per-line`): a text is cut at its
        newlines, or give the lines. A line with nothing to score has 0 chars and NaN bits/char."""
        return list(self.iter_score_lines(lines, skip_unknown=skip_unknown, source=source))

    def explain(
        self, text: str, *, top_k: int = 5, gates: bool = True, skip_unknown: bool = False, source: str = "the text"
    ) -> Explained:
        """Per-character surprisal, the model's `top_k` guesses at each position and, with `gates`, every
        layer's gates and states as the cell computes them (`charlm explain`)."""
        from charlm.interpret.explain import explain

        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise UsageError(f"{param('top_k')} must be at least 1 (got {top_k})")
        ids = self._ids(text, skip_unknown, source, "explain")
        return Explained(explain(self.module, self.tokenizer, ids, top_k, gates=gates))

    def units(
        self,
        text: str,
        *,
        regex: str | None = None,
        top: int = 5,
        skip_unknown: bool = False,
        source: str = "the text",
    ) -> dict[str, Any]:
        """Hidden units ranked by how well they track features of `text` (`charlm units`): quotes, brackets,
        line position, word starts, and inside matches of `regex`. Feature name -> list of UnitScore."""
        from charlm.interpret.explain import trace_gates
        from charlm.interpret.units import find_units, regex_feature, unit_states

        if top < 1:
            raise UsageError(f"{param('top')} must be at least 1 (got {top})")
        if regex is not None:
            regex_feature(regex)  # a bad pattern is an error before any work is done
        ids = self._ids(text, skip_unknown, source, "explain")
        return find_units(self.tokenizer.decode(ids), unit_states(trace_gates(self.module, ids)), regex, top)

    def export(
        self,
        out: PathLike,
        *,
        int8: bool = False,
        force: bool = False,
        text: str | None = None,
        source: str = "the text",
    ) -> ExportResult:
        """Write the model as an ONNX folder `out` (`charlm export`): model.onnx (one step with its state
        carried, the vocabulary and config in its metadata), tokenizer.json and charlm.json, checked against
        charlm by onnxruntime first. `out` must be new or empty unless `force`, which replaces only those
        three files. `int8`: int8 weights; `text`: the text int8's change in bits/char is measured on (by
        default text sampled from the model), `source` what charlm.json calls it (a file name, say).
        Needs the export extra (onnx, onnxruntime): MissingExtraError says so. See docs/export.md."""
        from charlm.onnx_export import export

        if text is not None and not isinstance(text, str):
            raise UsageError(f"{param('text')} must be a str, not {type(text).__name__}")
        target = _path(out, "out")
        if target is None:
            raise UsageError(f"{param('out')} must be a path (the folder to write), not None")
        return export(self._ck, target, int8=int8, force=force, text=text, text_name=source)


def check_sample(
    length: int = 1000,
    *,
    n: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    prime: str = "",
    stop: str | None = None,
    seed: int | None = None,
    skip_unknown: bool = False,
) -> SampleOptions:
    """The options of `Model.sample`, checked without a model: raises one UsageError listing every problem."""
    from charlm.inference.draws import SampleOptions, check

    if not isinstance(prime, str):
        raise UsageError(f"{param('prime')} must be a str, not {type(prime).__name__}")
    on_unknown: Literal["error", "skip"] = "skip" if skip_unknown else "error"
    opts = SampleOptions(length, temperature, top_k, top_p, seed, prime, stop or None, on_unknown)
    check(opts, 1 if n is None else n)
    return opts


def load(path: PathLike | None = None, *, which: Which = "best", device: str = "auto") -> Model:
    """The model of a checkpoint: `path` is a run folder (its best checkpoint, or with ``which="latest"`` its
    newest), a step-* folder, or a file inside one; None takes the newest run under ./checkpoints.
    `device` (auto, cpu, cuda, cuda:N, mps) is where torch runs it; on auto a small GRU samples on the CPU.

    Raises CheckpointNotFoundError (``.available`` lists the runs that exist) or CheckpointError."""
    if which not in ("best", "latest"):
        raise UsageError(f"{param('which')} must be best or latest (got {which!r})")
    if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda", "mps") or device.startswith("cuda:")):
        raise UsageError(f"{param('device')} must be auto, cpu, cuda or mps (got {device!r})")
    ck = ckpt_io.resolve(_path(path, "path"), which)
    if ck.kind != "lm":
        raise CheckpointError(f"{ck.path}: a {ck.kind}, not a language model (use it with: charlm forecast --from)")
    model = Model(ck, device)
    if device not in ("auto", "cpu"):  # a GPU asked for by name: say now if there is none
        from charlm.device import pick_device

        pick_device(device)
    return model


def export(
    path: PathLike | None,
    out: PathLike,
    *,
    which: Which = "best",
    int8: bool = False,
    force: bool = False,
    text: str | None = None,
    source: str = "the text",
) -> ExportResult:
    """`load(path, which=which).export(out, ...)`: a checkpoint as an ONNX folder (see `Model.export`)."""
    return load(path, which=which, device="cpu").export(out, int8=int8, force=force, text=text, source=source)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class Run:
    """A run folder after `train`: ``path``, ``model`` (its best checkpoint, loaded), ``metrics`` (each
    validation, as in metrics.jsonl), and how training ended (``result``, a charlm.training.TrainResult)."""

    path: Path
    result: TrainResult
    _model: list[Model] = field(default_factory=list, repr=False, compare=False)

    @property
    def model(self) -> Model:
        """The best checkpoint of the run (lowest validation bits/char), loaded on first use."""
        if not self._model:
            self._model.append(load(self.path, which="best"))
        return self._model[0]

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One record per validation (step, train_loss, val_bpc, elapsed, lr, ...), oldest first."""
        return ckpt_io.read_metrics(self.path)

    @property
    def steps(self) -> int:
        """Steps trained, in all (a resumed run counts those before the resume)."""
        return self.result.step

    @property
    def best_bits_per_char(self) -> float | None:
        """The best validation bits/char, or None if it was never validated."""
        return self.result.best_val_bpc

    @property
    def stopped_by(self) -> str:
        """max_steps, max_time, early_stop, already_done, or what stopped it: SIGINT, SIGTERM, stop."""
        return self.result.stopped_by

    @property
    def interrupted(self) -> bool:
        """Whether it stopped before its budget was spent (a signal, or `stop`)."""
        return self.result.interrupted

    def __repr__(self) -> str:
        best = f"{self.best_bits_per_char:.4f}" if self.best_bits_per_char is not None else "-"
        return f"<charlm.Run {self.path}: {self.steps} steps, best {best} bits/char, stopped by {self.stopped_by}>"


_SETTINGS = ("cell", "hidden", "layers", "embed", "dropout", "seq_len", "batch_size", "lr", "lr_schedule",
             "min_lr_ratio", "decay_fraction", "weight_decay", "ema", "max_steps", "max_time", "val_fraction",
             "eval_every", "save_every", "keep", "patience", "seed", "device", "precision")  # fmt: skip


def train(
    corpus: PathLike | Sequence[PathLike] | None = None,
    *,
    out: PathLike | None = None,
    cell: str = "gru",
    hidden: int | Auto = "auto",
    layers: int | Auto = "auto",
    embed: int = 64,
    dropout: float | Auto = "auto",
    seq_len: int = 64,
    batch_size: int | Auto = "auto",
    lr: float | Auto = "auto",
    lr_schedule: str = "wsd",
    min_lr_ratio: float = 0.0,
    decay_fraction: float = 0.4,
    weight_decay: float = 0.01,
    ema: float = 0.0,
    max_steps: int | None = None,
    max_time: float | str | None = None,
    val_fraction: float = 0.1,
    val: PathLike | None = None,
    eval_every: int | Auto = "auto",
    save_every: int | None = None,
    keep: int = 3,
    patience: int = 3,
    seed: int = 1337,
    device: str = "auto",
    precision: str = "auto",
    resume: bool = False,
    init_from: PathLike | None = None,
    replace_bad_bytes: bool = False,
    progress: bool = True,
    on_event: OnEvent | None = None,
    stop: threading.Event | None = None,
    backend: str | None = None,
) -> Run:
    """Train a model on `corpus` (a UTF-8 text file, several, or "-" for standard input): `charlm train`.

    Every option of `charlm train` is a keyword with its default; those that are "auto" are chosen for the
    budget, the text and the device's measured speed. `max_time` is seconds or a duration such as "90s",
    "10m", "1h30m"; with neither `max_time` nor `max_steps` training takes 5 minutes. `out` defaults to
    checkpoints/<corpus name> (a fresh -2, -3 ... when that holds a run); `resume` continues the run in `out`.

    `progress` shows the live display on stderr (in a notebook, in the notebook); `on_event(kind, info)` is
    called for each event (start, step, eval, save, note, warn, done) from the training thread. Training
    stops cleanly, after saving a checkpoint, when `stop` (a threading.Event) is set, or on Ctrl-C / SIGTERM
    when called from the main thread; then TrainingInterrupted (a KeyboardInterrupt) is raised, its ``run``
    the run as it was left, which ``resume=True`` continues exactly. Returns the Run.
    """
    from charlm.training.request import TrainRequest

    values = {k: v for k, v in locals().items() if k in _SETTINGS}
    defaults = {k: p.default for k, p in _signature_defaults().items() if k in _SETTINGS}
    overrides = {k: v for k, v in values.items() if v != defaults[k] and v != "auto"}
    if corpus is None:
        sources = []
    elif isinstance(corpus, (str, os.PathLike)):
        sources = [str(_path(corpus, "corpus"))]
    else:
        sources = [str(_path(c, "corpus")) for c in corpus]
    val_path = _path(val, "val")
    req = TrainRequest(
        sources,
        _path(out, "out"),
        str(val_path) if val_path is not None else None,
        resume,
        _path(init_from, "init_from"),
        replace_bad_bytes,
        overrides,
    )
    return train_request(req, on_event, progress=progress, stop=stop, backend=backend)


def _signature_defaults() -> Any:
    import inspect

    return inspect.signature(train).parameters


def _display(progress: bool, on_event: OnEvent | None, names: Callable[[str], str] | None) -> Any:
    """The display for `progress` (rich's live display: a terminal, a notebook, or a line every few seconds),
    followed by the caller's `on_event`; without either, warnings go to Python's warnings."""
    from charlm.ui.progress import TrainDisplay

    display = TrainDisplay(names=names, notebook=True) if progress else None

    def events(kind: str, info: dict[str, Any]) -> None:
        if display is not None:
            display(kind, info)
        elif kind == "warn" and on_event is None:
            warnings.warn(str(info["message"]), CharlmWarning, stacklevel=2)
        if on_event is not None:
            on_event(kind, info)

    # the corpus encoder shows its own progress unless the display is quiet
    events.quiet = display.quiet if display is not None else getattr(on_event, "quiet", True)  # type: ignore[attr-defined]
    return display, events


def train_request(
    request: TrainRequest,
    on_event: OnEvent | None = None,
    *,
    progress: bool = True,
    stop: threading.Event | None = None,
    backend: str | None = None,
    second_interrupt: Literal["raise", "exit"] = "raise",
    names: Callable[[str], str] | None = None,
) -> Run:
    """`train` for a request already made (charlm.training.TrainRequest): what `train` and `charlm train` call.

    `second_interrupt` says what a second Ctrl-C does while the first is being handled: raise
    KeyboardInterrupt at once ("raise"), or end the process at once ("exit", the command line's way).
    `names` writes the parameters messages name (the command line: as flags)."""
    from contextlib import nullcontext

    from charlm import training

    display, events = _display(progress, on_event, names)
    with display if display is not None else nullcontext():
        result = training.train(request, events, backend, stop=stop, second_interrupt=second_interrupt)
    run = Run(result.run, result)
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        raise TrainingInterrupted(
            run,
            f"training stopped by {result.stopped_by} at step {result.step}; its last checkpoint is whole: "
            f"continue with charlm.train(resume=True, out={str(result.run)!r})",
        )
    return run


__all__ = [
    "CharlmError",
    "CharlmWarning",
    "Explained",
    "LineScore",
    "Model",
    "Run",
    "Score",
    "check_sample",
    "load",
    "train",
    "train_request",
]
