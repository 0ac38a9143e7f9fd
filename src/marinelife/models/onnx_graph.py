"""Export-time graph clean-up: TensorFlow "SAME" padding as plain ``Conv`` pads.

timm's ``tf_*`` models (the offline EfficientNet-Lite weights among them) pad their stride-2
convolutions like TensorFlow: ``Conv2dSame`` works out the padding from the input's height and
width on every call. Traced to ONNX that is a chain of ``Shape``/``Gather``/``Ceil`` ops feeding a
separate ``Pad`` before each such ``Conv``; in an int8 model every ``Pad`` also needs a dequantize
before and a quantize after it. Measured on tf_efficientnet_lite0 (2 cores, batch 8, one thread):
the ``Pad`` ops and their (de)quantization took half of the int8 model's time.

An export has a fixed height and width, so the padding is a constant:
:func:`constant_same_padding` swaps each ``Conv2dSame`` for the same convolution with that
constant padding while tracing, ONNX Runtime's hardware-independent (basic) optimizations fold
the constants, and :func:`fold_pads_into_convs` moves each zero ``Pad`` into its ``Conv``'s own
(possibly asymmetric) ``pads``. The result is standard ONNX with outputs identical to the traced
model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class StaticSameConv2d(nn.Conv2d):
    """A ``Conv2dSame`` whose TensorFlow-style padding was computed once for a fixed input size."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]):
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            0,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            device="meta",  # no initialisation (that would draw from the global RNG)
            dtype=conv.weight.dtype,
        )
        self.weight, self.bias = conv.weight, conv.bias  # shared, not copied
        self.pads = pads  # F.pad order: left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))


@contextlib.contextmanager
def constant_same_padding(network: nn.Module, input_size: int) -> Iterator[int]:
    """Within the block, ``network``'s ``Conv2dSame`` layers pad by constants for ``input_size``.

    Yields how many layers were swapped. The swap is in place (so a function that closes over
    the network's modules sees it too) and undone on leaving the block, also on error; the
    weights are shared, never copied, and the train/eval mode is restored.
    """
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    seen: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            seen.setdefault(name, tuple(args[0].shape[-2:]))

        return hook

    was_training = network.training
    hooks = [
        module.register_forward_pre_hook(record(name))
        for name, module in network.named_modules()
        if isinstance(module, Conv2dSame)
    ]
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        if hooks:
            network.eval()  # the probe pass must not touch BatchNorm statistics
            with torch.no_grad():
                network(torch.zeros(1, 3, input_size, input_size))
        for hook in hooks:
            hook.remove()
        for name, (height, width) in seen.items():
            conv = network.get_submodule(name)
            left, right, top, bottom = pad_same_arg(
                [height, width],
                list(conv.weight.shape[-2:]),
                list(conv.stride),
                list(conv.dilation),
            )
            parent, _, attribute = name.rpartition(".")
            owner = network.get_submodule(parent) if parent else network
            setattr(owner, attribute, StaticSameConv2d(conv, (left, right, top, bottom)))
            swapped.append((owner, attribute, conv))
        yield len(swapped)
    finally:
        for hook in hooks:
            hook.remove()
        for owner, attribute, conv in reversed(swapped):
            setattr(owner, attribute, conv)
        network.train(was_training)


def optimize_basic(source: Path, target: Path) -> None:
    """ONNX Runtime's basic level: constant folding, redundant nodes removed; standard ops only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3  # its "removing unused initializer" notes are not news here
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def fold_pads_into_convs(model) -> int:  # onnx.ModelProto
    """Move each constant zero ``Pad`` (height/width only) into the ``Conv`` it alone feeds.

    Returns the number of ``Pad`` nodes removed; initializers left unused are dropped.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    folded = []
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        pads = _zero_constant_pads(pad, constants)
        users = consumers.get(pad.output[0], [])
        if pads is None or len(users) != 1 or pad.output[0] in graph_outputs:
            continue
        conv = users[0]
        attributes = {a.name: a for a in conv.attribute}
        auto_pad = attributes.get("auto_pad")
        if conv.op_type != "Conv" or (
            auto_pad is not None and helper.get_attribute_value(auto_pad) not in (b"", b"NOTSET")
        ):
            continue
        old = helper.get_attribute_value(attributes["pads"]) if "pads" in attributes else [0] * 4
        if len(old) != 4:
            continue
        # ONNX Pad (NCHW): [n, c, h, w] begins then ends; Conv: [h, w] begins then ends.
        new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
        if "pads" in attributes:
            conv.attribute.remove(attributes["pads"])
        conv.attribute.append(helper.make_attribute("pads", new))
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return len(folded)


def _zero_constant_pads(pad, constants: dict[str, np.ndarray]) -> list[int] | None:
    """The 8 pads of a constant-mode, zero-valued, height/width-only 4-D ``Pad``, else None."""
    from onnx import helper

    mode = next((helper.get_attribute_value(a) for a in pad.attribute if a.name == "mode"), None)
    if mode not in (None, b"constant") or len(pad.input) < 2 or pad.input[1] not in constants:
        return None
    if len(pad.input) > 2 and pad.input[2]:
        value = constants.get(pad.input[2])
        if value is None or value.any():
            return None
    if len(pad.input) > 3 and pad.input[3]:  # explicit axes: not worth the special case
        return None
    pads = [int(v) for v in constants[pad.input[1]].ravel()]
    if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        return None
    return pads


def simplify_export(path: Path) -> int:
    """Constant-fold ``path`` in place, zero pads folded into convolutions; returns their count."""
    import onnx

    folded_path = path.with_name(path.stem + ".basic.onnx")
    try:
        optimize_basic(path, folded_path)
        model = onnx.load(str(folded_path))
        count = fold_pads_into_convs(model)
        onnx.save(model, str(path))
    finally:
        folded_path.unlink(missing_ok=True)
    return count


__all__ = [
    "StaticSameConv2d",
    "constant_same_padding",
    "fold_pads_into_convs",
    "optimize_basic",
    "simplify_export",
]
