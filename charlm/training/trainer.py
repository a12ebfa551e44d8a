"""Training: stateful truncated BPTT with AdamW, warmup then cosine decay, and gradient clipping.

`Trainer` reports through one callback, ``on_event(kind, info)``, and prints nothing itself, so it can be
driven from the CLI, a test or a notebook. Kinds: "start", "step", "eval", "save", "warn", "done".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig, TrainConfig
from charlm.data.corpus import TokenStreams
from charlm.errors import CharlmError, CheckpointError
from charlm.inference.evaluate import score_ids
from charlm.model import CharGRU, lm_loss
from charlm.tokenizer import CharTokenizer

OnEvent = Callable[[str, dict[str, Any]], None]
VAL_MAX_CHARS = 2_000_000  # validation reads the first this many held-out characters
MAX_BAD_STEPS = 5  # consecutive non-finite steps before rolling back to the last checkpoint


@dataclass
class TrainData:
    tokenizer: CharTokenizer
    train_ids: np.ndarray
    val_ids: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)  # sources, sizes: saved in every checkpoint


@dataclass
class TrainResult:
    run: Path
    step: int
    best: Path | None
    best_val_bpc: float | None
    last: Path | None
    chars_per_sec: float
    elapsed: float
    stopped_by: str  # "max_steps", "max_time", "already_done", or what interrupted it ("SIGINT", "SIGTERM")

    @property
    def interrupted(self) -> bool:
        return self.stopped_by not in ("max_steps", "max_time", "already_done")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CharlmError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CharlmError("--device mps: Apple's MPS backend is not available here (use --device cpu or auto)")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The dtype autocast runs the training step's matrix products in, or None for plain fp32.

    "auto" takes bfloat16 only on a CPU that computes it natively (AVX512-BF16 or AMX): there the GRU trained
    1.1-1.3x faster (more for wider models) while the weights, the optimizer state and the loss stay fp32.
    Elsewhere (CUDA included: not measured there) auto means fp32; "bf16" asks for it wherever it is native.
    """
    if name == "fp32":
        return None
    if device.type == "cpu":
        # private but stable helpers (torch >= 2.1); a build without them reports no native bf16
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        native = any(getattr(torch.cpu, f, lambda: False)() for f in checks)
    elif device.type == "cuda":
        native = name == "bf16" and torch.cuda.is_bf16_supported()
    else:
        native = False
    if name == "bf16" and not native:
        raise CharlmError(f"--precision bf16: this {device.type} has no native bfloat16 arithmetic (use fp32 or auto)")
    return torch.bfloat16 if native else None


