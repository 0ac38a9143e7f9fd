"""The model bundle: safetensors + validated model.json, no pickle, clear version errors."""

from __future__ import annotations

import json

import pytest
import torch

from marinelife.config import TrainConfig
from marinelife.data.preprocess import preprocess_config_for_model
from marinelife.errors import MarineLifeError
from marinelife.fileio import save_weights
from marinelife.models import build_classifier
from marinelife.models.bundle import (
    ModelInfo,
    head_settings,
    load_bundle,
    read_model_info,
    write_model_json,
)


@pytest.fixture
def bundle(tmp_path):
    config = TrainConfig(architecture="mobilenetv2_050", pretrained=False, head="mlp",
                         head_hidden=[16], head_dropout=[0.1])  # fmt: skip
    model = build_classifier(config, 3).eval()
    pre = preprocess_config_for_model(model.backbone, input_size=32)
    save_weights(model.state_dict(), tmp_path / "best.safetensors")
    info = ModelInfo(architecture=config.architecture, classes=["a", "b", "c"], preprocess=pre,
                     head=head_settings(config))  # fmt: skip
    write_model_json(info, tmp_path)
    return tmp_path, model


def test_round_trip_gives_identical_predictions(bundle):
    folder, model = bundle
    x = torch.randn(2, 3, 32, 32)
    reloaded, info = load_bundle(folder)
    assert info.classes == ["a", "b", "c"]
    with torch.no_grad():
        assert torch.equal(model(x), reloaded(x))
    # The bundle loads from the json path and from the weights path too.
    assert read_model_info(folder / "model.json")[0].architecture == "mobilenetv2_050"
    assert read_model_info(folder / "best.safetensors")[0].classes == ["a", "b", "c"]


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"format_version": 99}, "newer"),
        ({"format": "something-else"}, "not a marinelife"),
        ({"classes": "abc"}, "classes"),
        ({"classes": []}, "classes"),
        ({"weights": "../../etc/passwd"}, "weights"),
        ({"preprocess": {"input_size": "huge"}}, "preprocess"),
        ({"head": {"head": "mlp"}}, "head"),
        ({"architecture": 5}, "architecture"),
    ],
)
def test_hostile_or_newer_model_json_is_refused(bundle, edit, message):
    folder, _ = bundle
    data = json.loads((folder / "model.json").read_text())
    data.update(edit)
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(MarineLifeError, match=message):
        load_bundle(folder)


def test_missing_or_mismatched_weights_are_named(bundle):
    folder, _ = bundle
    torch.save({"x": 1}, folder / "other.pth")
    save_weights({"w": torch.ones(2)}, folder / "best.safetensors")
    with pytest.raises(MarineLifeError, match="do not match"):
        load_bundle(folder)
    (folder / "best.safetensors").unlink()
    with pytest.raises(MarineLifeError, match="not found"):
        load_bundle(folder)
    with pytest.raises(MarineLifeError, match="does not exist"):
        load_bundle(folder / "nope")


def test_wrong_class_count_is_named_as_such(bundle):
    folder, _ = bundle
    data = json.loads((folder / "model.json").read_text())
    data["classes"] = ["a", "b"]  # the weights were trained for three
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(MarineLifeError, match="weights have 3 output classes, model.json lists 2"):
        load_bundle(folder)


def test_a_deep_head_loads_and_is_still_checked(tmp_path):
    # Four hidden layers put the final Linear at head.16, which a safetensors file (keys sorted)
    # stores before head.8: the class check must find the final layer by module order.
    config = TrainConfig(architecture="mobilenetv2_050", pretrained=False, head="mlp",
                         head_hidden=[16, 12, 8, 6], head_dropout=[0.1] * 4)  # fmt: skip
    model = build_classifier(config, 3).eval()
    save_weights(model.state_dict(), tmp_path / "best.safetensors")
    info = ModelInfo(architecture=config.architecture, classes=["a", "b", "c"],
                     preprocess=preprocess_config_for_model(model.backbone, input_size=32),
                     head=head_settings(config))  # fmt: skip
    write_model_json(info, tmp_path)
    reloaded, _ = load_bundle(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))
    data = json.loads((tmp_path / "model.json").read_text())
    data["classes"] = ["a", "b", "c", "d"]
    (tmp_path / "model.json").write_text(json.dumps(data))
    with pytest.raises(MarineLifeError, match="weights have 3 output classes, model.json lists 4"):
        load_bundle(tmp_path)


def test_truncated_model_json_says_so_and_how_to_fix(bundle):
    folder, _ = bundle
    text = (folder / "model.json").read_text()
    (folder / "model.json").write_text(text[: len(text) // 2])
    with pytest.raises(MarineLifeError, match=r"ends in the middle \(truncated\?\)") as info:
        read_model_info(folder)
    assert "line " in str(info.value) and "copy model.json again" in str(info.value)
    (folder / "model.json").write_text(text.replace('"classes"', "classes", 1))
    with pytest.raises(MarineLifeError, match="is not valid JSON"):
        read_model_info(folder)
