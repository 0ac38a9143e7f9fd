"""Why did it say "shark"? Grad-CAM heatmaps (the ``grad-cam`` package) over the photo.

``marinelife explain MODEL IMAGE`` writes the overlay for one photo; the report uses
:func:`gradcam_gallery` for its misclassified and per-class galleries. The map is computed on the
last spatial feature map the network produces (found by running it once), so any timm backbone
works without naming a layer.
"""

from __future__ import annotations

import importlib.util
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from marinelife.data.figures import save_figure, unnormalise
from marinelife.data.image_io import is_image_path
from marinelife.data.preprocess import PreprocessConfig, load_and_preprocess
from marinelife.errors import ImageDecodeError, MarineLifeError


def gradcam_available() -> bool:
    return importlib.util.find_spec("pytorch_grad_cam") is not None


def _require_gradcam() -> None:
    if not gradcam_available():
        raise MarineLifeError("Grad-CAM needs the grad-cam package",
                              fix="pip install grad-cam")  # fmt: skip


def last_spatial_layer(model: torch.nn.Module, input_size: int) -> torch.nn.Module:
    """The leaf module that last outputs a ``N×C×H×W`` map: what the global pooling sees."""
    found: list[torch.nn.Module] = []

    def record(module: torch.nn.Module, _inputs: object, output: object) -> None:
        # A spatial map: 4-D with more than one position (pooling outputs are N×C×1×1).
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-2:].numel() > 1:
            found.append(module)

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not found:
        raise MarineLifeError("the model has no spatial feature map for Grad-CAM")
    return found[-1]


class GradCam:
    """Grad-CAM maps in [0, 1] at the input's size, for a given or the predicted class."""

    def __init__(
        self, model: torch.nn.Module, input_size: int, layer: torch.nn.Module | None = None
    ):
        _require_gradcam()
        from pytorch_grad_cam import GradCAM

        self.model = model.eval()
        self.cam = GradCAM(
            model=model, target_layers=[layer or last_spatial_layer(model, input_size)]
        )

    def __call__(
        self, inputs: torch.Tensor, targets: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(maps [N, H, W], probabilities [N, K])`` for a batch of normalised inputs."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        with torch.no_grad():
            probs = torch.softmax(self.model(inputs).float(), dim=1).numpy()
        classes = probs.argmax(1) if targets is None else np.asarray(targets)
        with torch.enable_grad():
            maps = self.cam(input_tensor=inputs,
                            targets=[ClassifierOutputTarget(int(c)) for c in classes])  # fmt: skip
        return np.asarray(maps, dtype=np.float32), probs


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Heatmap (jet) blended over an ``H×W×3`` image in [0, 1]; returns uint8."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32), heatmap, use_rgb=True,
                             image_weight=1 - alpha)  # fmt: skip


def _inputs(files: Sequence[str], preprocess: PreprocessConfig) -> tuple[list[int], torch.Tensor]:
    kept, tensors = [], []
    for i, path in enumerate(files):
        try:
            tensors.append(load_and_preprocess(path, preprocess))
            kept.append(i)
        except (ImageDecodeError, OSError):
            continue
    return kept, torch.stack(tensors) if tensors else torch.zeros(0)


def gradcam_gallery(
    model: torch.nn.Module,
    preprocess: PreprocessConfig,
    items: Sequence[tuple[str, str, int]],
    path: Path,
    *,
    title: str,
    columns: int = 6,
    batch_size: int = 2,
) -> Path:
    """Overlays for ``(file, caption, class)`` items (the class the map explains).

    Small batches: the backward pass keeps every activation of the batch, which for an
    ensemble of three backbones at 260 px took 7 GB at 8 images (1 s per image either way)."""
    from marinelife.evaluate.figures import plot_tiles

    cam = GradCam(model, preprocess.input_size)
    kept, inputs = _inputs([f for f, _, _ in items], preprocess)
    tiles: list[tuple[np.ndarray | None, str]] = [(None, c) for _, c, _ in items]
    for start in range(0, len(kept), batch_size):
        idx = kept[start : start + batch_size]
        maps, _ = cam(inputs[start : start + batch_size], [items[i][2] for i in idx])
        for k, i in enumerate(idx):
            picture = unnormalise(inputs[start + k], preprocess.mean, preprocess.std)
            tiles[i] = (overlay(picture, maps[k]), items[i][1])
    return plot_tiles(tiles, path, title=title, columns=columns)


def explain_image(model_path: Path, image: Path, out: Path | None = None,
                  target: str | None = None) -> Path:  # fmt: skip
    """Write the Grad-CAM overlay of one photo beside the photo's eval view; returns the PNG."""
    from marinelife.models.bundle import load_bundle

    _require_gradcam()
    model, info = load_bundle(model_path)
    target = match_class(target, info.classes) if target is not None else None
    tensor = load_and_preprocess(image, info.preprocess)[None]
    cam = GradCam(model, info.preprocess.input_size)
    index = None if target is None else [info.classes.index(target)]
    maps, probs = cam(tensor, index)
    predicted = int(probs[0].argmax())
    explained = predicted if target is None else index[0]
    picture = unnormalise(tensor[0], info.preprocess.mean, info.preprocess.std)
    fig = Figure(figsize=(8, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.imshow(picture)
    left.set_title("what the model sees", fontsize=10)
    right.imshow(overlay(picture, maps[0]))
    right.set_title(textwrap.shorten(f"Grad-CAM for '{info.classes[explained]}'", 50), fontsize=10)
    for ax in (left, right):
        ax.set_axis_off()
    top = np.argsort(probs[0])[::-1][:3]
    fig.suptitle(image.name + "\n" + ", ".join(f"{info.classes[i]} {probs[0][i]:.0%}" for i in top),
                 fontsize=10)  # fmt: skip
    out = out or Path(f"{image.stem}-gradcam.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out, dpi=110, tight=False)  # fonts for any script, no glyph warnings
    return out


def match_class(target: str, classes: list[str]) -> str:
    """The model's class ``target`` names, ignoring case (``seahorse`` is ``Seahorse``)."""
    if target in classes:
        return target
    folded = [c for c in classes if c.casefold() == target.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise MarineLifeError(f"unknown class {target!r}", fix=f"choose from {', '.join(classes)}")


def _looks_like_model(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in (".json", ".onnx", ".safetensors")


def run_explain(model: Path, image: Path, *, out: Path | None = None,
                target: str | None = None) -> Path:  # fmt: skip
    model, image = Path(model), Path(image)
    # `explain photo.jpg runs/x`: say the order is wrong instead of "runs/x: image not found".
    if is_image_path(model) and model.is_file() and _looks_like_model(image):
        raise MarineLifeError(
            "the arguments look swapped: MODEL (a run folder or bundle) comes first, then IMAGE",
            path=model,
            fix=f"marinelife explain {image} {model}",
        )
    if image.is_dir():
        raise MarineLifeError("is a folder; explain takes one photo", path=image,
                              fix="pass one image file")  # fmt: skip
    if not image.is_file():
        raise MarineLifeError("image not found", path=image)
    path = explain_image(Path(model), Path(image), out, target)
    print(f"wrote {path}")
    return path
