"""What `charlm info` says about a checkpoint: a plain dict (for --json) and its text rendering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from charlm import checkpoint as ckpt_io
from charlm.model import CELL_NAMES, count_params
from charlm.tokenizer import describe_char
from charlm.ui.charts import curves, metric_series
from charlm.ui.console import escape_controls


def describe(ck: ckpt_io.Checkpoint, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """What `info` shows; `warn` hears of damaged lines in the run's metrics.jsonl."""
    if ck.kind == "forecaster":
        from charlm.ui.forecast import describe_forecaster

        return describe_forecaster(ck)
    m, t, meta = ck.model_config, ck.train_config, ck.meta
    run = ck.path.parent
    ckpts = ckpt_io.list_checkpoints(run)
    best = ckpt_io.best_of(ckpts)
    return {
        "checkpoint": str(ck.path),
        "model": {**m.to_dict(), "parameters": count_params(m)},
        "vocabulary": "".join(ck.tokenizer.chars),
        "step": ck.step,
        "chars_seen": meta.get("chars_seen"),
        "elapsed_seconds": meta.get("elapsed"),
        "val_bpc": meta.get("metrics", {}).get("val_bpc"),
        "best_val_bpc": best.val_bpc if best is not None and best.val_bpc != float("inf") else None,
        "best_checkpoint": str(best.path) if best else None,
        "latest_checkpoint": str(ckpts[-1].path) if ckpts else None,
        "training": t.to_dict(),
        "data": meta.get("data", {}),
        "metrics": ckpt_io.read_metrics(run, warn),
        "charlm_version": meta.get("charlm_version"),
        "auto": meta.get("auto"),
    }


def render(d: dict[str, Any]) -> str:
    if d.get("kind") == "forecaster":
        from charlm.ui.forecast import render_forecaster

        return render_forecaster(d)
    m, data = d["model"], d["data"]
    vocab = "".join(describe_char(c)[1:-1] if len(describe_char(c)) <= 4 else describe_char(c) for c in d["vocabulary"])
    best = f"{d['best_val_bpc']:.4f}" if d["best_val_bpc"] is not None else "-"
    lines = [
        f"checkpoint      {escape_controls(d['checkpoint'], keep='')}",
        f"model           {CELL_NAMES[m['cell']]}, {m['layers']} layer(s) x {m['hidden']} hidden, "
        f"embedding {m['embed']}, dropout {m['dropout']}",
        f"parameters      {m['parameters']:,}",
        f"vocabulary      {m['vocab_size']} characters: {vocab}",
        f"steps trained   {d['step']:,} ({(d['chars_seen'] or 0):,} characters, {d['elapsed_seconds'] or 0:.0f}s)",
        f"val bits/char   {d['val_bpc'] if d['val_bpc'] is None else format(d['val_bpc'], '.4f')} here, "
        f"best {best} ({escape_controls(str(d['best_checkpoint']), keep='')})",
        f"trained on      {escape_controls(', '.join(data.get('sources', [])), keep='') or '-'} "
        f"({data.get('train_chars', 0):,} training + {data.get('val_chars', 0):,} validation characters)",
    ]
    if d.get("auto"):  # the settings automatic configuration chose, and its reason
        lines += [f"{'chosen' if i == 0 else '':<16}{line}" for i, line in enumerate(d["auto"]["reason"].splitlines())]
        if "replanned" in d["auto"]:  # and what the run's own measured speed changed
            lines.append(f"{'':<16}{d['auto']['replanned']['reason']}")
    curve = curves(metric_series(d["metrics"]), width=40)
    if curve:
        lines.append(f"curve           bits/char at each of {len(d['metrics'])} evaluations, oldest first:")
        lines += [" " * 16 + c for c in curve]
    return "\n".join(lines)
