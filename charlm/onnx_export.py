"""A trained model as ONNX: one step with its state carried, written out from the cell's equations, with the
vocabulary inside, fp32 or int8, and checked against charlm with onnxruntime before anything is written.

An export folder holds three files:
  model.onnx       ids (batch, length) int64 and state (state_layers, batch, hidden) float32 in; logits
                   (batch, length, vocab) and new_state out. Batch and length are dynamic: one graph serves
                   sampling (length 1) and scoring (a long chunk). Its metadata carries tokenizer.json and the
                   config under `charlm.tokenizer` and `charlm.config`, so the file alone is enough.
  tokenizer.json   id -> character (as code points and as characters), the start id, and the rule for
                   characters outside the vocabulary
  charlm.json      the config (cell, shape, the step's inputs and outputs, the checkpoint's fingerprint and step,
                   the export format's version) and the size and SHA-256 of model.onnx

The graph is built here from the weights, not traced: per layer one product of the whole chunk's inputs by
W_ih, then an ONNX Scan over time whose body is the cell's equations (those of `gru_layer_reference`,
`lstm_layer_reference` and `rnn_layer_reference` in charlm.model) with one product by W_hh per character, then
the head. Every weight is then a plain MatMul, so onnxruntime's dynamic quantization (`int8`) turns each
one, the recurrent weights included, into int8 (its GRU and RNN operators have no int8 form).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from charlm import __version__
from charlm.checkpoint import WEIGHTS, Checkpoint
from charlm.errors import CharlmError, MissingExtraError
from charlm.model import BLOCKS, CELL_NAMES
from charlm.outfile import check_dir
from charlm.tokenizer import CharTokenizer

if TYPE_CHECKING:
    import onnx
    import onnxruntime  # type: ignore[import-untyped]
    from onnx import ModelProto

    from charlm.model import CharLM

FORMAT = "charlm-export"
VERSION = 1
OPSET = 18
MODEL, TOKENIZER, CONFIG = "model.onnx", "tokenizer.json", "charlm.json"
FILES = (MODEL, TOKENIZER, CONFIG)
META_TOKENIZER, META_CONFIG = "charlm.tokenizer", "charlm.config"  # the keys in model.onnx's metadata
INPUTS, OUTPUTS = ("ids", "state"), ("logits", "new_state")
INSTALL_HINT = "charlm export needs onnx and onnxruntime: pip install 'charlm[export]'"
UNKNOWN_RULE = (
    "a character outside the vocabulary has no id: stop with an error naming it (charlm's default), or drop it "
    "(charlm's --skip-unknown); never map it to another id"
)
CHECK_CHARS = 512  # characters of the check that onnxruntime's logits equal charlm's
INT8_CHECK_CHARS = 4000  # characters sampled from the model to measure int8's change when no text is given
MAX_LOGIT_DIFF = 1e-4  # the check's limit (fp32 exports agree to about 1e-6)


def require_extra() -> tuple[Any, Any]:
    """The onnx and onnxruntime modules, or MissingExtraError saying what to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise MissingExtraError(INSTALL_HINT) from None
    return onnx, onnxruntime


# ---------------------------------------------------------------- the files' contents


def tokenizer_record(tok: CharTokenizer) -> dict[str, Any]:
    """tokenizer.json: ids follow code-point order; `start` is the id sampling begins with when given no prime."""
    return {
        "format": "charlm-tokenizer",
        "version": VERSION,
        "vocab_size": tok.vocab_size,
        "id_to_code_point": [ord(c) for c in tok.chars],
        "id_to_char": tok.chars,
        "start": tok.id_of("\n") if "\n" in tok else 0,
        "unknown": {"default": "error", "alternative": "skip", "rule": UNKNOWN_RULE},
    }


def checkpoint_fingerprint(ckpt: Checkpoint) -> str:
    """The SHA-256 of the checkpoint's weights file (the one its checkpoint.json records, checked on loading)."""
    recorded = ckpt.meta.get("sha256", {}).get(WEIGHTS)
    return recorded or hashlib.sha256((ckpt.path / WEIGHTS).read_bytes()).hexdigest()


