"""Config: defaults, recipes, `--set` coercion, unknown-key suggestions, validation, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from marinelife.config import (
    DENOISE_FILTERS,
    AugmentConfig,
    DenoiseConfig,
    TrainConfig,
    available_recipes,
    config_from_dict,
    load_config,
    load_recipe_data,
    parse_overrides,
    resolve_config,
    save_config,
    valid_keys,
)
from marinelife.errors import MarineLifeError


def override(*pairs: str) -> TrainConfig:
    return resolve_config(overrides=list(pairs))


def config_error(*pairs: str) -> str:
    with pytest.raises(MarineLifeError) as info:
        override(*pairs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# defaults


def test_no_recipe_gives_defaults() -> None:
    config = resolve_config()
    assert config == TrainConfig()
    assert config.recipe == "custom"
    assert config.augment == AugmentConfig()
    assert config.denoise == DenoiseConfig()
    assert resolve_config(None, [], {}) == TrainConfig()


def test_defaults_are_valid_and_independent() -> None:
    a, b = TrainConfig(), TrainConfig()
    a.validate()
    a.head_hidden.append(7)
    a.denoise.params["d"] = 3
    assert b.head_hidden == [1024, 512, 256] and b.denoise.params == {}


def test_valid_keys_are_dotted_for_sections() -> None:
    keys = valid_keys()
    assert "epochs" in keys and "augment.rotation" in keys and "denoise.params" in keys
    assert "augment" not in keys and "denoise" not in keys
    assert len(keys) == len(set(keys))


# ---------------------------------------------------------------------------------------------
# --set overrides of every type


@pytest.mark.parametrize(
    ("pair", "key", "expected"),
    [
        ("epochs=3", "epochs", 3),
        ("epochs=3.0", "epochs", 3),
        ("batch_size= 8 ", "batch_size", 8),
        ("lr=0.01", "lr", 0.01),
        ("lr=1e-3", "lr", 1e-3),  # YAML 1.1 reads this as a string
        ("lr=2", "lr", 2.0),
        ("pretrained=true", "pretrained", True),
        ("pretrained=false", "pretrained", False),
        ("pretrained=yes", "pretrained", True),
        ("pretrained=no", "pretrained", False),
        ("pretrained=True", "pretrained", True),
        ("pretrained=1", "pretrained", True),
        ("pretrained=0", "pretrained", False),
        ("freeze_backbone=off", "freeze_backbone", False),
        ("head_hidden=[1,2]", "head_hidden", [1, 2]),
        ("head_hidden=1,2", "head_hidden", [1, 2]),
        ("head_hidden=[]", "head_hidden", []),
        ("head_dropout=[0.1, 0.2, 0.3]", "head_dropout", [0.1, 0.2, 0.3]),
        ("architecture=resnet18", "architecture", "resnet18"),
        ("description=a run with spaces", "description", "a run with spaces"),
        ("description=", "description", ""),
        ("weights=null", "weights", None),
        ("weights=/tmp/w.safetensors", "weights", "/tmp/w.safetensors"),
        ("head=mlp", "head", "mlp"),
    ],
)
def test_set_overrides_are_coerced(pair: str, key: str, expected: object) -> None:
    value = getattr(override(pair), key)
    assert value == expected
    assert type(value) is type(expected)


def test_set_nested_sections() -> None:
    config = override(
        "augment.rotation=20",
        "augment.brightness=[0.8,1.2]",
        "augment.hflip=no",
        "denoise.name=median",
        "denoise.params={d: 5}",
    )
    assert config.augment.rotation == 20.0 and isinstance(config.augment.rotation, float)
    assert config.augment.brightness == (0.8, 1.2)
    assert isinstance(config.augment.brightness, tuple)
    assert config.augment.hflip is False
    assert config.augment.shift == AugmentConfig().shift  # untouched siblings keep defaults
    assert config.denoise.name == "median"
    assert config.denoise.params == {"d": 5.0}


def test_tuple_from_comma_list() -> None:
    assert override("augment.brightness=0.9,1.1").augment.brightness == (0.9, 1.1)


def test_later_set_wins() -> None:
    assert override("epochs=2", "epochs=5").epochs == 5
    assert override("augment=5", "augment.rotation=7").augment.rotation == 7.0


def test_parse_overrides_nesting() -> None:
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e=[1, 2]"]) == {
        "a": {"b": {"c": 1, "d": "x"}},
        "e": [1, 2],
    }


@pytest.mark.parametrize("pair", ["epochs", "", "epochs:3"])
def test_set_without_equals(pair: str) -> None:
    assert "key=value" in config_error(pair)


@pytest.mark.parametrize(
    ("pair", "suggestion"),
    [
        ("epoch=3", "epochs"),
        ("augment.rotaton=3", "augment.rotation"),
        ("lr_finetune=1e-5", "finetune_lr"),
        ("denoise.nme=median", "denoise.name"),
    ],
)
def test_unknown_key_suggests_closest(pair: str, suggestion: str) -> None:
    message = config_error(pair)
    assert pair.split("=")[0] in message
    assert f"did you mean '{suggestion}'?" in message


def test_unknown_key_without_close_match_points_to_key_list() -> None:
    message = config_error("zzzzqqqq=1")
    assert "zzzzqqqq" in message and "--keys" in message
    # Only close matches are suggested: "nosuch" is not a misspelling of "epochs".
    assert "did you mean" not in config_error("nosuch=1")


@pytest.mark.parametrize(
    "pair",
    [
        "epochs=abc",
        "epochs=1.5",
        "epochs=true",
        "epochs=null",
        "epochs=[1]",
        "lr=fast",
        "lr=nan",
        "lr=.inf",
        "freeze_backbone=maybe",
        "freeze_backbone=2",
        "head_hidden=[a]",
        "head_hidden=7x",
        "head_dropout=[0.1, x]",
        "augment.brightness=[1, 2, 3]",
        "augment.brightness=0.8",
        "augment.rotation=left",
        "augment.rotation.x=1",
        "denoise.params=5",
        "denoise.params={d: x}",
        "architecture=[a, b]",
        "architecture={a: 1}",
    ],
)
def test_wrong_type_names_the_key(pair: str) -> None:
    key = pair.split("=")[0].split(".x")[0]
    assert key in config_error(pair)


def test_section_must_be_a_mapping() -> None:
    assert "augment" in config_error("augment=5")
    assert "denoise" in config_error("denoise=median")


@pytest.mark.parametrize(
    "pair",
    [
        "head=cnn",
        "optimizer=sgd",
        "monitor=acc",
        "finetune_monitor=loss",
        "class_weights=auto",
        "sampler=random",
        "device=tpu",
        "denoise.name=wiener",
        "augment.fill=mirror",
    ],
)
def test_invalid_choice(pair: str) -> None:
    key, value = pair.split("=")
    message = config_error(pair)
    assert key in message and value in message


@pytest.mark.parametrize("name", DENOISE_FILTERS)
def test_every_denoise_filter_is_accepted(name: str) -> None:
    assert override(f"denoise.name={name}").denoise.name == name


@pytest.mark.parametrize(
    "pair",
    [
        "epochs=0",
        "epochs=-1",
        "batch_size=0",
        "lr=0",
        "lr=-0.1",
        "finetune_fraction=0",
        "finetune_fraction=1.5",
        "label_smoothing=1.5",
        "label_smoothing=-0.1",
        "drop_rate=1",
        "head_dropout=[0.5, 0.4, 1.0]",
        "min_lr_ratio=2",
        "input_size=-224",
        "patience=-1",
        "finetune_epochs=-1",
        "weight_decay=-0.01",
        "feature_cache_views=-2",
        "augment.brightness=[1.2, 0.8]",
        "augment.brightness=[0, 1]",
        "augment.zoom=1",
        "augment.shift=-0.1",
    ],
)
def test_out_of_range_values(pair: str) -> None:
    assert pair.split("=")[0].split("[")[0] in config_error(pair)


def test_mlp_head_lengths_must_match() -> None:
    assert "head_hidden" in config_error("head=mlp", "head_hidden=[10, 20]")
    ok = override("head=mlp", "head_hidden=[10, 20]", "head_dropout=[0.1, 0.2]")
    assert ok.head_hidden == [10, 20]
    # A linear head ignores the MLP lists, so they need not match.
    assert override("head=linear", "head_hidden=[10]").head == "linear"


def test_extra_applies_before_set() -> None:
    config = resolve_config(extra={"epochs": 4, "pretrained": False}, overrides=["epochs=6"])
    assert config.epochs == 6 and config.pretrained is False
    with pytest.raises(MarineLifeError, match="command line"):
        resolve_config(extra={"epoch": 4})


# ---------------------------------------------------------------------------------------------
# recipes


def test_recipe_yaml_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 2\naugment:\n  rotation: 5\ndenoise: {name: gaussian}\n")
    config = resolve_config(str(path), overrides=["epochs=3"])
    assert config.recipe == "mine"
    assert config.epochs == 3  # --set wins over the recipe
    assert config.augment.rotation == 5.0
    assert config.denoise.name == "gaussian"


def test_recipe_file_with_unknown_key_names_file_and_suggests(tmp_path: Path) -> None:
    path = tmp_path / "typo.yml"
    path.write_text("epohcs: 2\n")
    with pytest.raises(MarineLifeError) as info:
        resolve_config(str(path))
    assert str(path) in str(info.value) and "epochs" in str(info.value)


@pytest.mark.parametrize("text", ["[1, 2]", "epochs: [unclosed", "just a string"])
def test_recipe_file_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(MarineLifeError) as info:
        resolve_config(str(path))
    assert str(path) in str(info.value)


def test_empty_recipe_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert dataclasses.replace(resolve_config(str(path)), recipe="custom") == TrainConfig()


def test_missing_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(MarineLifeError) as info:
        load_recipe_data(str(path))
    assert str(path) in str(info.value)


def test_unknown_recipe_name() -> None:
    with pytest.raises(MarineLifeError, match="unknown recipe 'no-such-recipe-xyz'"):
        resolve_config("no-such-recipe-xyz")


def test_misspelled_recipe_name_suggests() -> None:
    names = available_recipes()
    if not names:
        pytest.skip("no recipes shipped yet")
    with pytest.raises(MarineLifeError, match=f"did you mean '{names[0]}'"):
        resolve_config(names[0] + "x")


def test_available_recipes_sorted_names() -> None:
    names = available_recipes()
    assert names == sorted(names)
    assert all(not n.endswith(".yaml") for n in names)


@pytest.mark.parametrize("name", available_recipes())
def test_every_shipped_recipe_resolves(name: str, tmp_path: Path) -> None:
    config = resolve_config(name)
    assert config.recipe == name
    assert config.description, "every shipped recipe should say what it is"
    # A shipped recipe sets every key it means explicitly, so re-resolving is stable.
    assert resolve_config(name) == config
    # ... and survives the run-folder round trip.
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    # `--set` still works on top of it.
    assert resolve_config(name, overrides=["epochs=1"]).epochs == 1


# ---------------------------------------------------------------------------------------------
# save / load / from dict


def test_save_load_round_trip(tmp_path: Path) -> None:
    config = override(
        "epochs=7",
        "head=mlp",
        "head_hidden=[64, 32]",
        "head_dropout=[0.2, 0.1]",
        "augment.brightness=[0.6, 1.4]",
        "denoise.name=bilateral",
        "denoise.params={d: 7, sigma_color: 50}",
        "weights=null",
        "description=Méduse 海月 — unicode",
    )
    path = tmp_path / "config.yaml"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded == config
    assert isinstance(loaded.augment.brightness, tuple)
    # Plain YAML: readable, no Python tags, unicode kept.
    text = path.read_text(encoding="utf-8")
    assert "!!python" not in text and "海月" in text
    assert yaml.safe_load(text)["augment"]["brightness"] == [0.6, 1.4]


def test_default_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    save_config(TrainConfig(), path)
    assert load_config(path) == TrainConfig()


def test_load_config_missing(tmp_path: Path) -> None:
    with pytest.raises(MarineLifeError) as info:
        load_config(tmp_path / "config.yaml")
    assert str(tmp_path / "config.yaml") in str(info.value)


def test_load_config_rejects_edited_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    save_config(TrainConfig(), path)
    path.write_text(path.read_text().replace("epochs: 10", "epochs: ten"))
    with pytest.raises(MarineLifeError, match="epochs"):
        load_config(path)


def test_config_from_dict() -> None:
    assert config_from_dict({}) == TrainConfig()
    config = config_from_dict({"epochs": 2, "augment": {"rotation": 3}})
    assert config.epochs == 2 and config.augment.rotation == 3.0


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"epoch": 2}, "epoch"),
        ({"augment": {"rotaton": 3}}, "augment.rotaton"),
        ({"denoise": {"name": "none", "extra": 1}}, "denoise.extra"),
        ({1: 2}, "1"),
    ],
)
def test_config_from_dict_rejects_unknown_keys(data: dict, key: str) -> None:
    with pytest.raises(MarineLifeError) as info:
        config_from_dict(data, where="runs/x/config.yaml")
    assert f"'{key}'" in str(info.value) and "runs/x/config.yaml" in str(info.value)


def test_config_from_dict_validates() -> None:
    with pytest.raises(MarineLifeError, match="head"):
        config_from_dict({"head": "cnn"})
