"""Where and in what arithmetic training runs: the device, and the autocast precision of the training step."""

from __future__ import annotations

import torch

from charlm.errors import CharlmError, param


def pick_device(name: str) -> torch.device:
    """The device --device names; "auto" takes a CUDA GPU, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CharlmError(
            f"{param('device')} cuda: no CUDA GPU is available here (use {param('device')} cpu or auto)"
        )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CharlmError(
            f"{param('device')} mps: Apple's MPS backend is not available here (use {param('device')} cpu or auto)"
        )
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
        raise CharlmError(
            f"{param('precision')} bf16: this {device.type} has no native bfloat16 arithmetic (use fp32 or auto)"
        )
    return torch.bfloat16 if native else None
