"""A trained model in Python: ``ml.load(path).predict(x)`` on photos, videos and arrays;
``Model.to_dwc`` and :func:`video_summary` for what came out."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marinelife.data.scan import iter_files
from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.infer.dwc_export import prepare_taxonomy, write_dwc
from marinelife.infer.predict_inputs import is_media_path
from marinelife.infer.predict_output import record
from marinelife.infer.predictor import Prediction, Predictor
from marinelife.infer.video import ClassSummary, is_video_path, sampling_step
from marinelife.infer.video_rows import predict_video_file
from marinelife.infer.video_rows import video_summary as summarize_frames
from marinelife.logutil import plural

__all__ = ["Model", "Prediction", "load", "video_summary"]


class Model:
    """A run folder, a bundle or an exported ``.onnx``, ready to classify images."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @property
    def classes(self) -> list[str]:
        return list(self.predictor.classes)

    @property
    def info(self) -> dict[str, Any]:
        """Architecture, classes, preprocessing, metrics, rejection threshold, export record."""
        return self.predictor.describe()

    def __repr__(self) -> str:
        return f"Model({self.predictor.source!r}, {plural(len(self.classes), 'class')})"

    def predict(
        self,
        x: Any,
        *,
        top_k: int = 1,
        batch_size: int = 16,
        every: float | None = 1.0,
        fps: float | None = None,
    ) -> list[Prediction]:
        """Classify ``x``: a path (photo, video, or folder, recursively), a list of paths, a PIL
        image, an ``HxWx3`` uint8 array, or a list of images.

        One :class:`Prediction` per photo and per sampled video frame, in order. A video
        (.mp4 .mov .avi .mkv .m4v) is sampled every ``every`` seconds (or ``fps`` frames per
        second); its predictions have ``.frame`` and ``.time_s`` set. A photo's EXIF (capture
        time, GPS, depth, camera) is in ``.metadata``. An input that cannot be read keeps its
        place with ``.error`` set; a truncated video keeps the frames before the cut, then one
        prediction with ``.error``. Labels are ``unknown`` below the calibrated threshold (load
        with ``reject=False`` to turn that off).
        """
        if top_k < 1 or batch_size < 1:
            raise MarineLifeError("top_k and batch_size must be at least 1")
        sampling_step(every, fps)  # a bad option is named before anything is decoded
        top_k = min(top_k, len(self.classes))
        results: list[Prediction] = []
        items = _as_items(x)
        for kind, group in itertools.groupby(items, key=_kind):
            chunk = list(group)
            if kind == "photo":
                files = self.predictor.predict_files(
                    chunk, top_k=top_k, batch_size=batch_size, metadata=True
                )
                for path, result in files:
                    if isinstance(result, ImageDecodeError):
                        results.append(Prediction.failed(str(path), str(result)))
                    else:
                        result.path = str(path)
                        results.append(result)
            elif kind == "video":
                for path in chunk:
                    frames, error = predict_video_file(
                        self.predictor, path, top_k=top_k, every=every, fps=fps,
                        batch_size=batch_size,
                    )  # fmt: skip
                    results.extend(frames)
                    if error is not None:
                        results.append(Prediction.failed(str(path), str(error)))
            else:
                results.extend(self._predict_arrays(chunk, top_k, batch_size))
        return results

    def _predict_arrays(self, images: list[Any], top_k: int, batch_size: int) -> list[Prediction]:
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            try:
                batch = np.stack([self.predictor.preprocess_image(im) for im in chunk])
            except ValueError as exc:
                raise MarineLifeError(f"not an image array ({exc})",
                                      fix="pass an HxWx3 uint8 RGB array") from exc  # fmt: skip
            out.extend(self.predictor.predict_batch(batch, top_k=top_k))
        return out

    def write_predictions(self, inputs: Sequence[str | Path], **options: Any) -> int:
        """What ``marinelife predict`` runs: stream every input (photos, videos, folders, globs)
        and write one row per input and sampled frame — a table, CSV or JSON on stdout, or with
        ``out_dir=`` files there (``fmt="dwc"``: a Darwin Core Archive; videos: their pages).

        Options are those of :class:`~marinelife.infer.predict_cli.PredictOptions` (``top_k``,
        ``fmt``, ``out_dir``, ``every``, ``fps``, ``taxonomy``, ``include_unknown``, ``resume``,
        ``overwrite``, ``workers``, ``batch_size``). Returns 0, or 1 when any input failed.
        """
        from marinelife.infer.predict_cli import write_predictions

        return write_predictions(self.predictor, list(inputs), **options)

    def to_dwc(
        self,
        predictions: Iterable[Prediction],
        out: str | Path,
        *,
        taxonomy: str | Path | None = None,
        include_unknown: bool = False,
        overwrite: bool = False,
    ) -> Path:
        """Write ``predictions`` (of photo and video files) as a Darwin Core Archive in ``out``:
        ``occurrence.txt`` + ``meta.xml`` and ``dwca.zip`` (returned), as ``predict --format
        dwc`` does. ``taxonomy``: CSV ``class,scientificName,taxonRank[,scientificNameID]``
        (default: the shipped 23-class map). Unknown predictions are left out unless
        ``include_unknown``; failed ones always are. ``identifiedBy`` names this model.
        """
        table = prepare_taxonomy(None if taxonomy is None else Path(taxonomy), self.classes)
        records = (record(p) for p in predictions)
        return write_dwc(
            records,
            Path(out),
            predictor=self.predictor,
            taxonomy=table,
            include_unknown=include_unknown,
            overwrite=overwrite,
        )


def video_summary(predictions: Iterable[Prediction]) -> list[ClassSummary]:
    """Per video and class seen: first and last time, frames, max and mean confidence
    (``unknown`` frames get a row of their own, last). Photos in ``predictions`` are ignored."""
    return summarize_frames(predictions)


def _kind(item: Any) -> str:
    if not isinstance(item, Path):
        return "array"
    return "video" if is_video_path(item) else "photo"


def _as_items(x: Any) -> list[Any]:
    """Paths (folders expanded) and in-memory images, in the order given."""
    if isinstance(x, str | Path):
        path = Path(x).expanduser()
        if path.is_dir():
            found = list(iter_files(path, is_media_path))
            if not found:
                raise MarineLifeError("folder contains no images", path=path)
            return found
        if not path.exists():
            raise MarineLifeError("no such file or folder", path=path, fix="check the path")
        return [path]
    if _is_image(x):
        return [x]
    if isinstance(x, Iterable):
        items: list[Any] = []
        for item in x:
            items.extend(_as_items(item) if isinstance(item, str | Path) else [_image(item)])
        return items
    raise MarineLifeError(
        f"cannot predict on a {type(x).__name__}",
        fix="pass a path, a folder, a list of paths, a PIL image or an HxWx3 uint8 array",
    )


def _is_image(x: Any) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image | np.ndarray)


def _image(x: Any) -> Any:
    if not _is_image(x):
        raise MarineLifeError(
            f"cannot predict on a {type(x).__name__} inside a list",
            fix="pass paths, PIL images or HxWx3 uint8 arrays",
        )
    return x


def load(
    path: str | Path,
    *,
    backend: str = "auto",
    reject: bool = True,
    tta: str | None = None,
    threads: int = 0,
    device: str = "cpu",
) -> Model:
    """A run folder, a bundle folder / ``model.json`` / weights file, or an exported ``.onnx``.

    ``backend="auto"`` runs ONNX Runtime for an ONNX export, PyTorch otherwise.
    """
    return Model(
        Predictor.load(
            Path(path), backend=backend, device=device, reject=reject, tta=tta, threads=threads
        )
    )
