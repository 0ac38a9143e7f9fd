"""ONNX export: parity with PyTorch, ONNX bundles load alone, int8 refuses to lose accuracy."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from marinelife.cli import main
from marinelife.errors import MarineLifeError
from marinelife.infer.export import export_onnx
from marinelife.infer.predictor import Predictor
from marinelife.models.bundle import load_bundle


def test_fp32_export_matches_pytorch_and_loads_alone(tiny_bundle, tiny_dataset, tmp_path):
    report = export_onnx(tiny_bundle, tmp_path / "out", data=tiny_dataset)
    assert report.max_abs_diff <= 1e-4 and report.top1_agreement == 1.0
    assert report.checked == {"random": 4, "real": 16} and "val" in report.real_inputs
    onnx_file = tmp_path / "out" / "model.onnx"
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert meta["weights"] == "model.onnx" and meta["export"]["dynamic_batch"] is True
    assert meta["classes"] == json.loads((tiny_bundle / "model.json").read_text())["classes"]
    # The exported bundle is self-contained: move it away from the run and predict with it.
    moved = tmp_path / "elsewhere"
    (tmp_path / "out").rename(moved)
    files = sorted((tiny_dataset / "test").rglob("*.png"))[:5]
    onnx_preds = [p for _, p in Predictor.load(moved / onnx_file.name).predict_files(files)]
    torch_preds = [p for _, p in Predictor.load(tiny_bundle).predict_files(files)]
    assert Predictor.load(moved).backend.name == "onnx"
    for a, b in zip(onnx_preds, torch_preds):
        assert a.label == b.label
        np.testing.assert_allclose([p for _, p in a.top_k], [p for _, p in b.top_k], atol=1e-5)
    with pytest.raises(MarineLifeError, match="ONNX"):
        load_bundle(moved)
    with pytest.raises(MarineLifeError, match="torch backend"):
        Predictor.load(moved, backend="torch")


@pytest.mark.slow
def test_static_batch_export_and_onnx_backend_on_a_run(tiny_bundle, capsys):
    assert main(["export", str(tiny_bundle), "--no-dynamic-batch", "--opset", "13"]) == 0
    assert "max |Δp|" in capsys.readouterr().out
    exported = tiny_bundle / "export" / "model.onnx"
    predictor = Predictor.load(exported)
    assert predictor.backend.fixed_batch == 1
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    torch_logits = Predictor.load(tiny_bundle).logits(x)
    np.testing.assert_allclose(predictor.logits(x), torch_logits, atol=1e-4)
    # --backend onnx on the run folder picks up that fresh export...
    assert Predictor.load(tiny_bundle, backend="onnx").notes[0] == f"using {exported}"
    # ...and exports in memory once the weights have changed since.
    meta = json.loads((exported.parent / "model.json").read_text())
    meta["export"]["source_sha256"] = "0" * 64
    (exported.parent / "model.json").write_text(json.dumps(meta))
    again = Predictor.load(tiny_bundle, backend="onnx")
    assert "in memory" in again.notes[0]
    np.testing.assert_allclose(again.logits(x), torch_logits, atol=1e-4)


def test_failed_verification_writes_nothing(tiny_bundle, tmp_path):
    with pytest.raises(MarineLifeError, match="differs from PyTorch"):
        export_onnx(tiny_bundle, tmp_path / "out", tolerance=-1.0)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_int8_reports_accuracy_and_refuses_a_drop(tiny_bundle, tiny_dataset, tmp_path, capsys):
    with pytest.raises(MarineLifeError, match="--data"):
        export_onnx(tiny_bundle, tmp_path / "q", quantize="int8")
    # A drop above --max-drop (here anything above -100 points) is refused; nothing written.
    args = ["export", str(tiny_bundle), "--quantize", "int8", "--data", str(tiny_dataset)]
    assert main([*args, "--out", str(tmp_path / "q"), "--max-drop", "-100"]) == 2
    assert "int8 top-1 accuracy drops" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
    # Within the allowed drop, the quantized model is written with its accuracy record.
    assert main([*args, "--out", str(tmp_path / "q"), "--max-drop", "100"]) == 0
    meta = json.loads((tmp_path / "q" / "model.json").read_text())
    accuracy = meta["export"]["accuracy"]
    assert meta["export"]["quantize"] == "int8" and accuracy["split"] == "test"
    assert accuracy["images"] == 16 and 0 <= accuracy["int8"] <= 1
    assert "top-1 on test" in capsys.readouterr().out
    # The stem convolution and the classifier stay fp32 (their weights are plain initializers,
    # not DequantizeLinear outputs); the convolutions between them are quantized.
    graph = onnx.load(str(tmp_path / "q" / "model.onnx")).graph
    initializers = {t.name for t in graph.initializer}
    weighted = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    fp32_weights = [n.input[1] in initializers for n in weighted]
    assert fp32_weights[0] and fp32_weights[-1] and not all(fp32_weights)
    assert Predictor.load(tmp_path / "q").logits(np.zeros((2, 3, 32, 32), np.float32)).shape == (
        2,
        4,
    )


@pytest.mark.slow
def test_unreadable_data_images_are_left_out_not_fatal(tiny_bundle, tiny_dataset, tmp_path, caplog):
    broken = []
    for split in ("val", "test"):
        first_class = sorted(p for p in (tiny_dataset / split).iterdir())[0]
        path = first_class / "broken.jpg"
        path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
        broken.append(path)
    report = export_onnx(
        tiny_bundle, tmp_path / "q", data=tiny_dataset, quantize="int8", max_drop=100
    )
    assert report.checked["real"] >= 15  # the broken one may be among the 16 spread picks
    meta = json.loads((tmp_path / "q" / "model.json").read_text())
    assert meta["export"]["accuracy"]["images"] == 16
    assert sum("broken.jpg" in r.getMessage() for r in caplog.records) == 2
    assert all(p.read_bytes() == b"\xff\xd8\xff\xe0 truncated" for p in broken)


def test_int8_accuracy_change_never_reads_minus_zero():
    from marinelife.infer.export import accuracy_change
    from marinelife.logutil import plural

    assert accuracy_change(0.0) == accuracy_change(0.001) == accuracy_change(-0.004) == "no change"
    assert accuracy_change(0.3) == "down 0.30 points"
    assert accuracy_change(-1.25) == "up 1.25 points"
    assert [plural(1, "class"), plural(2, "class"), plural(1, "file"), plural(1200, "image")] == [
        "1 class", "2 classes", "1 file", "1,200 images"]  # fmt: skip
