"""The model bundle: ``*.safetensors`` + ``model.json``, everything predict/serve need, no pickle.

``model.json`` is untrusted input (bundles get passed around): every field is type-checked, and a
format version newer than this release understands is refused with a clear error.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marinelife._version import __version__
from marinelife.config import TrainConfig
from marinelife.data.preprocess import PreprocessConfig
from marinelife.errors import MarineLifeError
from marinelife.fileio import atomic_write_text, load_weights

BUNDLE_FORMAT = "marinelife-model"
BUNDLE_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS_FILE = "best.safetensors"
# Far above any real head (the original's widest layer is 1024), far below a memory bomb.
_MAX_HIDDEN = 65536
_HEAD_KEYS = ("head", "head_hidden", "head_dropout", "head_norm_first", "drop_rate")


@dataclass
class ModelInfo:
    architecture: str
    classes: list[str]
    preprocess: PreprocessConfig
    head: dict[str, Any]
    weights: str = WEIGHTS_FILE
    metrics: dict[str, Any] = field(default_factory=dict)
    rejection: dict[str, Any] = field(default_factory=dict)
    # Set on exported bundles: format, opset, quantization, source weights digest, verification.
    export: dict[str, Any] = field(default_factory=dict)
    recipe: str = "custom"
    marinelife_version: str = __version__
    created: str = ""

    @property
    def is_onnx(self) -> bool:
        return self.weights.endswith(".onnx")

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "marinelife_version": self.marinelife_version,
            "created": self.created
            or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "recipe": self.recipe,
            "architecture": self.architecture,
            "classes": self.classes,
            "head": self.head,
            "preprocess": self.preprocess.to_dict(),
            "weights": self.weights,
            "metrics": self.metrics,
            "rejection": self.rejection,
        }
        if self.export:
            data["export"] = self.export
        return data

    def model_config(self) -> TrainConfig:
        """A TrainConfig carrying just what is needed to rebuild the network."""
        config = TrainConfig(architecture=self.architecture, pretrained=False)
        for key in _HEAD_KEYS:
            setattr(config, key, self.head[key])
        config.input_size = self.preprocess.input_size  # ViTs are built for one size
        return config


def head_settings(config: TrainConfig) -> dict[str, Any]:
    return {key: getattr(config, key) for key in _HEAD_KEYS}


def _require(data: dict[str, Any], key: str, types: type | tuple[type, ...], path: Path) -> Any:
    value = data.get(key)
    if (
        not isinstance(value, types)
        or isinstance(value, bool)
        and bool not in (types if isinstance(types, tuple) else (types,))
    ):
        raise MarineLifeError(
            f"model.json field '{key}' is missing or of the wrong type", path=path
        )
    return value


def parse_model_json(data: Any, path: Path) -> ModelInfo:
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise MarineLifeError("not a marinelife model.json", path=path)
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MarineLifeError("model.json has no valid format_version", path=path)
    if version > BUNDLE_VERSION:
        raise MarineLifeError(
            f"bundle format version {version} is newer than this marinelife understands "
            f"({BUNDLE_VERSION})",
            path=path,
            fix="upgrade marinelife (pip install -U marinelife)",
        )
    classes = _require(data, "classes", list, path)
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise MarineLifeError("model.json 'classes' must be a non-empty list of names", path=path)
    if len(set(classes)) != len(classes):
        raise MarineLifeError("model.json 'classes' names a class twice", path=path)
    head = _require(data, "head", dict, path)
    _check_head(head, path)
    weights = _require(data, "weights", str, path)
    if Path(weights).name != weights:
        raise MarineLifeError("model.json 'weights' must be a file name beside it", path=path)
    try:
        preprocess = PreprocessConfig.from_dict(_require(data, "preprocess", dict, path))
    except MarineLifeError as exc:
        raise MarineLifeError(f"model.json 'preprocess' is invalid ({exc})", path=path) from exc
    return ModelInfo(
        architecture=_require(data, "architecture", str, path),
        classes=classes,
        preprocess=preprocess,
        head=head,
        weights=weights,
        metrics=data.get("metrics") if isinstance(data.get("metrics"), dict) else {},
        rejection=data.get("rejection") if isinstance(data.get("rejection"), dict) else {},
        export=data.get("export") if isinstance(data.get("export"), dict) else {},
        recipe=str(data.get("recipe", "custom")),
        marinelife_version=str(data.get("marinelife_version", "")),
        created=str(data.get("created", "")),
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_head(head: dict[str, Any], path: Path) -> None:
    """Types and ranges of the head settings: a hostile file must not size a huge layer."""

    def bad(key: str) -> MarineLifeError:
        return MarineLifeError(f"model.json head field '{key}' is invalid", path=path)

    if head.get("head") not in ("linear", "mlp"):
        raise bad("head")
    hidden, dropout = head.get("head_hidden"), head.get("head_dropout")
    if not isinstance(hidden, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= _MAX_HIDDEN for n in hidden
    ):
        raise bad("head_hidden")
    if not isinstance(dropout, list) or not all(_is_number(p) and 0 <= p < 1 for p in dropout):
        raise bad("head_dropout")
    if head["head"] == "mlp" and len(hidden) != len(dropout):
        raise bad("head_dropout")
    if not isinstance(head.get("head_norm_first"), bool):
        raise bad("head_norm_first")
    if not _is_number(head.get("drop_rate")) or not 0 <= head["drop_rate"] < 1:
        raise bad("drop_rate")


def write_model_json(info: ModelInfo, folder: Path) -> Path:
    path = Path(folder) / MODEL_JSON
    atomic_write_text(path, json.dumps(info.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def find_model_json(model: Path) -> Path:
    """A run folder, a bundle folder, ``model.json`` itself, or a weights file beside it."""
    model = Path(model)
    if not model.exists():
        raise MarineLifeError("does not exist", path=model, fix="pass a run folder or model.json")
    candidate = model / MODEL_JSON if model.is_dir() else model.with_name(MODEL_JSON)
    if model.is_file() and model.name.endswith(".json"):
        candidate = model
    if not candidate.is_file():
        raise MarineLifeError(
            "no model.json found", path=model, fix="pass a run folder from `marinelife train`"
        )
    return candidate


def read_model_info(model: Path) -> tuple[ModelInfo, Path]:
    path = find_model_json(model)
    fix = (
        "copy model.json again from the run folder it came from (or re-export it: "
        "`marinelife export RUN`); the file is plain JSON written by `marinelife train`"
    )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MarineLifeError("model.json is not UTF-8 text", path=path, fix=fix) from exc
    except OSError as exc:
        raise MarineLifeError(f"cannot read model.json ({exc.strerror or exc})", path=path) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # "Expecting ',' delimiter: line 30 column 1" means little; say what probably happened.
        ended = exc.pos >= len(text.rstrip())
        what = "ends in the middle (truncated?)" if ended else "is not valid JSON"
        raise MarineLifeError(
            f"model.json {what}: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            path=path,
            fix=fix,
        ) from exc
    except (ValueError, RecursionError) as exc:  # deep nesting: RecursionError
        raise MarineLifeError(f"unreadable model.json ({exc})", path=path, fix=fix) from exc
    return parse_model_json(data, path), path.parent


def load_bundle(model: Path):
    """Rebuild the network from ``model.json`` and load its safetensors weights (eval mode)."""
    from marinelife.models import build_classifier
    from marinelife.models.backbones import check_architecture

    info, folder = read_model_info(model)
    if info.is_onnx:
        raise MarineLifeError(
            "is an exported ONNX bundle; PyTorch cannot load it",
            path=folder / info.weights,
            fix="use the ONNX Runtime backend (--backend onnx), or pass the run folder",
        )
    try:
        check_architecture(info.architecture)
    except MarineLifeError as exc:
        raise MarineLifeError(
            f"model.json 'architecture' is invalid ({exc})", path=folder / MODEL_JSON
        ) from exc
    network = build_classifier(info.model_config(), len(info.classes), pretrained=False)
    weights_path = folder / info.weights
    state = load_weights(weights_path)
    mismatch = _class_count_mismatch(network, state, len(info.classes))
    if mismatch is not None:
        raise MarineLifeError(
            f"the weights have {mismatch} output classes, model.json lists {len(info.classes)}",
            path=weights_path,
            fix="keep model.json and the weights of the same run together (classes.json and "
            "model.json in the run folder name the classes the run was trained on)",
        )
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MarineLifeError(
            "weights do not match the architecture in model.json", path=weights_path
        ) from exc
    network.eval()
    return network, info


def _class_count_mismatch(network: Any, state: dict[str, Any], classes: int) -> int | None:
    """The weights' class count when it differs from ``classes``: the rows of the final layer.

    The final layer is the network's last 2-D weight in module order (heads end in a Linear).
    The file's own key order says nothing: safetensors sorts keys, so ``head.8`` follows
    ``head.16`` in a deep head.
    """
    own = network.state_dict()
    names = [k for k, v in own.items() if k.endswith("weight") and v.ndim == 2]
    if not names or getattr(state.get(names[-1]), "ndim", 0) != 2:
        return None
    rows = int(state[names[-1]].shape[0])
    return rows if rows != classes else None
