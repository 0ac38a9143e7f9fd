"""Typed run configuration: dataclasses, YAML recipes shipped in the package, `--set` overrides.

Unknown keys are rejected with the closest valid key suggested (as Ultralytics does), values are
coerced to the field's type, and the resolved config is saved with every run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from marinelife.errors import MarineLifeError

DENOISE_FILTERS = ("none", "bilateral", "median", "gaussian", "nlm")
ENHANCE_FILTERS = ("none", "greyworld", "clahe", "redcomp")


@dataclass
class DenoiseConfig:
    """A denoising filter applied identically at train, eval and predict time."""

    name: str = "none"
    # Filter parameters; unset ones take the filter's defaults (bilateral d=9, σ=75/75, ...).
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class EnhanceConfig:
    """Underwater colour/contrast correction (data/enhance.py), applied before denoise."""

    name: str = "none"
    # clahe: clip_limit=2.0, tile=8; redcomp: alpha=1.0, greyworld=1; greyworld: no params.
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Train-time augmentation (Albumentations). Defaults are the original two-stage script's."""

    rotation: float = 25.0  # degrees, ±
    shift: float = 0.25  # fraction of width/height, ±
    shear: float = 0.15  # Keras-style shear intensity (radians)
    zoom: float = 0.25  # ± scale change
    hflip: bool = True
    vflip: bool = True
    brightness: tuple[float, float] = (0.7, 1.3)
    channel_shift: float = 0.1  # fraction of 255, per channel
    fill: str = "reflect"  # border fill: reflect | nearest | constant
    enabled: bool = True


