from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from timm.layers.conv2d_same import Conv2dSame

from marinelife.config import TrainConfig
from marinelife.models import build_classifier
from marinelife.models.onnx_export import torch_to_onnx
from marinelife.models.onnx_graph import (
    StaticSameConv2d,
    constant_same_padding,
    fold_pads_into_convs,
)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_classifier(
        TrainConfig(architecture="tf_efficientnet_lite0", pretrained=False), 5
    ).eval()
    for module in model.modules():  # input-dependent outputs (fresh BatchNorm is identity)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return model


def _count(model: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("size", [48, 51])  # even and odd sides: different pad splits
def test_constant_padding_gives_identical_outputs_and_is_undone(lite0, size):
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = lite0(x)
    lite0.train()
    state = {k: v.clone() for k, v in lite0.state_dict().items()}
    with constant_same_padding(lite0, size) as swapped:
        assert swapped == 5
        assert _count(lite0, Conv2dSame) == 0 and _count(lite0, StaticSameConv2d) == 5
        with torch.no_grad():
            torch.testing.assert_close(lite0.eval()(x), expected, rtol=0, atol=0)
    # Afterwards: the original layers, mode and statistics (the probe pass ran in eval mode).
    assert _count(lite0, Conv2dSame) == 5 and _count(lite0, StaticSameConv2d) == 0
    assert lite0.training
    lite0.eval()
    for key, value in lite0.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_constant_padding_is_undone_on_error(lite0):
    with pytest.raises(RuntimeError), constant_same_padding(lite0, 48):
        raise RuntimeError("export failed")
    assert _count(lite0, Conv2dSame) == 5 and _count(lite0, StaticSameConv2d) == 0


def test_export_has_no_pad_ops_and_matches_pytorch(lite0, tmp_path):
    path = tmp_path / "lite0.onnx"
    torch_to_onnx(lite0, 48, path, opset=17, dynamic_batch=True)
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    assert "Pad" not in ops and "Shape" not in ops
    asymmetric = [
        helper.get_attribute_value(a)
        for node in graph.node
        for a in node.attribute
        if node.op_type == "Conv" and a.name == "pads"
    ]
    assert [0, 0, 1, 1] in asymmetric  # TF "SAME" on an even side pads only after
    x = np.random.default_rng(0).standard_normal((3, 3, 48, 48)).astype(np.float32)
    onnx_out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    with torch.no_grad():
        torch_out = lite0(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-4)


def _pad_conv_model(pad_value: float, pads: list[int], second_user: bool = False):
    weight = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    inits = [
        weight,
        numpy_helper.from_array(np.array(pads, np.int64), "pads"),
        numpy_helper.from_array(np.array(pad_value, np.float32), "value"),
    ]
    nodes = [
        helper.make_node("Pad", ["x", "pads", "value"], ["padded"], mode="constant"),
        helper.make_node("Conv", ["padded", "w"], ["y"], strides=[2, 2]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if second_user:
        nodes.append(helper.make_node("Relu", ["padded"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        outputs,
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


def test_zero_pad_folds_into_asymmetric_conv_pads():
    model = _pad_conv_model(0.0, [0, 0, 0, 1, 0, 0, 1, 2])
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    before = _run(model, x)
    assert fold_pads_into_convs(model) == 1
    conv = model.graph.node[0]
    assert [n.op_type for n in model.graph.node] == ["Conv"] and conv.input[0] == "x"
    assert helper.get_attribute_value(conv.attribute[-1]) == [0, 1, 1, 2]
    assert {t.name for t in model.graph.initializer} == {"w"}  # pads/value dropped
    np.testing.assert_allclose(_run(model, x), before, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "pad_value, pads, second_user",
    [
        (1.0, [0, 0, 1, 1, 0, 0, 1, 1], False),  # non-zero fill is not a Conv pad
        (0.0, [0, 1, 1, 1, 0, 0, 1, 1], False),  # pads a channel
        (0.0, [0, 0, 1, 1, 0, 0, 1, 1], True),  # padded tensor used elsewhere too
    ],
)
def test_pads_that_are_not_conv_padding_stay(pad_value, pads, second_user):
    model = _pad_conv_model(pad_value, pads, second_user)
    assert fold_pads_into_convs(model) == 0
    assert [n.op_type for n in model.graph.node][:2] == ["Pad", "Conv"]
