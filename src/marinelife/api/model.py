"""A trained model in Python: ``ml.load(path).predict(x)``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from marinelife.data.scan import find_images
from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.infer.predictor import Prediction, Predictor

__all__ = ["Model", "Prediction", "load"]


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
        return f"Model({self.predictor.source!r}, {len(self.classes)} classes)"

    def predict(
        self,
        x: Any,
        *,
        top_k: int = 1,
        batch_size: int = 16,
    ) -> list[Prediction]:
        """Classify ``x``: a path (file or folder, recursively), a list of paths, a PIL image,
        an ``HxWx3`` uint8 array, or a list of images.

        One :class:`Prediction` per image, in order; a file that cannot be read keeps its place
        with ``.error`` set. Labels are ``unknown`` below the calibrated threshold (load with
        ``reject=False`` to turn that off).
        """
        if top_k < 1 or batch_size < 1:
            raise MarineLifeError("top_k and batch_size must be at least 1")
        top_k = min(top_k, len(self.classes))
        items = _as_items(x)
        results: list[Prediction | None] = [None] * len(items)
        paths = [(i, p) for i, p in enumerate(items) if isinstance(p, Path)]
        for (i, path), (_, result) in zip(
            paths,
            self.predictor.predict_files([p for _, p in paths], top_k=top_k, batch_size=batch_size),
        ):
            if isinstance(result, ImageDecodeError):
                results[i] = Prediction.failed(str(path), str(result))
            else:
                result.path = str(path)
                results[i] = result
        images = [(i, im) for i, im in enumerate(items) if not isinstance(im, Path)]
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            try:
                batch = np.stack([self.predictor.preprocess_image(im) for _, im in chunk])
            except ValueError as exc:
                raise MarineLifeError(f"not an image array ({exc})",
                                      fix="pass an HxWx3 uint8 RGB array") from exc  # fmt: skip
            for (i, _), pred in zip(chunk, self.predictor.predict_batch(batch, top_k=top_k)):
                results[i] = pred
        return [r for r in results if r is not None]


def _as_items(x: Any) -> list[Any]:
    """Paths (folders expanded) and in-memory images, in the order given."""
    if isinstance(x, str | Path):
        path = Path(x).expanduser()
        if path.is_dir():
            found = find_images(path)
            if not found:
                raise MarineLifeError("folder contains no images", path=path)
            return list(found)
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