def config_record(ckpt: Checkpoint, int8: bool) -> dict[str, Any]:
    """The config: what a program needs to drive model.onnx, and which checkpoint it came from."""
    m = ckpt.model_config
    state_layers = 2 * m.layers if m.cell == "lstm" else m.layers
    return {
        "format": FORMAT,
        "version": VERSION,
        "charlm_version": __version__,
        "cell": m.cell,
        "vocab_size": m.vocab_size,
        "embed": m.embed,
        "hidden": m.hidden,
        "layers": m.layers,
        "state_layers": state_layers,
        "state_rows": "h of each layer, bottom first" + (", then c of each layer" if m.cell == "lstm" else ""),
        "weights": "int8" if int8 else "fp32",
        "opset": OPSET,
        "inputs": [
            {"name": INPUTS[0], "dtype": "int64", "shape": ["batch", "length"]},
            {"name": INPUTS[1], "dtype": "float32", "shape": [state_layers, "batch", m.hidden]},
        ],
        "outputs": [
            {"name": OUTPUTS[0], "dtype": "float32", "shape": ["batch", "length", m.vocab_size]},
            {"name": OUTPUTS[1], "dtype": "float32", "shape": [state_layers, "batch", m.hidden]},
        ],
        "initial_state": "zeros",
        "checkpoint": {"path": str(ckpt.path), "step": ckpt.step, "fingerprint": checkpoint_fingerprint(ckpt)},
    }


def _json(record: dict[str, Any]) -> str:
    """Readable JSON (characters as themselves); escaped where a character cannot be written as UTF-8 (a lone
    surrogate, which a vocabulary read from bytes can hold)."""
    text = json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, indent=1, allow_nan=False) + "\n"
    return text


# ---------------------------------------------------------------- the graph


class _Graph:
    """Nodes and initializers of one ONNX graph, named with a prefix so subgraphs never shadow the outer one."""

    def __init__(self, onnx: Any, prefix: str = "") -> None:
        self.onnx, self.prefix = onnx, prefix
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def const(self, name: str, array: np.ndarray) -> str:
        name = self.prefix + name
        self.inits.append(self.onnx.numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs: Any) -> str:
        out = self.prefix + name
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def ops(self, op_type: str, inputs: list[str], names: list[str], **attrs: Any) -> list[str]:
        outs = [self.prefix + n for n in names]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outs


