"""The ONNX export, run by onnxruntime: equal to charlm for every cell, in fp32 and (to 0.01 bits/char) int8.

Each cell's tiny run is trained and exported once for the module (fp32 and int8); the tests read the folders.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charlm import checkpoint as ckpt_io
from charlm.cli import app

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from charlm.onnx_export import (  # noqa: E402  (after the skip: these need the extra)
    CONFIG,
    META_CONFIG,
    META_TOKENIZER,
    MODEL,
    TOKENIZER,
    OnnxModel,
    charlm_logits,
    export,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "onnx_sample.py"
CELLS = ["gru", "lstm", "rnn"]


@pytest.fixture(scope="module", params=CELLS)
def exported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, text_maker, tiny_run_settings: dict
) -> dict:
    """A tiny trained run of one cell, its model, a held-out text of 2,001 characters, and its fp32 and int8
    exports."""
    from charlm import training

    base = tmp_path_factory.mktemp(f"export-{request.param}")
    corpus = base / "tiny.txt"
    corpus.write_text(text_maker(), encoding="utf-8")
    run = base / "run"
    settings = {**tiny_run_settings, "cell": request.param}
    training.train(training.TrainRequest([str(corpus)], out=run, overrides=settings))
    ck = ckpt_io.resolve(run)
    model, tok = ckpt_io.load_model(ck)
    held_out = text_maker(400, seed=1)[:2001]
    assert len(held_out) == 2001 and not tok.unknown(held_out)
    (base / "held_out.txt").write_text(held_out, encoding="utf-8")
    fp32 = export(ck, base / "fp32")
    int8 = export(ck, base / "int8", int8=True, text=held_out, text_name="held_out.txt")
    return {
        "cell": request.param,
        "run": run,
        "ckpt": ck,
        "model": model,
        "tok": tok,
        "text": base / "held_out.txt",
        "ids": tok.encode(held_out),
        "fp32": base / "fp32",
        "int8": base / "int8",
        "results": {"fp32": fp32, "int8": int8},
    }


def test_logits_equal_charlm_over_2000_characters_with_the_state_carried(exported: dict) -> None:
    model, ids = exported["model"], exported["ids"][:2000]
    assert model.config.cell == exported["cell"]
    expected = charlm_logits(model, ids, len(ids))  # charlm in one pass
    onnx_model = OnnxModel(exported["fp32"] / MODEL)
    for chunk in (1, 64):
        got = onnx_model.logits(ids, chunk)
        assert got.shape == expected.shape == (2000, model.config.vocab_size)
        assert np.abs(got - expected).max() < 1e-5, chunk


def test_the_new_state_is_charlms_and_batch_and_length_are_dynamic(exported: dict) -> None:
    model, ids = exported["model"], exported["ids"]
    onnx_model = OnnxModel(exported["fp32"] / MODEL)
    batch = np.stack([ids[:37], ids[100:137], ids[500:537]])  # 3 streams at once, 37 characters per call
    state = torch.randn(model.state_layers, 3, model.config.hidden) * 0.5  # a state that is not zero
    with torch.no_grad():
        logits, new = model(torch.from_numpy(batch), state)
    got_logits, got_state = onnx_model(batch, state.numpy())
    assert got_logits.shape == (3, 37, model.config.vocab_size) and got_state.shape == tuple(state.shape)
    assert np.abs(got_logits - logits.numpy()).max() < 1e-5
    assert np.abs(got_state - new.numpy()).max() < 1e-5


def _evaluate(exported: dict) -> float:
    result = CliRunner().invoke(
        app, ["evaluate", str(exported["run"]), str(exported["text"]), "--json", "-q"], prog_name="charlm"
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["bits_per_char"]


def test_bits_per_char_through_the_export_equal_charlm_evaluate(exported: dict) -> None:
    expected = _evaluate(exported)
    fp32 = OnnxModel(exported["fp32"] / MODEL).bits_per_char(exported["ids"])
    int8 = OnnxModel(exported["int8"] / MODEL).bits_per_char(exported["ids"])
    assert abs(fp32 - expected) < 1e-5
    assert abs(int8 - expected) < 0.01
    assert int8 != fp32  # the weights really are int8: the figures differ a little
    reported = exported["results"]["int8"]
    assert reported.bpc == pytest.approx({"fp32": fp32, "int8": int8}, abs=1e-9)
    assert reported.bpc_text == "held_out.txt"


def test_int8_quantizes_every_weight_product_and_is_smaller(exported: dict) -> None:
    import onnx

    proto = onnx.load(exported["int8"] / MODEL)
    onnx.checker.check_model(proto, full_check=True)  # standard ONNX: no operator of onnxruntime's own
    assert [o.domain for o in proto.opset_import] == [""]
    scans = [n for n in proto.graph.node if n.op_type == "Scan"]
    assert len(scans) == exported["model"].config.layers
    for scan in scans:  # the recurrent product of each layer runs in int8
        body = {n.op_type for n in scan.attribute[0].g.node}
        assert "MatMulInteger" in body and "MatMul" not in body
    assert "MatMul" not in {n.op_type for n in proto.graph.node}  # inputs and head too
    sizes = (exported["fp32"] / MODEL).stat().st_size, (exported["int8"] / MODEL).stat().st_size
    assert sizes[1] < 0.9 * sizes[0]
    record = json.loads((exported["int8"] / CONFIG).read_text())
    assert record["weights"] == "int8" and record["int8"]["fp32_bytes"] == sizes[0]


def test_the_files_describe_the_model_and_model_onnx_alone_carries_them(exported: dict) -> None:
    import hashlib

    ck, tok, model = exported["ckpt"], exported["tok"], exported["model"]
    folder = exported["fp32"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([MODEL, TOKENIZER, CONFIG])
    tokenizer = json.loads((folder / TOKENIZER).read_text(encoding="utf-8"))
    assert tokenizer["id_to_char"] == tok.chars
    assert tokenizer["id_to_code_point"] == [ord(c) for c in tok.chars]
    assert tokenizer["start"] == tok.id_of("\n") and tokenizer["unknown"]["default"] == "error"
    config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    S, H, V = model.state_layers, model.config.hidden, model.config.vocab_size
    assert config["cell"] == exported["cell"] and config["layers"] == 2 and config["hidden"] == H
    assert config["state_layers"] == S and config["version"] == 1 and config["format"] == "charlm-export"
    assert config["inputs"] == [
        {"name": "ids", "dtype": "int64", "shape": ["batch", "length"]},
        {"name": "state", "dtype": "float32", "shape": [S, "batch", H]},
    ]
    assert config["outputs"][0] == {"name": "logits", "dtype": "float32", "shape": ["batch", "length", V]}
    assert config["checkpoint"]["step"] == ck.step
    weights = (ck.path / ckpt_io.WEIGHTS).read_bytes()
    assert config["checkpoint"]["fingerprint"] == hashlib.sha256(weights).hexdigest()
    data = (folder / MODEL).read_bytes()
    assert config["files"][MODEL] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    onnx_model = OnnxModel(data)  # the metadata: the same records, and the graph's own inputs and outputs
    assert onnx_model.tokenizer == tokenizer
    assert onnx_model.config == {k: v for k, v in config.items() if k != "files"}
    meta = onnx_model.session.get_modelmeta().custom_metadata_map
    assert set(meta) >= {META_CONFIG, META_TOKENIZER}
    assert [i.name for i in onnx_model.session.get_inputs()] == ["ids", "state"]
    assert [o.name for o in onnx_model.session.get_outputs()] == ["logits", "new_state"]
    assert onnx_model.session.get_inputs()[0].shape == ["batch", "length"]


def _run_example(folder: Path, *args: str) -> str:
    """examples/onnx_sample.py in a process where torch and charlm cannot be imported."""
    code = (
        "import runpy, sys; sys.modules['torch'] = sys.modules['charlm'] = None; "
        f"sys.argv = {[str(EXAMPLE), str(folder), *args]!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_example_writes_text_in_the_models_vocabulary_without_torch_or_charlm(exported: dict) -> None:
    tok = exported["tok"]
    for folder in (exported["fp32"], exported["int8"] / MODEL):
        text = _run_example(folder, "--length", "300", "--seed", "3")
        assert text.endswith("\n") and len(text) == 301
        assert not tok.unknown(text[:-1])
        assert len(set(text)) > 5  # not one character repeated


def test_the_example_greedy_text_is_charlm_samples(exported: dict) -> None:
    greedy = _run_example(exported["fp32"], "--length", "120", "--temperature", "0", "--prime", "the cat")
    result = CliRunner().invoke(
        app,
        ["sample", str(exported["run"]), "--length", "120", "--temperature", "0", "--prime", "the cat", "-q"],
        prog_name="charlm",
    )
    assert result.exit_code == 0, result.output
    assert greedy[:-1] == result.stdout.rstrip("\n")[:120]


def test_the_readme_snippet_runs_and_gives_charlms_logits(exported: dict, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Export\n") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 5
    (tmp_path / "my_model").symlink_to(exported["fp32"])
    scope: dict = {}
    exec(snippet, scope)  # in the test's own folder (conftest), where my_model/ is the export
    model, tok = exported["model"], exported["tok"]
    expected = charlm_logits(model, np.array([tok.id_of("\n")]), 1)
    assert np.abs(scope["logits"][0] - expected).max() < 1e-5
    assert scope["state"].shape == (model.state_layers, 1, model.config.hidden)


def test_any_vocabulary_travels_in_the_files_and_the_metadata(save_model, tmp_path: Path) -> None:
    from charlm.config import ModelConfig
    from charlm.model import CharLM
    from charlm.tokenizer import CharTokenizer

    tok = CharTokenizer(["a", " ", "猫", "🌙", "\u2028", "\n"])  # CJK, an emoji, a line separator
    model = CharLM(ModelConfig(vocab_size=tok.vocab_size, embed=4, hidden=8, layers=1, cell="lstm")).eval()
    ck = ckpt_io.resolve(save_model(tmp_path / "run", model, tok))
    export(ck, tmp_path / "exp")
    tokenizer = json.loads((tmp_path / "exp" / TOKENIZER).read_bytes().decode("utf-8"))
    assert tokenizer["id_to_char"] == tok.chars and tokenizer["id_to_code_point"] == [ord(c) for c in tok.chars]
    assert OnnxModel(tmp_path / "exp" / MODEL).tokenizer == tokenizer
    # a lone surrogate is no character: a checkpoint whose vocabulary holds one is refused when read
    from charlm.errors import CheckpointError

    bad = CharTokenizer(["a", "\ud800"])
    save_model(tmp_path / "bad", CharLM(ModelConfig(vocab_size=2, embed=4, hidden=8, layers=1)), bad)
    with pytest.raises(CheckpointError, match="surrogate"):
        ckpt_io.resolve(tmp_path / "bad")


def test_export_from_python_takes_paths_and_raises_typed_errors(save_model) -> None:
    from charlm.config import ModelConfig
    from charlm.errors import CheckpointNotFoundError, UsageError
    from charlm.model import CharLM
    from charlm.tokenizer import CharTokenizer

    tok = CharTokenizer("ab \n")
    model = CharLM(ModelConfig(vocab_size=tok.vocab_size, embed=4, hidden=8, layers=1)).eval()
    save_model(Path("checkpoints/mine"), model, tok)  # in the test's own folder
    result = export(None, "exp")  # the newest run under ./checkpoints
    assert result.out == Path("exp") and Path(result.config["checkpoint"]["path"]).parent.name == "mine"
    assert result.sizes[MODEL] == (Path("exp") / MODEL).stat().st_size and result.int8_bytes is None
    with pytest.raises(UsageError, match="is not empty"):
        export("checkpoints/mine", Path("exp"))
    assert export("checkpoints/mine", "exp", force=True).out == Path("exp")
    with pytest.raises(CheckpointNotFoundError):
        export("no_such_run", "exp2")
    assert not Path("exp2").exists()


def test_the_python_api_exports_a_loaded_model(save_model) -> None:
    import charlm
    from charlm.config import ModelConfig
    from charlm.errors import UsageError
    from charlm.model import CharLM
    from charlm.tokenizer import CharTokenizer

    tok = CharTokenizer("xyz \n")
    model = CharLM(ModelConfig(vocab_size=tok.vocab_size, embed=4, hidden=8, layers=2, cell="rnn")).eval()
    run = save_model(Path("run"), model, tok)
    loaded = charlm.load(run)
    result = loaded.export("a", int8=True, text="xyz zyx\n" * 30, source="my text")
    assert result.bpc_text == "my text" and result.config["weights"] == "int8"
    assert json.loads(Path("a", CONFIG).read_text())["int8"]["measured_on"] == "my text"
    again = charlm.export(str(run), Path("b"))  # the module-level function: load, then export
    assert again.config["checkpoint"] == result.config["checkpoint"] and again.config["cell"] == "rnn"
    assert OnnxModel(Path("b", MODEL)).config == {**again.config}
    with pytest.raises(UsageError, match="out"):
        loaded.export(None)  # type: ignore[arg-type]
