"""Mixed precision: ``amp = none | bf16 | fp16`` → autocast context and (fp16) a GradScaler.

bf16 keeps float32's exponent range, so it needs no loss scaling and also works on CPUs (fast
only with native bfloat16). fp16 overflows easily, so it runs with a GradScaler, and only on
CUDA, where it is the fast path of GPUs without bfloat16. Losses, softmax and metrics stay float32.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from marinelife.errors import MarineLifeError

log = logging.getLogger(__name__)
AMP_MODES = ("none", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, device: torch.device) -> None:
    """Refuse precision modes the device cannot run, with the fix; warn when one will be slow."""
    if amp not in AMP_MODES:
        raise MarineLifeError(f"--amp {amp!r} is not one of {', '.join(AMP_MODES)}")
    if amp == "fp16" and device.type != "cuda":
        raise MarineLifeError(
            f"--amp fp16 needs a CUDA GPU (this run is on {device.type})",
            fix="use --amp bf16 on CPU, or --amp none",
        )
    if amp == "bf16" and device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise MarineLifeError(
                "--amp bf16 requested but this GPU has no bfloat16 support",
                fix="use --amp fp16 (loss-scaled) or --amp none",
            )
        if not _cuda_bf16_native():
            log.warning("this GPU only emulates bfloat16 (slow): --amp fp16 is its fast path")
    if amp == "bf16" and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("bf16 requested but this CPU has no native bfloat16: expect it to be slower")


def _cuda_bf16_native() -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 had no emulation and no such argument
        return torch.cuda.is_bf16_supported()


def autocast(device: torch.device, amp: str):
    """The forward-pass context for ``amp`` (a no-op context for ``none``)."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[amp])


def make_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 (gradients would underflow without it); None otherwise."""
    if amp != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
