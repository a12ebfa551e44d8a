"""Sample text from a `charlm export` with nothing but onnxruntime and NumPy (no torch, no charlm).

    pip install onnxruntime numpy
    python onnx_sample.py EXPORT_DIR_OR_MODEL_ONNX [--length 500] [--temperature 0.8] [--seed 1] [--prime TEXT]

model.onnx carries its own vocabulary and config in its metadata (`charlm.tokenizer`, `charlm.config`), so the
file alone is enough. Each call reads the ids given and the state, and returns the logits after each id and
the new state; here one character at a time, the state carried from call to call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def load(path: Path) -> tuple[ort.InferenceSession, dict, dict]:
    model = path / "model.onnx" if path.is_dir() else path
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    return session, json.loads(meta["charlm.config"]), json.loads(meta["charlm.tokenizer"])


def encode(text: str, tokenizer: dict) -> list[int]:
    """Ids of `text`; a character outside the vocabulary has no id, so it is an error (see tokenizer.json)."""
    index = {cp: i for i, cp in enumerate(tokenizer["id_to_code_point"])}
    unknown = sorted({c for c in text if ord(c) not in index})
    if unknown:
        sys.exit(f"error: the model never saw {', '.join(map(repr, unknown))}")
    return [index[ord(c)] for c in text]


def sample(
    session: ort.InferenceSession, config: dict, tokenizer: dict, length: int, temperature: float, seed: int, prime: str
) -> str:
    rng = np.random.default_rng(seed)
    state = np.zeros((config["state_layers"], 1, config["hidden"]), np.float32)
    ids = encode(prime, tokenizer) if prime else [tokenizer["start"]]
    logits, state = session.run(None, {"ids": np.array([ids], np.int64), "state": state})  # read the prime
    chars, out = tokenizer["id_to_char"], []
    for _ in range(length):
        scores = logits[0, -1].astype(np.float64)
        if temperature == 0:
            x = int(scores.argmax())
        else:
            p = np.exp((scores - scores.max()) / temperature)
            x = int(rng.choice(len(p), p=p / p.sum()))
        out.append(chars[x])
        logits, state = session.run(None, {"ids": np.array([[x]], np.int64), "state": state})
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an export folder or its model.onnx")
    parser.add_argument("--length", type=int, default=500, help="characters to write")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--prime", default="", help="text the model reads first (not repeated)")
    args = parser.parse_args()
    session, config, tokenizer = load(args.model)
    print(sample(session, config, tokenizer, args.length, args.temperature, args.seed, args.prime))


if __name__ == "__main__":
    main()
