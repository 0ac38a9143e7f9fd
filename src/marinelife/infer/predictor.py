"""Run a bundle on images: PyTorch or ONNX Runtime behind one interface, batched, top-k, rejection.

Every input goes through :func:`~marinelife.data.preprocess.load_and_preprocess`, the function
training evaluation uses, so predict, serve and export checks can never drift from it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from scipy.special import softmax

from marinelife.data.preprocess import load_and_preprocess, preprocess_image
from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.fileio import file_sha256
from marinelife.infer.decode_pool import Loaded, load_photo, ordered_map
from marinelife.infer.rejection import UNKNOWN, accept_mask, rejection_scores, validate_rejection
from marinelife.models.bundle import ModelInfo, load_bundle, read_model_info
from marinelife.models.forward import merge_views
from marinelife.models.runtime import Backend, OnnxBackend, TorchBackend

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
TTA_MODES = ("flip",)
EXPORT_SUBDIR = "export"
T = TypeVar("T")


@dataclass
class Prediction:
    """One image's result; ``label`` is the top-1 class or ``unknown`` when rejected.

    An input that could not be read keeps its place with ``error`` set and no label.
    """

    label: str
    confidence: float
    top_k: list[tuple[str, float]]
    rejected: bool
    scores: dict[str, float]
    path: str = ""
    error: str = ""
    # A video frame: its decode index and seconds from the start (None for a photo).
    frame: int | None = None
    time_s: float | None = None
    # EXIF fields of a photo (data.exif.METADATA_FIELDS, None where absent); {} when not read.
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """The top-1 class probability (also when the answer is ``unknown``)."""
        return self.confidence

    @property
    def unknown(self) -> bool:
        """True when the confidence was below the model's calibrated threshold."""
        return self.rejected

    @classmethod
    def failed(cls, path: str, error: str) -> Prediction:
        return cls(label="", confidence=0.0, top_k=[], rejected=False, scores={}, path=path,
                   error=error)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data = {
            "path": self.path,
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "top_k": [{"label": c, "probability": round(p, 6)} for c, p in self.top_k],
            "rejected": self.rejected,
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
        }
        if self.frame is not None:
            data["frame"] = self.frame
            data["time_s"] = None if self.time_s is None else round(self.time_s, 3)
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        if self.error:
            data["error"] = self.error
        return data


