"""Frozen forward passes through ONNX Runtime: cache builds and evaluation on a CPU.

Building a cache runs the frozen part of the network over every image and augmented view once:
most of a cached recipe's time on a CPU; evaluating a split (the test read after training, the
rejection calibration on val, ``evaluate``) runs the whole network over every image. ONNX Runtime
runs these depthwise-heavy CNNs several times faster than eager PyTorch there
(tf_efficientnet_lite0, 2 cores: 178 vs 44 images/s, docs/benchmarks.md), so on a CPU in fp32
the function is exported once and run there. The export is checked against PyTorch on random
inputs before use; when it cannot be built or does not match, PyTorch runs as before.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

Extract = Callable[[torch.Tensor], torch.Tensor]
_TOLERANCE = 1e-4  # relative to the largest activation
# Below this many images an evaluation stays in PyTorch: exporting costs a few seconds.
_MIN_ITEMS = 256


class _Forward(nn.Module):
    """``fn`` as a module; ``owner`` (the model ``fn`` closes over) registers its weights."""

    def __init__(self, fn: Extract, owner: nn.Module):
        super().__init__()
        self.fn = fn
        self.owner = owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def onnx_extract(
    fn: Extract, owner: nn.Module, input_size: int, threads: int = 0
) -> Extract | None:
    """``fn`` (frozen, eval mode) run by ONNX Runtime, or None when that is not possible or exact.

    The returned function takes and returns float32 CPU tensors like ``fn``.
    """
    from marinelife.models.onnx_export import torch_to_onnx
    from marinelife.models.runtime import OnnxBackend

    was_training = owner.training
    module = _Forward(fn, owner).eval()  # eval, and back to eval after the export's own restore
    try:
        with tempfile.TemporaryDirectory(prefix="marinelife-extract-") as tmp:
            path = Path(tmp) / "extract.onnx"
            torch_to_onnx(module, input_size, path, opset=17, dynamic_batch=True)
            backend = OnnxBackend(path.read_bytes(), threads=threads)
        # A private generator: the check must not move the training run's random stream.
        probe = torch.randn(
            3, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)
        )
        with torch.inference_mode():
            expected = fn(probe).float().numpy()
        got = backend(probe.numpy())
    except Exception as exc:  # noqa: BLE001 - any export failure means: use PyTorch
        log.info("feature extraction in PyTorch: ONNX export failed (%s)", exc)
        return None
    finally:
        owner.train(was_training)
    scale = max(1.0, float(np.abs(expected).max()))
    if got.shape != expected.shape or not np.allclose(got, expected, atol=_TOLERANCE * scale):
        log.warning("feature extraction in PyTorch: the ONNX export does not match it")
        return None

    def extract(inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(backend(inputs.detach().cpu().numpy()))

    return extract


def fast_cpu_forward(
    model: nn.Module, input_size: int, *, threads: int = 0, items: int | None = None
) -> Extract | None:
    """``model``'s logits through ONNX Runtime for an evaluation on a CPU, or None.

    None for small jobs (``items`` under a few batches), where the one-off export costs more
    than it saves; the caller then runs the model in PyTorch.
    """
    if items is not None and items < _MIN_ITEMS:
        return None
    fn = onnx_extract(model, model, input_size, threads=threads)
    if fn is not None:
        log.info("evaluation forward passes run in ONNX Runtime")
    return fn


__all__ = ["fast_cpu_forward", "onnx_extract"]