def _cell_body(onnx: Any, cell: str, layer: int, H: int, w_hh: str, b_hh: str) -> Any:
    """The Scan body of one layer: (state..., gi_t) -> (new state..., h_t), gi_t = W_ih x_t + b_ih (B, k*H).

    The equations are PyTorch's, in its block order (GRU r, z, n; LSTM i, f, g, o), as in charlm.model.
    """
    g = _Graph(onnx, f"l{layer}/")
    f32 = onnx.TensorProto.FLOAT
    vi = onnx.helper.make_tensor_value_info
    k = BLOCKS[cell]
    state = ["h", "c"] if cell == "lstm" else ["h"]
    inputs = [vi(g.prefix + s, f32, ["batch", H]) for s in state] + [vi(g.prefix + "gi", f32, ["batch", k * H])]
    h, gi = g.prefix + "h", g.prefix + "gi"
    gh = g.op("Add", [g.op("MatMul", [h, w_hh], "hw"), b_hh], "gh")  # W_hh h + b_hh
    if cell == "gru":
        gi_r, gi_z, gi_n = g.ops("Split", [gi], ["gi_r", "gi_z", "gi_n"], axis=1, num_outputs=3)
        gh_r, gh_z, gh_n = g.ops("Split", [gh], ["gh_r", "gh_z", "gh_n"], axis=1, num_outputs=3)
        r = g.op("Sigmoid", [g.op("Add", [gi_r, gh_r], "r_pre")], "r")  # reset gate
        z = g.op("Sigmoid", [g.op("Add", [gi_z, gh_z], "z_pre")], "z")  # update gate
        n = g.op("Tanh", [g.op("Add", [gi_n, g.op("Mul", [r, gh_n], "r_gh_n")], "n_pre")], "n")  # candidate
        # h' = (1 - z) * n + z * h, written n + z * (h - n)
        new = [g.op("Add", [n, g.op("Mul", [z, g.op("Sub", [h, n], "h_n")], "z_h_n")], "h_new")]
    elif cell == "lstm":
        c = g.prefix + "c"
        pre = g.op("Add", [gi, gh], "pre")
        i_pre, f_pre, g_pre, o_pre = g.ops("Split", [pre], ["i_pre", "f_pre", "g_pre", "o_pre"], axis=1, num_outputs=4)
        i = g.op("Sigmoid", [i_pre], "i")  # input gate
        f = g.op("Sigmoid", [f_pre], "f")  # forget gate
        gg = g.op("Tanh", [g_pre], "g")  # cell candidate
        o = g.op("Sigmoid", [o_pre], "o")  # output gate
        c_new = g.op("Add", [g.op("Mul", [f, c], "f_c"), g.op("Mul", [i, gg], "i_g")], "c_new")
        new = [g.op("Mul", [o, g.op("Tanh", [c_new], "tanh_c")], "h_new"), c_new]
    else:
        new = [g.op("Tanh", [g.op("Add", [gi, gh], "pre")], "h_new")]  # plain RNN: no gates
    y = g.op("Identity", [new[0]], "y")
    outputs = [vi(name, f32, ["batch", H]) for name in [*new, y]]
    return onnx.helper.make_graph(g.nodes, f"layer{layer}_step", inputs, outputs)


def build_graph(model: CharLM, metadata: dict[str, str]) -> onnx.ModelProto:
    """The fp32 ONNX model of `model`'s step, with `metadata` in its metadata_props."""
    onnx, _ = require_extra()
    cfg = model.config
    H, L, cell = cfg.hidden, cfg.layers, cfg.cell
    w = {n: p.detach().to("cpu").float().numpy() for n, p in model.state_dict().items()}
    g = _Graph(onnx)
    axis0 = g.const("axis0", np.array([0], np.int64))
    x = g.op("Gather", [g.const("embed.weight", w["embed.weight"]), INPUTS[0]], "x0")  # (B, T, E)
    finals: list[list[str]] = [[], []]  # the new h of each layer; for an LSTM also its c
    for layer in range(L):
        p = f"{cell}.{{}}_l{layer}"
        w_ih = g.const(f"l{layer}.w_ih_t", w[p.format("weight_ih")].T)
        b_ih = g.const(f"l{layer}.b_ih", w[p.format("bias_ih")])
        gi = g.op("Add", [g.op("MatMul", [x, w_ih], f"l{layer}.xw"), b_ih], f"l{layer}.gi")  # (B, T, k*H)
        w_hh = g.const(f"l{layer}.w_hh_t", w[p.format("weight_hh")].T)
        b_hh = g.const(f"l{layer}.b_hh", w[p.format("bias_hh")])
        rows = [layer, L + layer] if cell == "lstm" else [layer]
        state = [
            g.op("Gather", [INPUTS[1], g.const(f"l{layer}.row{r}", np.array(r, np.int64))], f"l{layer}.s{r}", axis=0)
            for r in rows
        ]
        body = _cell_body(onnx, cell, layer, H, w_hh, b_hh)
        outs = g.ops(
            "Scan",
            [*state, gi],
            [f"l{layer}.h_last", f"l{layer}.c_last"][: len(rows)] + [f"l{layer}.y"],
            body=body,
            num_scan_inputs=1,
            scan_input_axes=[1],
            scan_output_axes=[1],
        )
        for j, s in enumerate(outs[:-1]):
            finals[j].append(g.op("Unsqueeze", [s, axis0], f"l{layer}.final{j}"))
        x = outs[-1]  # (B, T, H): this layer's states, the next layer's input
    head = g.op("MatMul", [x, g.const("head.w_t", w["head.weight"].T)], "head.xw")
    bias = g.const("head.bias", w["head.bias"])
    g.nodes.append(onnx.helper.make_node("Add", [head, bias], [OUTPUTS[0]], name=OUTPUTS[0]))
    g.nodes.append(onnx.helper.make_node("Concat", finals[0] + finals[1], [OUTPUTS[1]], name="new_state", axis=0))
    vi, S = onnx.helper.make_tensor_value_info, (2 * L if cell == "lstm" else L)
    graph = onnx.helper.make_graph(
        g.nodes,
        "charlm_step",
        [
            vi(INPUTS[0], onnx.TensorProto.INT64, ["batch", "length"]),
            vi(INPUTS[1], onnx.TensorProto.FLOAT, [S, "batch", H]),
        ],
        [
            vi(OUTPUTS[0], onnx.TensorProto.FLOAT, ["batch", "length", cfg.vocab_size]),
            vi(OUTPUTS[1], onnx.TensorProto.FLOAT, [S, "batch", H]),
        ],
        g.inits,
    )
    proto = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="charlm", producer_version=__version__
    )
    proto.ir_version = 8  # onnxruntime 1.14 and newer read it
    proto.doc_string = f"charlm {CELL_NAMES[cell]} character model: one step with its state carried (see charlm.json)"
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    return cast("ModelProto", proto)