def get_lr(step: int, progress: float, cfg: TrainConfig, scale: float = 1.0) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay from lr to lr * min_lr_ratio as progress goes 0 -> 1.

    `progress` is the fraction of the budget spent, by steps or by time, whichever is further along. A time
    budget has no step count to decay over, which torch's own schedulers need, hence this small function.
    """
    peak = cfg.lr * scale
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    cos = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return peak * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cos)


def remap_vocab(weights: dict[str, torch.Tensor], old: CharTokenizer, new: CharTokenizer) -> dict[str, torch.Tensor]:
    """Weights for a larger vocabulary: rows of known characters are copied, new characters start fresh."""
    out = dict(weights)
    idx = torch.tensor([old.id_of(c) if c in old else -1 for c in new.chars])
    known = idx >= 0
    for name, std in (("embed.weight", 1.0), ("head.weight", 0.01), ("head.bias", 0.0)):
        w = weights[name]
        fresh = torch.randn((new.vocab_size, *w.shape[1:]), dtype=w.dtype) * std
        fresh[known] = w[idx[known]]
        out[name] = fresh
    return out


class Trainer:
    def __init__(
        self,
        run: Path,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        data: TrainData,
        on_event: OnEvent | None = None,
        resume_from: ckpt_io.Checkpoint | None = None,
        init_weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.run, self.cfg, self.data = run, cfg, data
        self.emit = on_event or (lambda kind, info: None)
        self.device = pick_device(cfg.device)
        self.autocast = pick_precision(cfg.precision, self.device)
        torch.manual_seed(cfg.seed)
        self.model = CharGRU(model_cfg).to(self.device)
        if init_weights is not None:
            self.model.load_state_dict(init_weights)
        self.net: torch.nn.Module = self.model  # what the training step runs: the model, or a wrapper (DDP)
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.lr,
            betas=(0.9, 0.99),
            weight_decay=cfg.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),  # one kernel for all parameters: ~1.6 ms a step less on a CPU
        )
        self.streams = TokenStreams(data.train_ids, cfg.batch_size, cfg.seq_len)
        self.hidden: torch.Tensor | None = None
        self.step, self.elapsed, self.lr_scale = 0, 0.0, 1.0
        self.best_val_bpc: float | None = None
        self.stop_requested: str | None = None  # set by a signal handler (or a test) to stop cleanly
        if resume_from is not None:
            self._restore(resume_from)

    # ------------------------------------------------------------ state in and out of checkpoints

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        t: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            t["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        if self.hidden is not None:
            t["hidden"] = self.hidden
        for i, s in self.opt.state_dict()["state"].items():
            for k, v in s.items():
                t[f"optim.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        return t

    def _meta(self, metrics: dict[str, Any]) -> dict[str, Any]:
        groups = self.opt.state_dict()["param_groups"]
        return {
            "model": self.model.config.to_dict(),
            "train": self.cfg.to_dict(),
            "vocab": self.data.tokenizer.to_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "chars_seen": self.step * self.streams.chars_per_batch,
            "metrics": metrics,
            "best_val_bpc": self.best_val_bpc,
            "data": {**self.data.info, "offset": self.streams.offset},
            "lr_scale": self.lr_scale,
            "optimizer": {"param_groups": groups},
        }

    def _restore(self, ck: ckpt_io.Checkpoint) -> None:
        ckpt_io.load_weights(ck, self.model)
        t = ckpt_io.read_tensors(ck.path, ckpt_io.STATE)
        meta = ck.meta
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in t.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        groups = meta["optimizer"]["param_groups"]
        for g in groups:
            g["betas"] = tuple(g["betas"])
        try:
            self.opt.load_state_dict({"state": state, "param_groups": groups})
        except (ValueError, KeyError) as e:
            raise CharlmError(f"{ck.path / ckpt_io.STATE}: optimizer state does not fit the model ({e})") from None
        torch.set_rng_state(t["rng.cpu"])
        if "rng.cuda" in t and self.device.type == "cuda":
            torch.cuda.set_rng_state(t["rng.cuda"], self.device)
        self.hidden = t["hidden"].to(self.device) if "hidden" in t else None
        self.step, self.elapsed = int(meta["step"]), float(meta.get("elapsed", 0.0))
        self.lr_scale = float(meta.get("lr_scale", 1.0))
        self.best_val_bpc = meta.get("best_val_bpc")
        self.streams.offset = int(meta["data"]["offset"])

    def save(self, metrics: dict[str, Any]) -> Path:
        """Write a checkpoint; if that fails (disk full, folder not writable), stop with an error that says
        which checkpoint is the last good one. A "save" event is emitted only once the checkpoint is in place."""
        try:
            path = ckpt_io.save(self.run, self._meta(metrics), self.model.state_dict(), self._state_tensors())
        except CheckpointError as e:
            ckpts = ckpt_io.list_checkpoints(self.run)
            last = f"the last good checkpoint is {ckpts[-1].path}" if ckpts else "no checkpoint was saved before"
            raise CheckpointError(
                f"{e}; {last} (make room, then continue with: charlm train --resume --out {self.run})"
            ) from None
        ckpt_io.prune(self.run, self.cfg.keep)
        self.emit("save", {"step": self.step, "path": path})
        return path

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    # ------------------------------------------------------------ the loop

    def progress(self) -> float:
        p = 0.0
        if self.cfg.max_steps:
            p = max(p, self.step / self.cfg.max_steps)
        if self.cfg.max_time:
            p = max(p, self.elapsed / self.cfg.max_time)
        return p

    def validate(self) -> float | None:
        if len(self.data.val_ids) < 2:
            return None
        # at most VAL_MAX_CHARS, so validating a huge corpus costs bounded time and memory
        return score_ids(self.model, self.data.val_ids[:VAL_MAX_CHARS], self.device).bits_per_char

    def train_step(self) -> tuple[float, bool]:
        """One optimizer step; returns (loss in nats/char, whether it was finite and applied)."""
        batch = self.streams.next_batch()
        if batch.reset:
            self.hidden = None
        x, y = batch.x.to(self.device, non_blocking=True), batch.y.to(self.device, non_blocking=True)
        for g in self.opt.param_groups:
            g["lr"] = get_lr(self.step, self.progress(), self.cfg, self.lr_scale)
        with torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            logits, hidden = self.net(x, self.hidden)
        loss = lm_loss(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        value = loss.item()
        if not (math.isfinite(value) and torch.isfinite(norm)):
            self.hidden = None  # do not carry a state that may hold NaN
            return value, False
        self.opt.step()
        self.hidden = hidden.detach()  # carry the state, but not the gradient, into the next window
        return value, True

    def done_reason(self) -> str | None:
        if self.stop_requested:
            return self.stop_requested
        if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps:
            return "max_steps"
        if self.cfg.max_time is not None and self.elapsed >= self.cfg.max_time:
            return "max_time"
        return None

    def fit(self) -> TrainResult:
        if self.done_reason() is not None:
            return self._result("already_done", None)
        self.emit(
            "start",
            {
                "step": self.step,
                "device": str(self.device),
                "precision": "bf16" if self.autocast is not None else "fp32",
                "params": self.model.num_params(),
                "chars_per_batch": self.streams.chars_per_batch,
            },
        )
        t0, base_elapsed, base_step = time.perf_counter(), self.elapsed, self.step
        last, bad, loss_ema = None, 0, None
        if not ckpt_io.list_checkpoints(self.run):  # from now on a kill always leaves a checkpoint to resume
            last = self._checkpoint(None, evaluate=False)
        while (reason := self.done_reason()) is None:
            loss, ok = self.train_step()
            if not ok:
                bad += 1
                self.emit("warn", {"message": f"step {self.step + 1}: loss or gradient is not finite; step skipped"})
                if bad >= MAX_BAD_STEPS:
                    self._roll_back()
                    bad = 0
                continue
            bad, self.step = 0, self.step + 1
            loss_ema = loss if loss_ema is None else 0.9 * loss_ema + 0.1 * loss
            self.elapsed = base_elapsed + time.perf_counter() - t0
            rate = (self.step - base_step) * self.streams.chars_per_batch / max(self.elapsed - base_elapsed, 1e-9)
            self.emit(
                "step",
                {
                    "step": self.step,
                    "loss": loss_ema,
                    "chars_per_sec": rate,
                    "elapsed": self.elapsed,
                    "progress": self.progress(),
                    "lr": self.opt.param_groups[0]["lr"],
                },
            )
            at_eval = self.step % self.cfg.eval_every == 0
            at_save = self.cfg.save_every is not None and self.step % self.cfg.save_every == 0
            if (at_eval or at_save) and self.done_reason() is None:
                last = self._checkpoint(loss_ema, evaluate=at_eval) or last
        if last is None or ckpt_io.step_dir(self.run, self.step) != last:
            last = self._checkpoint(loss_ema, evaluate=reason in ("max_steps", "max_time")) or last
        return self._result(reason, last)

    def _checkpoint(self, train_loss: float | None, evaluate: bool) -> Path | None:
        """Validate (if asked) and save. Weights that are no longer finite are never saved: the run rolls back."""
        if not self.weights_finite():
            self.emit("warn", {"message": f"step {self.step}: the weights are not finite; not saving them"})
            self._roll_back()
            return None
        metrics: dict[str, Any] = {
            "step": self.step,
            "train_loss": train_loss,
            "elapsed": round(self.elapsed, 3),
            "lr": self.opt.param_groups[0]["lr"],
        }
        if evaluate:
            val = self.validate()
            if val is not None and math.isfinite(val):
                metrics["val_bpc"] = val
                metrics["val_loss"] = val * math.log(2)
                if self.best_val_bpc is None or val < self.best_val_bpc:
                    self.best_val_bpc = val
            ckpt_io.append_metrics(self.run, metrics)
            # the model and tokenizer let a display show a sample of the text as it improves
            self.emit("eval", {**metrics, "model": self.model, "tokenizer": self.data.tokenizer})
        return self.save(metrics)

    def _roll_back(self) -> None:
        ckpts = ckpt_io.list_checkpoints(self.run)
        if not ckpts:
            raise CharlmError("training diverged (the loss is not finite) before any checkpoint; lower --lr")
        scale = self.lr_scale / 2
        if scale < 1e-3:
            raise CharlmError("training keeps diverging (the loss is not finite) even at 1/1000 of --lr; stopping")
        self._restore(ckpts[-1])
        self.lr_scale = scale
        self.emit(
            "warn",
            {"message": f"rolled back to step {self.step}; learning rate halved to {self.cfg.lr * self.lr_scale:.2e}"},
        )

    def _result(self, reason: str, last: Path | None) -> TrainResult:
        best = ckpt_io.best_of(ckpt_io.list_checkpoints(self.run))
        base = self.streams.chars_per_batch * self.step
        result = TrainResult(
            self.run,
            self.step,
            best.path if best else None,
            self.best_val_bpc,
            last,
            base / self.elapsed if self.elapsed else 0.0,
            self.elapsed,
            reason,
        )
        self.emit("done", {"result": result})
        return result