@dataclass
class TrainConfig:
    """Everything one training run needs. Stage 2 runs when ``finetune_epochs > 0``."""

    recipe: str = "custom"
    description: str = ""
    # model
    architecture: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None  # a .safetensors/.pth file with backbone weights
    head: str = "linear"  # linear | mlp
    head_hidden: list[int] = field(default_factory=lambda: [1024, 512, 256])
    head_dropout: list[float] = field(default_factory=lambda: [0.5, 0.4, 0.3])
    head_norm_first: bool = True  # BatchNorm before the activation (False: LeakyReLU then BN)
    head_l2: float = 1e-4  # L2 penalty on head kernels (Keras kernel_regularizer)
    drop_rate: float = 0.0  # dropout before a linear head
    # data
    input_size: int = 0  # 0: the backbone's own default (timm data config)
    batch_size: int = 16
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    # stage 1 (or the only stage)
    freeze_backbone: bool = True
    epochs: int = 10
    optimizer: str = "adamw"  # adamw | adam
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.01  # cosine decays to lr * min_lr_ratio
    label_smoothing: float = 0.1
    monitor: str = "val_acc"  # val_acc | val_loss | val_f1
    patience: int = 0  # 0: no early stopping
    # stage 2: fine-tune the top of the backbone
    finetune_epochs: int = 0
    finetune_lr: float = 2e-5
    finetune_fraction: float = 0.35  # fraction of the backbone's blocks unfrozen, from the top
    finetune_patience: int = 0
    finetune_monitor: str = "val_acc"
    finetune_warmup_epochs: float = 0.0
    finetune_batchnorm: bool = False  # False: backbone BatchNorm stays frozen (eval mode)
    # run
    seed: int = 42
    deterministic: bool = False
    workers: int = -1  # -1: sized to the machine
    threads: int = 0  # 0: torch default
    feature_cache: bool = True
    feature_cache_views: int = -1  # augmented views cached per photo (+ a clean one); -1: by data
    # fine-tuning: cache activations at the freeze boundary up to this many MB
    boundary_cache_mb: int = 4096
    # Frozen passes that build those caches: auto = ONNX Runtime on a CPU in fp32 (checked
    # against PyTorch first, several times faster there), else PyTorch | torch = always PyTorch.
    feature_engine: str = "auto"
    class_weights: str = "none"  # none | balanced
    sampler: str = "default"  # default | balanced
    device: str = "auto"
    channels_last: bool = True  # NHWC memory format: ~1.6x faster convolutions on CPU
    amp: str = "none"  # mixed precision: none | bf16 | fp16 (fp16: CUDA only, loss-scaled)
    bf16: bool = False  # alias of amp=bf16 (older recipes); bfloat16 autocast on CPU or GPU
    compile: bool = False  # torch.compile the training step (opt-in: compile time up front)
    skip_nonfinite: bool = False
    report: bool = True  # write report.html + figures/ at the end of training

    def validate(self) -> None:
        choices = {
            "head": ("linear", "mlp"), "optimizer": ("adamw", "adam"),
            "monitor": ("val_acc", "val_loss", "val_f1"),
            "finetune_monitor": ("val_acc", "val_loss", "val_f1"),
            "class_weights": ("none", "balanced"), "sampler": ("default", "balanced"),
            "device": ("auto", "cpu", "cuda", "mps"), "amp": ("none", "bf16", "fp16"),
            "feature_engine": ("auto", "torch"), "augment.fill": ("reflect", "nearest", "constant"),
            "denoise.name": DENOISE_FILTERS, "enhance.name": ENHANCE_FILTERS,
        }  # fmt: skip
        for key, allowed in choices.items():
            value = operator.attrgetter(key)(self)  # dotted keys reach into sections
            if value not in allowed:
                close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
                raise MarineLifeError(
                    f"config: {key}={value!r} is not one of {', '.join(allowed)}",
                    fix=f"did you mean '{close[0]}'?" if close else None,
                )
        if self.bf16:
            # `bf16: true` predates `amp`; it means amp=bf16 and must not contradict it.
            if self.amp == "fp16":
                raise MarineLifeError(
                    "config: bf16=true contradicts amp=fp16",
                    fix="set only amp (--amp bf16|fp16|none); bf16 is its older alias",
                )
            self.amp = "bf16"
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise MarineLifeError("config: epochs, batch_size and lr must be positive")
        if not 0.0 < self.finetune_fraction <= 1.0:
            raise MarineLifeError("config: finetune_fraction must be in (0, 1]")
        self._validate_ranges()
        if self.head == "mlp" and len(self.head_hidden) != len(self.head_dropout):
            raise MarineLifeError("config: head_hidden and head_dropout need the same length")

    def _validate_ranges(self) -> None:
        # Values that would otherwise fail (or silently misbehave) deep inside training.
        non_negative = (
            "input_size", "patience", "finetune_epochs", "finetune_patience",
            "threads", "weight_decay", "warmup_epochs",
            "finetune_warmup_epochs", "head_l2",
        )  # fmt: skip
        for key in non_negative:
            if getattr(self, key) < 0:
                raise MarineLifeError(f"config: {key}={getattr(self, key)!r} must be >= 0")
        fractions = {"label_smoothing": self.label_smoothing, "drop_rate": self.drop_rate}
        fractions.update({f"head_dropout[{i}]": p for i, p in enumerate(self.head_dropout)})
        for key, value in fractions.items():
            if not 0.0 <= value < 1.0:
                raise MarineLifeError(f"config: {key}={value!r} must be in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise MarineLifeError(f"config: min_lr_ratio={self.min_lr_ratio!r} must be in [0, 1]")
        if self.feature_cache_views < -1:
            raise MarineLifeError("config: feature_cache_views must be >= 0, or -1 (by data size)")
        if self.finetune_epochs > 0 and self.finetune_lr <= 0:
            raise MarineLifeError("config: finetune_lr must be positive")
        # Same limits as data/transforms.py, checked here so a bad --set fails before training.
        for key in ("zoom", "shift"):
            if not 0.0 <= getattr(self.augment, key) < 1.0:
                raise MarineLifeError(f"config: augment.{key} must be in [0, 1)")
        low, high = self.augment.brightness
        if not 0.0 < low <= high:
            raise MarineLifeError(
                f"config: augment.brightness={[low, high]} must satisfy 0 < low <= high"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# keys, coercion, overrides


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    """All settable keys, dotted for nested sections (``augment.rotation``)."""
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(valid_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def _unknown_key_error(key: str, where: str) -> MarineLifeError:
    close = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else "see `marinelife recipes --keys`"
    return MarineLifeError(f"{where}: unknown config key '{key}'", fix=hint)


def _coerce(value: Any, tp: Any, key: str, where: str = "config") -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, where)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            # YAML reads `--set pretrained=1` as the int 1; accept it like the string "1".
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            # nan/inf pass every `<= 0` check and would only fail deep inside training.
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        if tp is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
            if not isinstance(value, list | tuple):
                raise ValueError(value)
            items = [_coerce(v, args[0], key, where) for v in value]
            if origin is tuple:
                if len(items) != len(args):
                    raise ValueError(value)
                return tuple(items)
            return items
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return {str(k): _coerce(v, args[1], key, where) for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise MarineLifeError(f"{where}: {key}={value!r} is not a valid {_type_name(tp)}") from exc
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _apply(obj: Any, data: dict[str, Any], where: str, prefix: str = "") -> None:
    types_ = _field_types(type(obj))
    for key, value in data.items():
        full = prefix + str(key)
        if key not in types_:
            raise _unknown_key_error(full, where)
        tp = types_[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise MarineLifeError(f"{where}: '{full}' must be a mapping of its keys")
            _apply(getattr(obj, key), value, where, prefix=full + ".")
        else:
            setattr(obj, key, _coerce(value, tp, full, where))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=1", "augment.rotation=20"]`` → nested dict, values parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise MarineLifeError(f"--set {pair!r}: expected key=value (e.g. --set epochs=1)")
        key, raw = pair.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            # A later `augment.rotation=20` after `augment=5` wins instead of crashing.
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return nested


# ---------------------------------------------------------------------------------------------
# recipes


def available_recipes() -> list[str]:
    folder = resources.files("marinelife") / "recipes"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise MarineLifeError(f"{where}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise MarineLifeError(f"{where}: must be a mapping of config keys")
    return data


def load_recipe_data(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """A recipe by name (shipped) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise MarineLifeError("recipe file not found", path=path)
        return path.stem, _read_yaml(path.read_text(encoding="utf-8"), str(path))
    names = available_recipes()
    if name_or_path not in names:
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose from {', '.join(names)}"
        raise MarineLifeError(f"unknown recipe '{name_or_path}'", fix=hint)
    text = (resources.files("marinelife") / "recipes" / f"{name_or_path}.yaml").read_text("utf-8")
    return name_or_path, _read_yaml(text, f"recipe {name_or_path}")


def resolve_config(
    recipe: str | None = None,
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    *,
    where: str = "command line",
) -> TrainConfig:
    """Defaults ← recipe YAML ← ``extra`` (CLI flags, API keywords; checked exactly like
    ``--set``, named ``where`` in errors) ← ``--set`` overrides."""
    config = TrainConfig()
    if recipe:
        name, data = load_recipe_data(recipe)
        # Errors name the YAML file the user wrote, or the shipped recipe by name.
        is_file = Path(recipe).suffix in (".yaml", ".yml")
        _apply(config, data, recipe if is_file else f"recipe {name}")
        config.recipe = name
    if extra:
        _apply(config, extra, where)
    if overrides:
        _apply(config, parse_overrides(overrides), "--set")
    config.validate()
    return config


def config_from_dict(data: dict[str, Any], where: str = "config.yaml") -> TrainConfig:
    config = TrainConfig()
    _apply(config, data, where)
    config.validate()
    return config


def save_config(config: TrainConfig, path: Path) -> None:
    text = yaml.safe_dump(_plain(config.to_dict()), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")


def load_config(path: Path) -> TrainConfig:
    if not path.is_file():
        raise MarineLifeError("run config not found", path=path, fix="is this a run folder?")
    return config_from_dict(_read_yaml(path.read_text(encoding="utf-8"), str(path)), str(path))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
