"""`marinelife export`: a verified ONNX copy of a bundle, optionally int8-quantized.

The export is checked against PyTorch before anything is written: random inputs and real photos
(from ``--data``, else generated images) go through both, and an fp32 export whose probabilities
differ by more than 1e-4 is refused. ``--quantize int8`` uses ONNX Runtime static quantization
(QDQ, per-channel weights, calibrated on training images), measures top-1 accuracy of fp32 and
int8 on a split of ``--data``, and refuses to write when int8 loses more than ``--max-drop``
points. Output: ``model.onnx`` + ``model.json`` (``weights: model.onnx`` and an ``export`` record).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import softmax

from marinelife.data.preprocess import PreprocessConfig, load_and_preprocess
from marinelife.data.scan import Sample, scan_dataset
from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.fileio import atomic_write_bytes
from marinelife.infer.quantize import quantize_int8, top1_accuracy
from marinelife.infer.rejection import require_same_classes
from marinelife.logutil import plural
from marinelife.models.bundle import load_bundle, read_model_info, write_model_json
from marinelife.models.onnx_export import DEFAULT_OPSET, torch_to_onnx

log = logging.getLogger(__name__)

FP32_TOLERANCE = 1e-4
ONNX_FILE = "model.onnx"
_CALIBRATION_IMAGES = 256
_REAL_CHECK_IMAGES = 16


def accuracy_change(drop_points: float) -> str:
    """int8 against fp32 in words: "no change" when it rounds to zero (never "-0.00")."""
    change = round(-float(drop_points), 2)
    if change == 0:
        return "no change"
    return f"{'up' if change > 0 else 'down'} {abs(change):.2f} points"


@dataclass
class ExportReport:
    path: Path
    opset: int
    dynamic_batch: bool
    quantize: str | None
    max_abs_diff: float  # of softmax probabilities, ONNX vs PyTorch
    top1_agreement: float
    checked: dict[str, int]
    real_inputs: str
    accuracy: dict[str, Any] | None
    seconds: float

    def summary(self) -> str:
        lines = [
            f"wrote {self.path} (+ model.json): opset {self.opset}, "
            f"{'dynamic' if self.dynamic_batch else 'fixed'} batch"
            + (f", {self.quantize}" if self.quantize else ""),
            f"vs PyTorch on {self.checked['random']} random + {self.checked['real']} "
            f"{self.real_inputs} inputs: max |Δp| {self.max_abs_diff:.2e}, "
            f"top-1 agreement {100 * self.top1_agreement:.1f}%",
        ]
        if self.accuracy:
            a = self.accuracy
            lines.append(
                f"top-1 on {a['split']} ({plural(a['images'], 'image')}): fp32 "
                f"{100 * a['fp32']:.2f}%, int8 {100 * a['int8']:.2f}% "
                f"({accuracy_change(a['drop_points'])})"
            )
        return "\n".join(lines)


def _preprocess_many(sources: list[Any], preprocess: PreprocessConfig) -> np.ndarray:
    """Inputs for every source; all of them must decode (generated images always do)."""
    inputs, kept = _preprocess_readable(sources, preprocess)
    assert len(kept) == len(sources)
    return inputs


def _preprocess_readable(
    sources: list[Any], preprocess: PreprocessConfig
) -> tuple[np.ndarray, list[int]]:
    """Inputs for the sources that decode and their indices; each unreadable file is named in a
    warning and left out, so one broken photo in --data cannot stop an export."""

    def load(source: Any) -> np.ndarray | None:
        try:
            return load_and_preprocess(source, preprocess).numpy()
        except ImageDecodeError as exc:
            log.warning("left out: %s", exc)
            return None

    with ThreadPoolExecutor(max_workers=4) as pool:
        tensors = list(pool.map(load, sources))
    kept = [i for i, tensor in enumerate(tensors) if tensor is not None]
    if not kept:
        size = preprocess.input_size
        return np.zeros((0, 3, size, size), np.float32), kept
    return np.stack([tensors[i] for i in kept]), kept


def _generated_images(count: int, size: int) -> list[bytes]:
    from marinelife.data.synthetic import SHAPES, draw_shape

    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        buffer = io.BytesIO()
        draw_shape(SHAPES[i % len(SHAPES)], max(size, 64), rng).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def _spread(samples: list[Sample], count: int) -> list[Sample]:
    """Up to ``count`` samples taken evenly across the (class-sorted) list, so every class shows."""
    if len(samples) <= count:
        return list(samples)
    index = np.linspace(0, len(samples) - 1, count).round().astype(int)
    return [samples[i] for i in index]


def _compare(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    p, q = softmax(reference.astype(np.float64), 1), softmax(other.astype(np.float64), 1)
    return float(np.abs(p - q).max()), float((p.argmax(1) == q.argmax(1)).mean())


def _check_inputs(
    data: Path | None, preprocess: PreprocessConfig, classes: list[str]
) -> tuple[np.ndarray, str, Any]:
    rng = np.random.default_rng(0)
    size = preprocess.input_size
    random_inputs = rng.standard_normal((4, 3, size, size)).astype(np.float32)
    if data is None:
        real = _preprocess_many(_generated_images(8, size), preprocess)
        return np.concatenate([random_inputs, real]), "generated", None
    layout = scan_dataset(data)
    require_same_classes(layout, classes)
    split = "val" if "val" in layout.splits else next(iter(layout.splits))
    chosen = _spread(layout.samples(split), _REAL_CHECK_IMAGES)
    real, _ = _preprocess_readable([s.path for s in chosen], preprocess)
    return np.concatenate([random_inputs, real]), f"real ({split} split)", layout


def export_onnx(
    model: Path,
    out: Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    quantize: str | None = None,
    data: Path | None = None,
    split: str = "test",
    max_drop: float = 1.0,
    tolerance: float = FP32_TOLERANCE,
    quiet: bool = False,
) -> ExportReport:
    """Export, verify and (only if every check passes) write ``out/model.onnx`` + model.json."""
    from marinelife.fileio import file_sha256
    from marinelife.models.runtime import OnnxBackend

    start = time.perf_counter()
    info, folder = read_model_info(Path(model))
    if info.is_onnx:
        raise MarineLifeError(
            "is already an ONNX export", path=model, fix="pass the run folder it came from"
        )
    if quantize not in (None, "int8"):
        raise MarineLifeError(f"--quantize {quantize!r} is not supported (use int8)")
    if quantize and data is None:
        raise MarineLifeError(
            "--quantize int8 needs --data DIR",
            fix="pass the dataset: int8 is calibrated on train/ and checked on a split",
        )
    if not 7 <= opset <= 21:
        raise MarineLifeError(f"--opset {opset} is outside the supported range 7-21")
    network, info = load_bundle(folder)
    out = Path(out) if out is not None else folder / ("export-int8" if quantize else "export")
    inputs, real_kind, layout = _check_inputs(data, info.preprocess, info.classes)
    with torch.inference_mode():
        reference = network(torch.from_numpy(inputs)).float().numpy()
    accuracy = None
    with tempfile.TemporaryDirectory(prefix="marinelife-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        torch_to_onnx(
            network, info.preprocess.input_size, fp32, opset=opset, dynamic_batch=dynamic_batch
        )
        max_diff, agreement = _compare(reference, OnnxBackend(fp32)(inputs))
        if max_diff > tolerance:
            raise MarineLifeError(
                f"ONNX export differs from PyTorch: max |Δp| {max_diff:.2e} > {tolerance:.0e} "
                "(nothing written)",
                path=model,
                fix="try another --opset, or report this model/architecture as a bug",
            )
        final = fp32
        if quantize:
            final = Path(tmp) / "int8.onnx"
            accuracy = _quantize_and_measure(
                fp32, final, layout, info, split, dynamic_batch=dynamic_batch
            )
            max_diff, agreement = _compare(reference, OnnxBackend(final)(inputs))
            if accuracy["drop_points"] > max_drop:
                raise MarineLifeError(
                    f"int8 top-1 accuracy drops {accuracy['drop_points']:.2f} points on "
                    f"{accuracy['split']} ({100 * accuracy['fp32']:.2f}% → "
                    f"{100 * accuracy['int8']:.2f}%), more than --max-drop {max_drop}; "
                    "nothing written",
                    path=model,
                    fix="keep the fp32 export, or raise --max-drop if the loss is acceptable",
                )
        report = ExportReport(
            path=out / ONNX_FILE,
            opset=opset,
            dynamic_batch=dynamic_batch,
            quantize=quantize,
            max_abs_diff=max_diff,
            top1_agreement=agreement,
            checked={"random": 4, "real": len(inputs) - 4},
            real_inputs=real_kind,
            accuracy=accuracy,
            seconds=0.0,
        )
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / ONNX_FILE, final.read_bytes())
    export_record = {
        "format": "onnx",
        "opset": opset,
        "dynamic_batch": dynamic_batch,
        "quantize": quantize,
        "source_weights": info.weights,
        "source_sha256": file_sha256(folder / info.weights),
        "verification": {
            "max_abs_diff": max_diff,
            "top1_agreement": agreement,
            "inputs": report.checked,
            "real_inputs": real_kind,
        },
    }
    if accuracy:
        export_record["accuracy"] = accuracy
    write_model_json(
        dataclasses.replace(info, weights=ONNX_FILE, export=export_record, created=""), out
    )
    report.seconds = time.perf_counter() - start
    if not quiet:
        log.info("%s", report.summary())
    return report


def _quantize_and_measure(
    fp32: Path, int8: Path, layout: Any, info: Any, split: str, *, dynamic_batch: bool
) -> dict[str, Any]:
    layout.require_splits(split)
    calib_split = "train" if "train" in layout.splits else "val"
    calib, _ = _preprocess_readable(
        [s.path for s in _spread(layout.samples(calib_split), _CALIBRATION_IMAGES)],
        info.preprocess,
    )
    if not len(calib):
        raise MarineLifeError(
            f"no readable images to calibrate on in {calib_split}", path=layout.root
        )
    log.info("calibrating int8 on %d %s images", len(calib), calib_split)
    quantize_int8(fp32, int8, calib, dynamic_batch=dynamic_batch)
    samples = layout.samples(split)
    inputs, kept = _preprocess_readable([s.path for s in samples], info.preprocess)
    if not kept:
        raise MarineLifeError(f"no readable images in the {split} split", path=layout.root)
    targets = np.asarray(layout.targets(split))[kept]
    fp32_acc, int8_acc = top1_accuracy(fp32, inputs, targets), top1_accuracy(int8, inputs, targets)
    return {
        "split": split,
        "images": len(kept),
        "calibration": f"{len(calib)} {calib_split} images",
        "fp32": fp32_acc,
        "int8": int8_acc,
        "drop_points": round(100 * (fp32_acc - int8_acc), 4),
    }


__all__ = ["ExportReport", "export_onnx"]