@dataclass
class Predictor:
    backend: Backend
    info: ModelInfo
    reject: bool = True
    tta: str | None = None
    model_id: str = ""
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.tta not in (None, "none", *TTA_MODES):
            raise MarineLifeError(f"--tta {self.tta!r} is not one of {', '.join(TTA_MODES)}")
        if self.tta == "none":
            self.tta = None
        validate_rejection(self.info.rejection, self.source or "model.json")

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def rejection(self) -> dict[str, Any] | None:
        return self.info.rejection if self.reject and self.info.rejection else None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        model: str | Path,
        *,
        backend: str = "auto",
        device: str = "cpu",
        reject: bool = True,
        tta: str | None = None,
        threads: int = 0,
    ) -> Predictor:
        """A run folder, a bundle (folder, model.json, weights) or an exported ``.onnx``.

        ``auto``: ONNX Runtime when given an ONNX bundle, else PyTorch. ``onnx`` on a PyTorch
        bundle uses ``RUN/export/model.onnx`` when it was exported from these exact weights,
        otherwise exports (and verifies) one in a temporary folder.
        """
        if backend not in BACKENDS:
            raise MarineLifeError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        info, folder = read_model_info(Path(model))
        weights = folder / info.weights
        if not weights.is_file():
            raise MarineLifeError("weights file not found", path=weights)
        notes: list[str] = []
        if info.is_onnx:
            if backend == "torch":
                raise MarineLifeError(
                    "is an ONNX export; the torch backend needs the run folder",
                    path=weights,
                    fix="use --backend onnx, or pass the run folder with best.safetensors",
                )
            engine: Backend = OnnxBackend(weights, threads=threads)
            source = weights
        elif backend == "onnx":
            engine, source, info, note = _onnx_for_torch_bundle(folder, info, threads)
            notes.append(note)
        else:
            network, info = load_bundle(folder / info.weights)
            engine, source = TorchBackend(network, device), weights
        if threads > 0 and engine.name == "torch":
            torch.set_num_threads(threads)
        if reject and not info.rejection:
            notes.append("model.json has no rejection threshold: no prediction will be 'unknown'")
        return cls(
            engine,
            info,
            reject=reject,
            tta=tta,
            model_id=file_sha256(source)[:12],
            source=str(source),
            notes=notes,
        )

    # ------------------------------------------------------------------ inference
    def logits(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits for a preprocessed NCHW batch; ``tta="flip"`` averages with the mirror image."""
        x = batch.numpy() if isinstance(batch, torch.Tensor) else np.asarray(batch, np.float32)
        if self.tta == "flip":
            n = len(x)
            both = self.backend(np.concatenate([x, x[..., ::-1]]))
            return merge_views(np.stack([both[:n], both[n:]], axis=1))
        return self.backend(x)

    def predict_batch(
        self, batch: np.ndarray | torch.Tensor, *, top_k: int = 3, paths: Sequence[str] = ()
    ) -> list[Prediction]:
        logits = self.logits(batch)
        return self.from_logits(logits, top_k=top_k, paths=paths)

    def from_logits(
        self, logits: np.ndarray, *, top_k: int = 3, paths: Sequence[str] = ()
    ) -> list[Prediction]:
        probs = softmax(np.asarray(logits, dtype=np.float64), axis=1)
        scores = rejection_scores(logits)
        keep = accept_mask(logits, self.rejection, scores)
        k = max(1, min(top_k, len(self.classes)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        results = []
        for i, row in enumerate(order):
            top = [(self.classes[j], float(probs[i, j])) for j in row]
            results.append(
                Prediction(
                    label=top[0][0] if keep[i] else UNKNOWN,
                    confidence=top[0][1],
                    top_k=top,
                    rejected=not bool(keep[i]),
                    scores={name: float(values[i]) for name, values in scores.items()},
                    path=paths[i] if i < len(paths) else "",
                )
            )
        return results

    def preprocess_image(self, image: Any) -> np.ndarray:
        """An in-memory PIL image or ``HxWx3`` uint8 array → the ``3xSxS`` network input."""
        return preprocess_image(image, self.info.preprocess).numpy()

    def preprocess(self, source: str | Path | bytes, **load_kwargs: Any) -> np.ndarray:
        """One image file or bytes → the ``3xSxS`` float32 network input."""
        return load_and_preprocess(source, self.info.preprocess, **load_kwargs).numpy()

    def predict_files(
        self,
        paths: Iterable[Path],
        *,
        top_k: int = 3,
        batch_size: int = 16,
        workers: int = 0,
        pool: str = "thread",
        metadata: bool = False,
        executor: Executor | None = None,
    ) -> Iterator[tuple[Path, Prediction | ImageDecodeError]]:
        """Yield ``(path, Prediction)`` in order, or ``(path, error)`` for an unreadable file.

        ``paths`` is consumed lazily (a generator of a million paths is fine): ``workers``
        threads (``pool="process"``: processes; 0: automatic) decode at most two batches ahead
        of the network, so memory does not grow with the number of files. ``metadata=True``
        also reads each photo's EXIF into ``Prediction.metadata``. ``executor``: a pool from
        ``decode_pool.make_executor`` to reuse across calls (then ``workers``/``pool`` unused).
        """
        if batch_size < 1:
            raise MarineLifeError(f"--batch-size must be at least 1, got {batch_size}")
        load = functools.partial(load_photo, config=self.info.preprocess, with_metadata=metadata)
        decoded = ordered_map(
            load, paths, executor=executor, workers=workers, kind=pool, ahead=2 * batch_size
        )
        for chunk in _chunks(decoded, batch_size):
            yield from self._finish(chunk, top_k=top_k)

    def _finish(
        self, chunk: list[tuple[Path, Loaded | ImageDecodeError]], *, top_k: int
    ) -> Iterator[tuple[Path, Prediction | ImageDecodeError]]:
        good = [i for i, (_, x) in enumerate(chunk) if not isinstance(x, ImageDecodeError)]
        preds = (
            self.predict_batch(
                np.stack([chunk[i][1][0] for i in good]),  # type: ignore[index]
                top_k=top_k,
                paths=[str(chunk[i][0]) for i in good],
            )
            if good
            else []
        )
        by_index = dict(zip(good, preds))
        for i, (path, loaded) in enumerate(chunk):
            pred = by_index.get(i)
            if pred is None:
                yield path, loaded  # type: ignore[misc]
                continue
            pred.metadata = loaded[1] or {}  # type: ignore[index]
            yield path, pred

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` and ``predict --format json`` report about the model."""
        info = self.info
        return {
            "id": self.model_id,
            "architecture": info.architecture,
            "classes": info.classes,
            "backend": self.backend.name,
            "preprocess": info.preprocess.to_dict(),
            "metrics": info.metrics,
            "rejection": info.rejection if self.reject else {},
            "recipe": info.recipe,
            "created": info.created,
            "marinelife_version": info.marinelife_version,
            "export": info.export,
        }


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _onnx_for_torch_bundle(
    folder: Path, info: ModelInfo, threads: int
) -> tuple[Backend, Path, ModelInfo, str]:
    from marinelife.infer.export import export_onnx

    weights = folder / info.weights
    digest = file_sha256(weights)
    exported = folder / EXPORT_SUBDIR / "model.onnx"
    if exported.is_file():
        try:
            export_info, _ = read_model_info(exported)
        except MarineLifeError:
            export_info = None
        fresh = export_info is not None and (
            export_info.export.get("source_sha256") == digest
            and export_info.classes == info.classes
        )
        if fresh:
            # The run's model.json stays authoritative (a later recalibrated rejection, metrics).
            merged = dataclasses.replace(info, export=export_info.export)
            return OnnxBackend(exported, threads=threads), exported, merged, f"using {exported}"
    with tempfile.TemporaryDirectory(prefix="marinelife-onnx-") as tmp:
        report = export_onnx(folder, Path(tmp), quiet=True)
        engine = OnnxBackend(report.path.read_bytes(), threads=threads)
        export_info, _ = read_model_info(report.path)
    export_info = dataclasses.replace(info, export=export_info.export)
    note = (
        f"exported {weights} to ONNX in memory (max |Δp| {report.max_abs_diff:.1e}); "
        f"`marinelife export {folder}` saves it for faster start-up"
    )
    return engine, weights, export_info, note