def quantize(fp32: bytes) -> bytes:
    """model.onnx with every weight product in int8: onnxruntime's dynamic quantization, a scale per output
    column of each weight (the blocks of a stacked matrix differ in range), the Scan bodies included."""
    onnx, _ = require_extra()
    from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory(prefix="charlm-int8-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # it advises on the root logger to pre-process the graph
        try:
            quantize_dynamic(
                src, dst, per_channel=True, weight_type=QuantType.QInt8, extra_options={"EnableSubgraph": True}
            )
        finally:
            root.setLevel(level)
        proto = onnx.load(dst)
    original = onnx.load_from_string(fp32)
    del proto.metadata_props[:]
    proto.metadata_props.extend(original.metadata_props)
    proto.doc_string, proto.producer_name, proto.producer_version = (
        original.doc_string,
        original.producer_name,
        original.producer_version,
    )
    return bytes(proto.SerializeToString())


# ---------------------------------------------------------------- running an export


class OnnxModel:
    """An exported model run by onnxruntime on the CPU: the step, whole-text scoring and plain sampling."""

    def __init__(self, model: bytes | str | Path, threads: int = 1) -> None:
        _, ort = require_extra()
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3  # errors only: its warnings would reach the user's stderr
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.session: onnxruntime.InferenceSession = ort.InferenceSession(
            data, options, providers=["CPUExecutionProvider"]
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_CONFIG not in meta or META_TOKENIZER not in meta:
            raise CharlmError(f"{model if not isinstance(model, bytes) else 'the model'}: not a charlm export")
        self.config: dict[str, Any] = json.loads(meta[META_CONFIG])
        self.tokenizer: dict[str, Any] = json.loads(meta[META_TOKENIZER])

    def zero_state(self, batch: int = 1) -> np.ndarray:
        c = self.config
        return np.zeros((c["state_layers"], batch, c["hidden"]), np.float32)

    def __call__(self, ids: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids (B, T) -> logits (B, T, V), new state."""
        logits, new = self.session.run(list(OUTPUTS), {INPUTS[0]: ids.astype(np.int64), INPUTS[1]: state})
        return logits, new

    def logits(self, ids: np.ndarray, chunk: int) -> np.ndarray:
        """(T, V) logits after each id of one stream, read `chunk` ids per call with the state carried."""
        state, out = self.zero_state(1), []
        for a in range(0, len(ids), chunk):
            logits, state = self(ids[None, a : a + chunk], state)
            out.append(logits[0])
        return np.concatenate(out)

    def nats(self, ids: np.ndarray, chunk: int = 64) -> float:
        """Total negative log-likelihood (nats) of ids[1:], each given all the ids before it, in one pass."""
        logits = self.logits(ids[:-1], chunk).astype(np.float64)
        top = logits.max(-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
        return float((log_z - logits[np.arange(len(ids) - 1), ids[1:]]).sum())

    def bits_per_char(self, ids: np.ndarray, chunk: int = 64) -> float:
        return self.nats(ids, chunk) / (len(ids) - 1) / math.log(2)

    def sample(self, length: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
        """`length` ids drawn one at a time from the start id (softmax at `temperature`)."""
        rng, state = np.random.default_rng(seed), self.zero_state(1)
        x, out = self.tokenizer["start"], np.empty(length, np.int64)
        for t in range(length):
            logits, state = self(np.array([[x]]), state)
            p = np.exp((logits[0, 0] - logits[0, 0].max()) / temperature)
            x = out[t] = rng.choice(len(p), p=p / p.sum())
        return out


def charlm_logits(model: CharLM, ids: np.ndarray, chunk: int) -> np.ndarray:
    """(T, V) charlm's own logits after each id of one stream, `chunk` ids per call with the state carried."""
    import torch

    state, out = None, []
    with torch.no_grad():
        for a in range(0, len(ids), chunk):
            logits, state = model(torch.from_numpy(ids[None, a : a + chunk]), state)
            out.append(logits[0].numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------- the folder


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse a DIR that cannot take an export, by the rule every option that writes a folder follows
    (charlm.outfile.check_dir); with `force` only charlm's three files are replaced in an existing one."""
    check_dir(out, option="--out", force=force)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_folder(out: Path, files: dict[str, bytes]) -> None:
    """Write `files` into `out`: a new folder appears whole (written aside, then renamed); in an existing one
    each file is written aside and renamed over its old version, and nothing else in the folder is touched."""
    try:
        if out.is_dir():
            for name, data in files.items():
                tmp = out / f".{name}.tmp-{os.getpid()}"
                _write_file(tmp, data)
                os.replace(tmp, out / name)
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp_dir.chmod(0o777 & ~umask)  # mkdtemp's folder is private; the export is an ordinary folder
        try:
            for name, data in files.items():
                _write_file(tmp_dir / name, data)
            os.rename(tmp_dir, out)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    except OSError as e:
        for name in files:
            (out / f".{name}.tmp-{os.getpid()}").unlink(missing_ok=True)
        raise CharlmError(f"{out}: could not write the export: {e.strerror or e}") from None


@dataclass
class ExportResult:
    out: Path
    config: dict[str, Any]
    sizes: dict[str, int]  # bytes of each file written
    max_logit_diff: float  # onnxruntime against charlm, fp32 graph, over CHECK_CHARS characters
    fp32_bytes: int  # model.onnx in fp32 (written, or the one --int8 started from)
    int8_bytes: int | None = None
    bpc: dict[str, float] = field(default_factory=dict)  # fp32 and int8 bits/char on `bpc_text` (with int8)
    bpc_text: str = ""


def export_model(
    model: CharLM,
    ckpt: Checkpoint,
    out: Path,
    *,
    int8: bool = False,
    force: bool = False,
    text_ids: np.ndarray | None = None,
    text_name: str = "",
) -> ExportResult:
    """Write `model` (loaded from `ckpt`) as an export folder `out`, checked against charlm with onnxruntime.

    With `int8` model.onnx holds int8 weights; bits/char of the fp32 and int8 graphs are measured on
    `text_ids` (a text's ids) or, without one, on INT8_CHECK_CHARS characters sampled from the fp32 graph.
    """
    onnx, _ = require_extra()
    check_out_dir(out, force)
    tok, config = ckpt.tokenizer, config_record(ckpt, int8)
    tokenizer_json = _json(tokenizer_record(tok))
    metadata = {META_TOKENIZER: tokenizer_json, META_CONFIG: _json(config)}
    fp32 = build_graph(model, {**metadata, META_CONFIG: _json(config_record(ckpt, False))})
    fp32_bytes = fp32.SerializeToString()
    runner = OnnxModel(fp32_bytes)
    probe = np.random.default_rng(0).integers(0, tok.vocab_size, CHECK_CHARS)
    diff = float(np.abs(runner.logits(probe, 64) - charlm_logits(model, probe, 64)).max())
    if not diff <= MAX_LOGIT_DIFF:
        raise CharlmError(f"the ONNX graph's logits differ from charlm's by {diff:.2g}; nothing was written")
    result = ExportResult(out, config, {}, diff, len(fp32_bytes))
    data = fp32_bytes
    if int8:
        q = onnx.load_from_string(quantize(fp32_bytes))
        onnx.helper.set_model_props(q, metadata)
        data = q.SerializeToString()
        if text_ids is not None and len(text_ids) > 1:
            ids, result.bpc_text = text_ids, text_name
        else:
            ids, result.bpc_text = (
                runner.sample(INT8_CHECK_CHARS, seed=0),
                f"{INT8_CHECK_CHARS:,} characters sampled from the model",
            )
        result.bpc = {"fp32": runner.bits_per_char(ids), "int8": OnnxModel(data).bits_per_char(ids)}
        result.int8_bytes = len(data)
    files = {MODEL: data, TOKENIZER: tokenizer_json.encode()}
    record = {**config, "files": {MODEL: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}}
    if int8:
        record["int8"] = {
            "method": "onnxruntime dynamic quantization: int8 weights, a scale per output column; "
            "activations quantized per call",
            "fp32_bytes": len(fp32_bytes),
            "bits_per_char": result.bpc,
            "measured_on": result.bpc_text,
        }
    files[CONFIG] = _json(record).encode()
    write_folder(out, files)
    result.sizes = {name: len(b) for name, b in files.items()}
    return result


def export(
    checkpoint: str | os.PathLike[str] | Checkpoint | None,
    out: str | os.PathLike[str],
    *,
    int8: bool = False,
    force: bool = False,
    text: str | None = None,
    text_name: str = "the text given",
) -> ExportResult:
    """Export a checkpoint as an ONNX folder `out` (model.onnx, tokenizer.json, charlm.json); returns what it wrote.

    `checkpoint`: a run folder (its best checkpoint), a step-* folder, a file inside one, a Checkpoint, or None
    for the newest run under ./checkpoints. Its weights are checked against the SHA-256 its checkpoint.json
    records. `out` must not exist or be empty, unless `force`, which replaces only the three files there.
    `int8`: int8 weights; `text`: the text to measure the change in bits/char on (characters the model never
    saw are dropped), by default text sampled from the model.
    Raises MissingExtraError without onnx and onnxruntime, UsageError for a folder that cannot take the
    export, CheckpointError for a checkpoint that cannot be read or fails its check.
    """
    require_extra()
    out = Path(os.fspath(out))
    check_out_dir(out, force)  # before the weights are read: a folder that cannot take the export fails at once
    if not isinstance(checkpoint, Checkpoint):
        from charlm.checkpoint import resolve

        checkpoint = resolve(None if checkpoint is None else Path(os.fspath(checkpoint)), "best")
    model = _load_model(checkpoint)
    ids = checkpoint.tokenizer.encode(text, "skip") if text is not None else None
    return export_model(model, checkpoint, out, int8=int8, force=force, text_ids=ids, text_name=text_name)


def _load_model(ckpt: Checkpoint) -> CharLM:
    """The checkpoint's model on the CPU, in eval mode."""
    from charlm.checkpoint import load_model

    return load_model(ckpt, "cpu")[0]
