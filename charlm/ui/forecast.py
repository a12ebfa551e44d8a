"""What `charlm forecast` shows on stderr: the live training display (charlm's own, with the forecaster's
figures), and the closing lines. stdout is left to the forecast."""

from __future__ import annotations

from typing import Any

from charlm.config import format_duration
from charlm.ui.console import say, shell_word
from charlm.ui.progress import TrainDisplay


class ForecastDisplay(TrainDisplay):
    """TrainDisplay for a forecaster: its loss is the mean negative log-likelihood (or pinball loss) per step."""

    curve_names = ("train loss", "val loss")
    loss_unit = 1.0

    def stats_line(self, info: dict[str, Any]) -> str:
        val = f"val {self.best:.4f}" if self.best is not None else "val -"
        return (
            f"step {info['step']} | loss {info['loss']:.4f} | best {val} | "
            f"{format_duration(info['elapsed'])} elapsed"
        )

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if self.quiet and kind not in ("warn",):
            return
        if kind == "start":
            self.log(
                f"training the forecaster: {info['params']:,} parameters"
                + (f", resuming at step {info['step']}" if info["step"] else "")
            )
        elif kind == "eval":
            self.val_curve.append(info["val_loss"])
            if info["best"]:
                self.best = info["val_loss"]
            if self._progress is not None and self._last_step is not None:
                self._progress.update(self._task, stats=self.stats_line(self._last_step))
        elif kind == "done":
            self._done(info["result"])
        elif kind in ("step", "note", "warn"):
            super().__call__(kind, info)

    def _done(self, result: Any) -> None:
        if result.stopped_by == "already_done":
            self.log(f"{result.run} already trained {result.step} steps; raise --max-steps or --max-time to go on")
            return
        best = f"{result.best_val:.4f}" if result.best_val == result.best_val else "-"
        how = {"early_stop": "validation stopped improving", "max_time": "time budget spent",
               "max_steps": "step budget spent"}.get(result.stopped_by, f"stopped by {result.stopped_by}")  # fmt: skip
        self.log(f"trained {result.step} steps in {result.elapsed:.1f}s ({how}); best validation loss {best}")
        if result.interrupted:
            say(f"continue with: charlm forecast --resume --out {shell_word(result.run)}")


def describe_forecaster(ck: Any) -> dict[str, Any]:
    """What `charlm info` says about a forecaster's checkpoint (a plain dict, for --json)."""
    from charlm.series.model import ForecasterConfig, GRUForecaster, count_params

    meta = ck.meta
    cfg = ForecasterConfig.from_dict(meta["model"])
    series = meta["series"]
    values = series.get("values") or []
    times = series.get("timestamps")
    return {
        "kind": "forecaster",
        "checkpoint": str(ck.path),
        "model": {**cfg.to_dict(), "parameters": count_params(GRUForecaster(cfg))},
        "step": ck.step,
        "elapsed_seconds": meta.get("elapsed"),
        "val_loss": meta.get("metrics", {}).get("val_loss"),
        "training": meta.get("train", {}),
        "series": {
            "name": series.get("name"),
            "source": series.get("source"),
            "values": len(values),
            "first": times[0] if times else None,
            "last": times[-1] if times else None,
            "step": series.get("step"),
            "filled": len(series.get("filled") or []),
            "min": min(values) if values else None,
            "max": max(values) if values else None,
        },
        "charlm_version": meta.get("charlm_version"),
    }


def render_forecaster(d: dict[str, Any]) -> str:
    m, s, t = d["model"], d["series"], d["training"]
    span = f", {s['first']} to {s['last']} by {s['step'] or 'irregular steps'}" if s["first"] else ""
    val = f"{d['val_loss']:.4f}" if d["val_loss"] is not None else "-"
    extra = [f"{m['recent']} recent changes", f"{m['seasons_back']} season(s) back"]
    if m["calendar"]:
        extra.append("calendar")
    return "\n".join(
        [
            f"checkpoint      {d['checkpoint']}",
            f"forecaster      nn.GRU, {m['layers']} layer(s) x {m['hidden']} hidden, {m['likelihood']} likelihood, "
            f"features: {', '.join(extra)}",
            f"parameters      {m['parameters']:,}",
            f"series          {s['name']} from {s['source'] or '-'}: {s['values']:,} values{span}"
            + (f" ({s['filled']} filled)" if s["filled"] else ""),
            f"season          {m['season']}; {'log' if m['log'] else 'linear'} scale, changes divided by "
            f"{m['scale']:.4g}",
            f"horizon         {t.get('horizon')}",
            f"steps trained   {d['step']:,} ({d['elapsed_seconds'] or 0:.1f}s); best validation loss {val} "
            f"on the last {t.get('val_steps')} values",
        ]
    )
