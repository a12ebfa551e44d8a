"""The GRU language model's one-character step in NumPy: what sampling on a CPU runs.

At one character per step the work is a few matrix-vector products and a couple of dozen element-wise
operations on vectors of a few hundred numbers, so the cost is the time each operation takes to start, not
arithmetic. NumPy starts one in about 0.4 us, PyTorch in 3-5 us; NumPy's matrix-vector product (OpenBLAS)
was also faster than PyTorch's (MKL) on the AMD EPYC measured. NumPy also loads in a tenth of the time
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

_ONE, _HALF = np.ones((), np.float32), np.full((), 0.5, np.float32)


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


Prescaled = tuple[np.ndarray, np.ndarray, list[np.ndarray]]


def prescaled(w: GRUWeights) -> Prescaled:
    """The first layer's input table (its r and z part, its candidate part) and one matrix per layer: [the next
    layer's input projection | this layer's recurrent projection], the top's [recurrent projection | head],
    each (hidden + 1, outputs) with its bias as the last row, all scaled as the module's docstring says."""
    c, H = w.config, w.config.hidden
    gate = np.ones(3 * H, np.float32)
    gate[: 2 * H] = 0.5  # input side: r and z halved for the tanh form of sigmoid; the candidate as it is
    rec = np.full(3 * H, 0.5, np.float32)  # recurrent side: also the candidate's, which meets 2r, not r
    table = (w["embed.weight"] @ w["gru.weight_ih_l0"].T + w["gru.bias_ih_l0"]) * gate
    mats = []
    for i in range(c.layers):
        own = _with_bias(w[f"gru.weight_hh_l{i}"] * rec[:, None], w[f"gru.bias_hh_l{i}"] * rec)
        if i + 1 < c.layers:
            nxt = _with_bias(w[f"gru.weight_ih_l{i + 1}"] * gate[:, None], w[f"gru.bias_ih_l{i + 1}"] * gate)
            mats.append(np.concatenate([nxt, own], 1))
        else:
            mats.append(np.concatenate([own, _with_bias(w["head.weight"], w["head.bias"])], 1))
    parts = table[:, : 2 * H], table[:, 2 * H :]
    return *(np.ascontiguousarray(a, dtype=np.float32) for a in parts), [np.ascontiguousarray(m) for m in mats]


class GRUStep:
    """One character of `batch` samples per call, into buffers allocated once: x (batch,) ids -> logits (batch, V).

    Every view the step works on is made once, here: at a few hundred numbers per operation, making a view
    costs about half as much as the operation itself. With one sample the views are 1-D, which NumPy runs
    fastest. `state()` returns the state as the model carries it, (layers, batch, hidden).
    """

    def __init__(
        self, w: GRUWeights, batch: int, state: np.ndarray | None = None, pre: Prescaled | None = None
    ) -> None:
        """`pre`: what `prescaled(w)` returns, when the caller keeps it for many steps of different sizes."""
        c, H = w.config, w.config.hidden
        self.H, self.one = H, batch == 1
        self.table_rz, self.table_n, self.mats = pre or prescaled(w)
        self.ext = [np.ones((batch, H + 1), np.float32) for _ in range(c.layers)]  # [h, 1]: the 1 meets the biases
        self.out = [np.empty((batch, m.shape[1]), np.float32) for m in self.mats]
        self.rows_rz, self.rows_n = np.empty((batch, 2 * H), np.float32), np.empty((batch, H), np.float32)
        self.plan = [self._views(i) for i in range(c.layers)]
        self.logits = self.out[-1][:, 3 * H :]
        self.set_state(np.zeros((c.layers, batch, H), np.float32) if state is None else state)

    def _v(self, a: np.ndarray) -> np.ndarray:
        return a[0] if self.one else a

    def _views(self, i: int) -> tuple[np.ndarray, ...]:
        """What layer i reads and writes: its recurrent projection (r and z part, candidate part), scratch for
        the gates and candidate, its state, its product's input, matrix and output, and the next layer's input
        projection (r and z part, candidate part)."""
        H, out, top = self.H, self.out[i], i + 1 == len(self.mats)
        gh = out[:, : 3 * H] if top else out[:, 3 * H :]
        rz, n = np.empty((out.shape[0], 2 * H), np.float32), np.empty((out.shape[0], H), np.float32)
        nxt = (out[:, : 2 * H], out[:, 2 * H : 3 * H]) if not top else (out, out)  # the top's is never read
        views = [gh[:, : 2 * H], gh[:, 2 * H :], rz, rz[:, :H], rz[:, H:], n, self.ext[i][:, :H], self.ext[i], *nxt]
        v = [self._v(a) for a in views]
        return (*v[:8], self.mats[i], self._v(out), *v[8:])

    def set_state(self, state: np.ndarray) -> None:
        """Start from `state` (layers, batch, hidden), as the model carries it."""
        for ext, s, m, out in zip(self.ext, state, self.mats, self.out, strict=True):
            ext[:, : self.H] = s
            np.dot(ext, m, out=out)  # the recurrent projection the first step reads

    def state(self) -> np.ndarray:
        return np.stack([ext[:, : self.H] for ext in self.ext])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # every operation is a ufunc call into a buffer, its constants 0-d arrays: `h *= 0.5` costs twice
        # `multiply(h, HALF, out=h)`, converting the Python float each time
        add, sub, mul, tanh, dot, one, half = np.add, np.subtract, np.multiply, np.tanh, np.dot, _ONE, _HALF
        if self.one:
            gi_rz, gi_n = self.table_rz[x[0]], self.table_n[x[0]]
        else:
            gi_rz, gi_n = np.take(self.table_rz, x, 0, out=self.rows_rz), np.take(self.table_n, x, 0, out=self.rows_n)
        # per layer: the recurrent projection was computed at the previous character (the weights are
        # pre-scaled: see the module's docstring), and one product on the new state gives the next layer's
        # input projection and this layer's recurrent projection for the next character
        for gh_rz, gh_n, rz, r2, z2, n, h, ext, mat, out, nxt_rz, nxt_n in self.plan:
            add(gi_rz, gh_rz, out=rz)
            tanh(rz, out=rz)
            add(rz, one, out=rz)  # 2r, 2z
            mul(r2, gh_n, out=n)  # r * (W_hn h + b_hn), its 1/2 folded into W_hn
            add(n, gi_n, out=n)
            tanh(n, out=n)  # the candidate
            sub(h, n, out=h)  # h' = n + z * (h - n)
            mul(h, z2, out=h)
            mul(h, half, out=h)
            add(h, n, out=h)
            dot(ext, mat, out=out)
            gi_rz, gi_n = nxt_rz, nxt_n
        return self.logits
