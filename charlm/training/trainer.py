"""Training: stateful truncated BPTT with AdamW, warmup, a stable learning rate, then a decay to
zero over the last 40% of the budget (or cosine or linear), and gradient clipping.

`Trainer` is the same on one process and on every rank of a torchrun job. It knows its rank (RankInfo) and
calls the few hooks of charlm.training.distributed, which do nothing in a process of its own: the model runs
under DDP, each rank reads its block of the streams, the loss, the clock and a stop signal are agreed on by
all ranks, and the hidden state and RNG states are gathered for each checkpoint. Rank 0 alone validates (the
others receive its figure), reports, writes metrics.jsonl and writes checkpoints; every rank takes the same
collective steps in the same order, including a roll-back.

It reports through one callback (charlm.training.types) and prints nothing itself, so it can be driven from the
CLI, a test or a notebook.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from charlm import checkpoint as ckpt_io
from charlm.config import ModelConfig, TrainConfig
from charlm.data.streams import TokenStreams
from charlm.device import pick_device, pick_precision
from charlm.errors import CharlmError, param
from charlm.inference.evaluate import score_ids
from charlm.model import CharLM, lm_loss
from charlm.training import auto as auto_rule
from charlm.training import distributed, state
from charlm.training.distributed import RankInfo
from charlm.training.schedule import Plateau, get_lr
from charlm.training.step import backward, make_ema, make_optimizer
from charlm.training.types import OnEvent, TrainData, TrainResult, _silent, warn

VAL_MAX_CHARS = 2_000_000  # validation reads the first this many held-out characters
MAX_BAD_STEPS = 5  # consecutive non-finite steps before rolling back to the last checkpoint
TRAINED, EMA_COUNT = "trained.", "ema.n_averaged"  # with --ema: the weights being trained, in the state file
__all__ = ["OnEvent", "TrainData", "TrainResult", "Trainer", "warn"]


class Trainer:
    clock = staticmethod(time.perf_counter)  # what elapsed time and step times are read from (a test scripts it)

    def __init__(
        self,
        run: Path,
        model_cfg: ModelConfig,
        cfg: TrainConfig,
        data: TrainData,
        on_event: OnEvent | None = None,
        resume_from: ckpt_io.Checkpoint | None = None,
        init_weights: dict[str, torch.Tensor] | None = None,
        rank: RankInfo | None = None,
    ) -> None:
        self.run, self.cfg, self.data = run, cfg, data
        self.rank = rank or RankInfo()
        self.emit: OnEvent = on_event if on_event is not None and self.rank.is_main else _silent
        self.device = pick_device(cfg.device)
        self.autocast = pick_precision(cfg.precision, self.device)
        torch.manual_seed(cfg.seed)
        self.model = CharLM(model_cfg).to(self.device)
        if init_weights is not None:
            self.model.load_state_dict(init_weights)
        self.opt = make_optimizer(self.model, cfg.lr, cfg.weight_decay, self.device)
        # with --ema, the average of the weights is what is validated and saved as the model
        self.ema = make_ema(self.model, cfg.ema) if cfg.ema else None
        self.params = list(self.model.parameters())
        self.streams = TokenStreams(data.train_ids, cfg.batch_size, cfg.seq_len, self.rank.rows(cfg.batch_size))
        self.hidden: torch.Tensor | None = None
        self.step, self.elapsed, self.lr_scale = 0, 0.0, 1.0
        self.best_val_bpc: float | None = None
        self.stop_requested: str | None = None  # set by a signal handler (or a test) to stop cleanly
        self.plateau = Plateau(patience=max(cfg.patience, 1))  # cuts the learning rate, then stops early
        self.early_stop: str | None = None  # why the plateau rule ended the run
        self.auto: dict[str, Any] | None = None  # what automatic configuration chose, kept in every checkpoint
        self.timed_steps, self.step_seconds = 0, 0.0  # this session's steps, timed for the re-plan
        if resume_from is not None:
            self._restore(resume_from)
        else:
            self._seed_rank()  # a new run: every rank has just seeded the same generator
        self.net = distributed.wrap(self.model, self.device)  # what the step runs: the model, or DDP around it

    # ------------------------------------------------------------ state in and out of checkpoints

    def _meta(self, metrics: dict[str, Any]) -> dict[str, Any]:
        groups = self.opt.state_dict()["param_groups"]
        meta = {
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
            "plateau": self.plateau.to_dict(),
        }
        if self.auto is not None:
            meta["auto"] = self.auto
        if self.rank.launched:
            meta["distributed"] = {"world_size": self.rank.world_size}
        return meta

    def _restore(self, ck: ckpt_io.Checkpoint) -> None:
        t = ckpt_io.read_tensors(ck, ckpt_io.STATE)
        hidden_shape = (self.model.state_layers, self.cfg.batch_size, self.model.config.hidden)
        trained = None if self.ema is None else {TRAINED + k: v for k, v in self.model.state_dict().items()}
        state.check_state(t, self.opt, ck, hidden_shape, trained)  # before any of it reaches the model or optimizer
        if self.ema is None:
            ckpt_io.load_weights(ck, self.model)
        else:  # the saved model is the average; the weights being trained are in the state file
            ckpt_io.load_weights(ck, self.ema.module)
            self.model.load_state_dict({k[len(TRAINED) :]: v for k, v in t.items() if k.startswith(TRAINED)})
            self.ema.n_averaged.fill_(int(t[EMA_COUNT]))
        state.load_optimizer(self.opt, t, ck)
        meta = ck.meta
        rows = self.rank.rows(self.cfg.batch_size)  # this rank's rows of the full state (all of them, alone)
        self.hidden = t["hidden"].to(self.device)[:, rows].contiguous() if "hidden" in t else None
        self.step, self.elapsed = int(meta["step"]), float(meta.get("elapsed", 0.0))
        self.lr_scale = float(meta.get("lr_scale", 1.0))
        if "plateau" in meta:
            self.plateau = Plateau.from_dict(meta["plateau"])
            self.plateau.patience = max(self.cfg.patience, 1)  # --patience may change on resume
        self.auto = meta.get("auto")
        self.best_val_bpc = meta.get("best_val_bpc")
        self.streams.offset = state.stream_offset(meta, self.streams.stream_len, self.cfg.seq_len, ck)
        saved = int(meta.get("distributed", {}).get("world_size", 1))  # how many processes wrote it
        if not state.restore_rng(t, self.device, self.rank, saved):
            self._seed_rank()
            if self.model.config.dropout:
                what = f"resuming a {saved}-process run on {self.rank.world_size}: dropout masks will differ from "
                self.emit("warn", {"message": what + "an uninterrupted run (the data and state continue exactly)"})

    def _seed_rank(self) -> None:
        """Ranks other than 0 draw their own dropout masks (rank 0 keeps the stream a single process would use)."""
        if self.rank.rank:
            torch.manual_seed(self.cfg.seed + 1_000_003 * self.rank.rank + self.step)

    def save(self, metrics: dict[str, Any]) -> Path:
        """Write a checkpoint (every rank calls this: the state is gathered from all; rank 0 writes).
        A "save" event is emitted only once the checkpoint is in place."""
        tensors = state.state_tensors(self.opt, self.hidden, self.device, self.rank)
        if not self.rank.is_main:
            return ckpt_io.step_dir(self.run, self.step)
        weights = self.model.state_dict()
        if self.ema is not None:
            tensors.update({TRAINED + k: v for k, v in weights.items()})
            tensors[EMA_COUNT] = self.ema.n_averaged.detach().clone()
            weights = self.ema.module.state_dict()
        path = state.save(self.run, self._meta(metrics), weights, tensors)
        ckpt_io.prune(self.run, self.cfg.keep)
        self.emit("save", {"step": self.step, "path": path})
        return path

    def weights_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    # ------------------------------------------------------------ the loop

    @property
    def saved_model(self) -> CharLM:
        """What is validated and saved as the model: the average of the weights with --ema, else the weights."""
        return self.model if self.ema is None else self.ema.module  # type: ignore[return-value]

    def progress(self) -> float:
        p = 0.0
        if self.cfg.max_steps:
            p = max(p, self.step / self.cfg.max_steps)
        if self.cfg.max_time:
            p = max(p, self.elapsed / self.cfg.max_time)
        return p

    def validate(self) -> float | None:
        """Bits/char on the validation text: rank 0 scores it with a single process's code; all ranks get it."""
        bpc = None
        if self.rank.is_main and len(self.data.val_ids) >= 2:
            # at most VAL_MAX_CHARS, so validating a huge corpus costs bounded time and memory
            bpc = score_ids(self.saved_model, self.data.val_ids[:VAL_MAX_CHARS], self.device).bits_per_char
        return distributed.broadcast_object(bpc)

    def train_step(self) -> tuple[float, bool]:
        """One optimizer step; returns (loss in nats/char over the whole batch, whether it was finite and applied)."""
        batch = self.streams.next_batch()
        if batch.reset:
            self.hidden = None
        x, y = batch.x.to(self.device, non_blocking=True), batch.y.to(self.device, non_blocking=True)
        for g in self.opt.param_groups:
            g["lr"] = get_lr(self.step, self.progress(), self.cfg, self.lr_scale)
        loss, norm, hidden = backward(
            self.net, self.opt, self.params, x, y, self.hidden, self.autocast, self.cfg.grad_clip, lm_loss
        )
        value = distributed.mean(loss.item())  # each rank's loss is over its own rows
        if not (math.isfinite(value) and torch.isfinite(norm)):  # the same on every rank: gradients are averaged
            self.hidden = None  # do not carry a state that may hold NaN
            return value, False
        self.opt.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.hidden = hidden.detach()  # carry the state, but not the gradient, into the next window
        return value, True

    def done_reason(self) -> str | None:
        self.elapsed, self.stop_requested = distributed.agree(self.elapsed, self.stop_requested)
        if self.stop_requested:
            return self.stop_requested
        if self.early_stop is not None:
            return "early_stop"
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
        t0, base_elapsed, base_step = self.clock(), self.elapsed, self.step
        last, bad, loss_ema = None, 0, None
        if not ckpt_io.list_checkpoints(self.run):  # from now on a kill always leaves a checkpoint to resume
            last = self._checkpoint(None, evaluate=False)
        while (reason := self.done_reason()) is None:
            if auto_rule.replan_due(self.auto, self.cfg, self.elapsed, self.timed_steps):
                self._replan()  # the same on every rank: elapsed was just agreed, the step is shared
                if (reason := self.done_reason()) is not None:
                    break
            started = self.clock()
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
            self.elapsed = base_elapsed + self.clock() - t0
            self._report_step(loss_ema, base_step, base_elapsed)
            if self.step - base_step > auto_rule.REPLAN_SKIP:  # the step and its display; not validation
                self.timed_steps, self.step_seconds = self.timed_steps + 1, self.step_seconds + self.clock() - started
            at_eval = self.step % self.cfg.eval_every == 0
            at_save = self.cfg.save_every is not None and self.step % self.cfg.save_every == 0
            if (at_eval or at_save) and self.done_reason() is None:
                last = self._checkpoint(loss_ema, evaluate=at_eval) or last
        if last is None or ckpt_io.step_dir(self.run, self.step) != last:
            last = self._checkpoint(loss_ema, evaluate=reason in ("max_steps", "max_time", "early_stop")) or last
        return self._result(reason, last)

    def _report_step(self, loss_ema: float, base_step: int, base_elapsed: float) -> None:
        """The "step" event; its rate counts only this session's steps (not those before a resume)."""
        rate = (self.step - base_step) * self.streams.chars_per_batch / max(self.elapsed - base_elapsed, 1e-9)
        info = {
            "step": self.step,
            "loss": loss_ema,
            "chars_per_sec": rate,
            "elapsed": self.elapsed,
            "progress": self.progress(),
            "lr": self.opt.param_groups[0]["lr"],
        }
        self.emit("step", info)

    def _checkpoint(self, train_loss: float | None, evaluate: bool) -> Path | None:
        """Validate (if asked) and save. Weights that are no longer finite are never saved: the run rolls back."""
        if not self.weights_finite():  # the same on every rank: DDP keeps the weights equal
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
                self._after_validation(metrics["val_loss"])
            if self.rank.is_main:
                ckpt_io.append_metrics(self.run, metrics)
            # the model and tokenizer let a display show a sample of the text as it improves
            self.emit("eval", {**metrics, "model": self.saved_model, "tokenizer": self.data.tokenizer})
        return self.save(metrics)

    def _replan(self) -> None:
        """Plan again from the speed this run's steps reached (charlm.training.auto.replan_run): dropout, the
        step cap the schedule follows and the validation interval may change; the model's shape cannot."""
        assert self.auto is not None
        speed = distributed.mean(self.timed_steps * self.streams.chars_per_batch / max(self.step_seconds, 1e-9))
        changes, self.auto = auto_rule.replan_run(
            self.auto, self.model.config, self.cfg, self.data.info, speed, self.step, self.device.type
        )
        if "dropout" in changes:
            set_dropout(self.model, changes.pop("dropout"))
        for k, v in changes.items():
            setattr(self.cfg, k, v)
        self.emit("note", {"message": self.auto["replanned"]["reason"]})

    def _after_validation(self, loss: float) -> None:
        """The plateau rule (charlm.training.schedule): lower the learning rate, or stop early, and say why.
        Every rank gets the same validation figure, so every rank takes the same decision."""
        if self.cfg.patience < 1:
            return
        decision = self.plateau.update(loss, self.step)
        if decision.action == "decay":
            self.lr_scale *= self.plateau.factor
        elif decision.action == "stop":
            self.early_stop = decision.reason
        if decision.action != "continue":
            self.emit("note", {"message": f"step {self.step}: {decision.reason}"})

    def _roll_back(self) -> None:
        ckpts = ckpt_io.list_checkpoints(self.run)
        if not ckpts:
            raise CharlmError(f"training diverged (the loss is not finite) before any checkpoint; lower {param('lr')}")
        scale = self.lr_scale / 2
        if scale < 1e-3:
            raise CharlmError(
                f"training keeps diverging (the loss is not finite) even at 1/1000 of {param('lr')}; stopping"
            )
        self._restore(ckpts[-1])
        self.lr_scale = scale
        self.emit(
            "warn",
            {"message": f"rolled back to step {self.step}; learning rate halved to {self.cfg.lr * self.lr_scale:.2e}"},
        )

    def _result(self, reason: str, last: Path | None) -> TrainResult:
        best = ckpt_io.best_of(ckpt_io.list_checkpoints(self.run))
        rate = self.streams.chars_per_batch * self.step / self.elapsed if self.elapsed else 0.0
        path = best.path if best else None
        result = TrainResult(
            self.run, self.step, path, self.best_val_bpc, last, rate, self.elapsed, reason, self.early_stop
        )
        self.emit("done", {"result": result})
        return result


def set_dropout(model: CharLM, p: float) -> None:
    """Change a model's dropout in place (between recurrent layers and before the head), and its config with it,
    so that the checkpoints record the value in use."""
    model.config.dropout = p
    model.drop.p = p
    if model.config.layers > 1:
        model.recurrent.dropout = p
