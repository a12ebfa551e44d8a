"""The `export` command: a model as an ONNX folder (model.onnx, tokenizer.json, charlm.json), fp32 or int8."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charlm.cli.options import Ckpt, Quiet, ReplaceBadBytes, load_model
from charlm.cli.output import print_json
from charlm.ui.console import err_console

OUT_HELP = "The folder to write model.onnx, tokenizer.json and charlm.json into (it must not exist, or be empty)."
FORCE_HELP = "Replace the export files in an existing DIR (nothing else in it is touched)."
INT8_HELP = "Quantize the weights to int8 (onnxruntime's dynamic quantization): about a quarter of the size."
TEXT_HELP = "With --int8: the text to measure the change in bits/char on. [default: text sampled from the model]"


def export(
    checkpoint: Ckpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help=OUT_HELP, show_default=False)] = ...,  # type: ignore[assignment]
    int8: Annotated[bool, typer.Option("--int8", help=INT8_HELP)] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    text: Annotated[Optional[str], typer.Option("--text", metavar="FILE", help=TEXT_HELP, show_default=False)] = None,
    replace_bad_bytes: ReplaceBadBytes = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    quiet: Quiet = False,
) -> None:
    """Export a model as ONNX, its vocabulary inside, for onnxruntime in any language; needs charlm\\[export]."""
    from charlm.data.corpus import read_text
    from charlm.errors import UsageError
    from charlm.onnx_export import MODEL, require_extra

    require_extra()  # what to install, before anything else is looked at
    if text is not None and not int8:
        raise UsageError("--text measures int8's change in bits/char: use it with --int8")
    body = read_text(text, replace_bad_bytes) if text is not None else None
    model = load_model(checkpoint, "cpu", quiet)
    r = model.export(out, int8=int8, force=force, text=body, source=text or "the text")
    if json_out:
        print_json(
            {
                "out": str(r.out),
                "checkpoint": str(model.path),
                "files": r.sizes,
                "weights": r.config["weights"],
                "fp32_bytes": r.fp32_bytes,
                "int8_bytes": r.int8_bytes,
                "max_logit_diff": r.max_logit_diff,
                "bits_per_char": r.bpc or None,
                "measured_on": r.bpc_text or None,
            }
        )
    if quiet:
        return
    err_console.print(
        f"wrote {r.out}/: {MODEL} ({_size(r.sizes[MODEL])}, {r.config['weights']}), tokenizer.json, charlm.json; "
        f"onnxruntime's fp32 logits equal charlm's to {r.max_logit_diff:.1g}",
        soft_wrap=True,
    )
    if r.int8_bytes is not None:
        b = r.bpc
        err_console.print(
            f"int8: {_size(r.int8_bytes)} against {_size(r.fp32_bytes)} in fp32 ({r.int8_bytes / r.fp32_bytes:.0%}); "
            f"bits/char {b['fp32']:.4f} -> {b['int8']:.4f} ({b['int8'] - b['fp32']:+.4f}) on {r.bpc_text}",
            soft_wrap=True,
        )


def _size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"
