"""The GRU language model's one-character step in NumPy: what sampling on a CPU runs.

At one character per step the work is a few matrix-vector products and a couple of dozen element-wise
operations on vectors of a few hundred numbers, so the cost is the time each operation takes to start, not
arithmetic. NumPy starts one in about 0.4 us, PyTorch in 3-5 us, and on the CPUs measured NumPy's
matrix-vector product (OpenBLAS) was also faster than PyTorch's. NumPy also loads in a tenth of the time
`import torch` takes, so `charlm sample` can print its first character before torch would have loaded.

The step computes what `torch.nn.GRU` computes, on the same weights (see `charlm.model.gru_layer_reference`),
rearranged so that each character costs one matrix product per layer:
- the first layer's input projection is folded into a (vocab, 3*hidden) table: reading a character is a row;
- biases ride in the products as an extra input fixed at 1;
- layer i's new state feeds two products, layer i+1's input projection now and its own recurrent projection
  at the next character, so both are one product on one matrix; the top layer's recurrent projection and
  the output head likewise share one;
- sigmoid(a) = (1 + tanh(a / 2)) / 2: the weights of the sigmoid gates are halved, so one tanh serves the
  reset and update gates together (the factor 2 left over is halved back through the candidate's weights).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from charlm.config import ModelConfig


class GRUWeights:
    """A GRU language model's weights as float32 NumPy arrays, by their names in the model's state dict."""

    def __init__(self, config: ModelConfig, state: Mapping[str, Any]) -> None:
        """Raises KeyError or ValueError when `state` does not hold a GRU of `config`'s shape."""
        self.config = config
        shapes = self.shapes(config)
        self.arrays = {k: np.asarray(state[k], dtype=np.float32) for k in shapes}
        wrong = [k for k, shape in shapes.items() if self.arrays[k].shape != shape]
        if wrong:
            raise ValueError(f"{wrong[0]} has shape {self.arrays[wrong[0]].shape}, not {shapes[wrong[0]]}")

    @staticmethod
    def shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
        """Each weight's name in the model's state dict, and its shape."""
        H = c.hidden
        out = {"embed.weight": (c.vocab_size, c.embed), "head.weight": (c.vocab_size, H), "head.bias": (c.vocab_size,)}
        for i in range(c.layers):
            out |= {f"gru.weight_ih_l{i}": (3 * H, c.embed if i == 0 else H), f"gru.weight_hh_l{i}": (3 * H, H)}
            out |= {f"gru.bias_ih_l{i}": (3 * H,), f"gru.bias_hh_l{i}": (3 * H,)}
        return out

    @classmethod
    def of(cls, model: Any) -> GRUWeights:
        """The weights of a torch `CharGRU`, copied to the CPU."""
        return cls(model.config, {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()})

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def _with_bias(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """(out, in) weight and (out,) bias -> (in + 1, out): x_ext @ it is x @ weight.T + bias when x_ext ends in 1."""
    return np.ascontiguousarray(np.concatenate([weight.T, bias[None]]), dtype=np.float32)


class GRUStep:
    """One character of `batch` samples per call, into buffers allocated once: x (batch,) ids -> logits (batch, V).

    The state lives in `self.ext[i][:, :hidden]` for layer i (the last column is the constant 1 for the biases);
    `state()` returns it as the model carries it, (layers, batch, hidden).
    """

    def __init__(self, w: GRUWeights, batch: int, state: np.ndarray | None = None) -> None:
        c, H = w.config, w.config.hidden
        self.H, self.layers, self.vocab = H, c.layers, c.vocab_size
        gate = np.ones(3 * H, np.float32)
        gate[: 2 * H] = 0.5  # input side: r and z halved for the tanh form of sigmoid; the candidate as it is
        rec = np.full(3 * H, 0.5, np.float32)  # recurrent side: also the candidate's, which meets 2r, not r
        self.table = (w["embed.weight"] @ w["gru.weight_ih_l0"].T + w["gru.bias_ih_l0"]) * gate
        mats = []
        for i in range(c.layers):
            own = _with_bias(w[f"gru.weight_hh_l{i}"] * rec[:, None], w[f"gru.bias_hh_l{i}"] * rec)
            if i + 1 < c.layers:
                nxt = _with_bias(w[f"gru.weight_ih_l{i + 1}"] * gate[:, None], w[f"gru.bias_ih_l{i + 1}"] * gate)
                mats.append(np.concatenate([nxt, own], 1))  # -> [next layer's input now | own, next character]
            else:
                mats.append(np.concatenate([own, _with_bias(w["head.weight"], w["head.bias"])], 1))
        self.mats = [np.ascontiguousarray(m) for m in mats]
        self.ext = [np.ones((batch, H + 1), np.float32) for _ in range(c.layers)]
        self.out = [np.empty((batch, m.shape[1]), np.float32) for m in self.mats]
        self.gi0 = np.empty((batch, 3 * H), np.float32)
        self.rz = np.empty((batch, 2 * H), np.float32)
        self.n = np.empty((batch, H), np.float32)
        self.set_state(np.zeros((c.layers, batch, H), np.float32) if state is None else state)
        self._one = batch == 1  # one sample: work on 1-D views, which NumPy runs fastest

    def set_state(self, state: np.ndarray) -> None:
        """Start from `state` (layers, batch, hidden), as the model carries it."""
        for ext, s, m, out in zip(self.ext, state, self.mats, self.out, strict=True):
            ext[:, : self.H] = s
            np.dot(ext, m, out=out)  # the recurrent projection the first step reads

    def state(self) -> np.ndarray:
        return np.stack([ext[:, : self.H] for ext in self.ext])

    def __call__(self, x: Any) -> np.ndarray:
        H, one = self.H, self._one
        gi = self.table[int(x[0])] if one else np.take(self.table, x, axis=0, out=self.gi0)
        out = self.out
        for i, ext in enumerate(self.ext):
            # the recurrent projection was computed at the previous character: after the input one for layers
            # below the top, before the head's logits for the top
            top = i + 1 == self.layers
            gh = out[i][..., : 3 * H] if top else out[i][..., 3 * H :]
            if one:
                self._cell(gi, gh[0], ext[0])
                np.dot(ext[0], self.mats[i], out=out[i][0])
            else:
                self._cell(gi, gh, ext)
                np.dot(ext, self.mats[i], out=out[i])
            gi = out[i][..., : 3 * H] if not top else None
            if gi is not None and one:
                gi = gi[0]
        return out[-1][..., 3 * H :]

    def _cell(self, gi: np.ndarray, gh: np.ndarray, ext: np.ndarray) -> None:
        """One GRU layer in place: ext[..., :H] <- h' from gi, gh (both pre-scaled, biases included)."""
        H = self.H
        rz, n = (self.rz[0], self.n[0]) if self._one else (self.rz, self.n)
        h = ext[..., :H]
        np.add(gi[..., : 2 * H], gh[..., : 2 * H], out=rz)
        np.tanh(rz, out=rz)
        rz += 1.0  # 2r, 2z
        np.multiply(rz[..., :H], gh[..., 2 * H :], out=n)  # r * (W_hn h + b_hn), the 1/2 folded into W_hn
        n += gi[..., 2 * H :]
        np.tanh(n, out=n)  # the candidate
        h -= n  # h' = n + z * (h - n)
        h *= rz[..., H:]
        h *= 0.5
        h += n
