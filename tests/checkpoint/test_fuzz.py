"""Checkpoints as untrusted input, defended by class: generated damage, not a list of known cases.

Every generated checkpoint must end in one of two ways for every reader (resolve, the config properties, info,
loading the model, the NumPy sampler's loader): it loads, or it raises CheckpointError with a one-line
message. Never another exception, never a crash. Damage to the optimizer state is fed to a real resume and
one training step (the fused AdamW kernel once read past a short moment and segfaulted), so that part runs
in a child process, which this file is when run as a script.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charlm import checkpoint as ckpt_io
from charlm.errors import CheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import redteam_checkpoint as redteam  # noqa: E402

FUZZ = settings(
    max_examples=int(os.environ.get("CHARLM_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.integers(-(10**40), 10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
    | st.sampled_from(["1", "x", "gru", "lstm", "\ud800", "NaN"])
)
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6
)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON document: dict keys and list indices, to depth 4."""
    out = [prefix] if prefix else []
    if len(prefix) < 4:
        items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
        for k, v in items:
            out += _paths(v, (*prefix, k))
    return out


def _mutate(doc: Any, path: tuple, how: str, value: Any) -> None:
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if how == "delete" and isinstance(parent, dict):
        del parent[last]
    elif how == "delete" and isinstance(parent, list):
        parent.pop(last)
    else:
        parent[last] = value


def _every_reader(step: Path) -> None:
    """Use the checkpoint as every command does; only CheckpointError, in one line, may come out."""
    from charlm.inference import sample as sampling
    from charlm.ui.info import describe, render

    try:
        ck = ckpt_io.resolve(step)
        _ = (ck.model_config, ck.train_config, ck.tokenizer, ck.val_bpc, ck.step)
        render(describe(ck))
        ckpt_io.load_model(ck)
        ckpt_io.read_tensors(ck, framework="numpy")
        sampling.load(ck, "cpu", 1)
    except CheckpointError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))


@pytest.fixture
def step(tiny_run: Path, tmp_path: Path) -> Path:
    return redteam.steps(shutil.copytree(tiny_run, tmp_path / "run"))[-1]


@FUZZ
@given(data=st.data())
def test_generated_checkpoint_json_loads_or_is_one_line(step: Path, data: st.DataObject) -> None:
    original = json.loads((step / "checkpoint.json").read_text())
    doc = json.loads(json.dumps(original))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        _mutate(doc, path, data.draw(st.sampled_from(["replace", "replace", "delete"])), data.draw(json_values))
    (step / "checkpoint.json").write_text(json.dumps(doc, allow_nan=True))
    try:
        _every_reader(step)
    finally:
        (step / "checkpoint.json").write_text(json.dumps(original))


def _header_of(f: Path) -> tuple[dict[str, Any], bytes]:
    data = f.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


dtypes = st.sampled_from(["F32", "F32", "BF16", "F16", "F64", "I32", "U8", "BOOL", "XX", 5, None])
dims = st.integers(-3, 40) | st.integers(0, 1 << 45) | st.sampled_from([16, 24, 48, 72])


@FUZZ
@given(data=st.data())
def test_generated_weight_headers_load_or_are_one_line(step: Path, data: st.DataObject) -> None:
    f = step / "model.safetensors"
    meta_text, original = (step / "checkpoint.json").read_text(), f.read_bytes()
    try:
        _damage_header(step, data)
        _every_reader(step)
    finally:
        f.write_bytes(original)
        (step / "checkpoint.json").write_text(meta_text)


def _damage_header(step: Path, data: st.DataObject) -> None:
    f = step / "model.safetensors"
    header, body = _header_of(f)
    names = sorted(k for k in header if k != "__metadata__")
    for name in data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)):
        t = header.get(name, {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})
        what = data.draw(st.sampled_from(["dtype", "shape", "offsets", "drop", "swap"]))
        if what == "dtype":
            t["dtype"] = data.draw(dtypes)
        elif what == "shape":
            t["shape"] = data.draw(st.lists(dims, max_size=3))
        elif what == "offsets":
            a, b = t["data_offsets"]
            shift = data.draw(st.integers(-(1 << 20), 1 << 20) | st.sampled_from([-8, -4, 4, len(body)]))
            t["data_offsets"] = data.draw(st.sampled_from([[a + shift, b + shift], [a, b + shift], [b, a]]))
        elif what == "drop":
            header.pop(name, None)
            continue
        else:
            other = data.draw(st.sampled_from(names))
            t, header[other] = header.get(other, t), t
        header[name] = t
    if data.draw(st.booleans()):
        body = body[: data.draw(st.integers(0, len(body)))]
    redteam.write_raw_safetensors(step, "model.safetensors", header, body)
    if data.draw(st.integers(0, 9)) == 0:  # a header length that lies
        raw = bytearray(f.read_bytes())
        raw[:8] = struct.pack("<Q", data.draw(st.integers(0, (1 << 64) - 1)))
        f.write_bytes(bytes(raw))


# ---------------------------------------------------------------- optimizer state, in a child process


def _fuzz_state(run: Path, examples: int) -> None:
    """Generated damage to state.safetensors, then a real resume and one fused AdamW step."""
    import torch

    from charlm import training
    from charlm.errors import CharlmError

    torch.set_num_threads(1)
    base = redteam.steps(run)[-1]

    @settings(max_examples=examples, deadline=None, database=None)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        work = run.parent / "fuzz-copy"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(run, work)
        step = work / base.name
        for extra in redteam.steps(work):
            if extra != step:
                shutil.rmtree(extra)

        def change(t: dict[str, Any]) -> None:
            names = sorted(t)
            for name in data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True)):
                v = t[name]
                how = data.draw(st.sampled_from(["shrink", "grow", "reshape", "dtype", "drop", "scalar", "rename"]))
                if how == "shrink" and v.numel() > 1:
                    t[name] = v.flatten()[: data.draw(st.integers(0, v.numel() - 1))].clone()
                elif how == "grow":
                    t[name] = torch.cat([v.flatten(), v.flatten()]).clone()
                elif how == "reshape" and v.dim() == 2:
                    t[name] = v.t().contiguous()
                elif how == "dtype":
                    t[name] = v.to(data.draw(st.sampled_from([torch.float64, torch.float16, torch.int32, torch.uint8])))
                elif how == "drop":
                    del t[name]
                elif how == "scalar":
                    t[name] = torch.tensor(1.0)
                elif how == "rename":
                    t[data.draw(st.sampled_from(["optim.999.exp_avg", "optim.x.step", "optim.0.foo", "hidden"]))] = (
                        t.pop(name)
                    )

        redteam.rewrite_tensors(step, "state.safetensors", change)
        req = training.TrainRequest([], out=work, resume=True, overrides={"max_steps": 10_000})
        try:
            trainer = training.prepare(req)
            trainer.train_step()
            trainer.train_step()
        except CharlmError as e:
            assert str(e) and "\n" not in str(e), repr(str(e))

    one()


def test_generated_optimizer_state_resumes_or_is_one_line(tiny_run: Path, tmp_path: Path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")
    examples = os.environ.get("CHARLM_FUZZ_EXAMPLES", "40")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run(
        [sys.executable, __file__, str(run), examples], capture_output=True, text=True, env=env, timeout=600
    )
    assert p.returncode == 0, f"exit {p.returncode} (a negative one is a signal: a crash)\n{p.stderr[-3000:]}"


if __name__ == "__main__":
    _fuzz_state(Path(sys.argv[1]), int(sys.argv[2]))
