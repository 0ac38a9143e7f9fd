"""No code runs from a file: crafted pickles are refused by every loader, and a hostile or broken
``model.json`` is rejected with an error naming it before anything is built from it."""

from __future__ import annotations

import builtins
import copy
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from marinelife import fileio
from marinelife.errors import MarineLifeError
from marinelife.fit import checkpoint as ck
from marinelife.models.bundle import load_bundle, read_model_info
from marinelife.models.weight_files import read_weights_file


class RunsCode:
    """Unpickling this runs ``payload(*args)``: what a hostile checkpoint would do."""

    def __init__(self, payload, args):
        self.payload, self.args = payload, args

    def __reduce__(self):
        return (self.payload, self.args)


def _payloads(marker: Path) -> dict[str, RunsCode]:
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    return {
        "exec": RunsCode(builtins.exec, (code,)),
        "os.system": RunsCode(os.system, (f"touch '{marker}'",)),
        "open": RunsCode(builtins.open, (str(marker), "w")),
    }


def _write_evil(path: Path, payload: RunsCode, container: str) -> None:
    """A hostile file shaped like what the loader expects, in one of pickle's containers."""
    state = {"epoch": 1, "model": {"w": torch.ones(2)}, "state_dict": {"w": torch.ones(2)}}
    state["evil"] = payload
    if container == "torch-zip":
        torch.save(state, path)
    elif container == "torch-legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif container == "raw-pickle":
        path.write_bytes(pickle.dumps(state, protocol=2))
    elif container == "pickle-protocol-0":
        path.write_bytes(pickle.dumps(payload, protocol=0))
    else:
        raise AssertionError(container)


CONTAINERS = ["torch-zip", "torch-legacy", "raw-pickle", "pickle-protocol-0"]
PAYLOADS = ["exec", "os.system", "open"]


def _loaders(folder: Path) -> dict:
    """Every function that reads a checkpoint or weights file, with the name it is given."""
    from marinelife.fit import feature_cache  # noqa: F401 - its np.load is covered below

    return {
        "load_training_state": ("last.ckpt", ck.load_training_state),
        "read_weights_file(.pth)": ("backbone.pth", read_weights_file),
        "read_weights_file(.pt)": ("backbone.pt", read_weights_file),
        "read_weights_file(.bin)": ("pytorch_model.bin", read_weights_file),
        "read_weights_file(.safetensors)": ("pickled.safetensors", read_weights_file),
        "load_weights(.safetensors)": ("best.safetensors", fileio.load_weights),
    }


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize(
    "loader",
    [
        "load_training_state",
        "read_weights_file(.pth)",
        "read_weights_file(.pt)",
        "read_weights_file(.bin)",
        "read_weights_file(.safetensors)",
        "load_weights(.safetensors)",
    ],
)
def test_every_loader_refuses_code_carrying_pickles(tmp_path, loader, payload, container):
    marker = tmp_path / "pwned"
    name, load = _loaders(tmp_path)[loader]
    path = tmp_path / name
    _write_evil(path, _payloads(marker)[payload], container)
    with pytest.raises(MarineLifeError) as info:
        load(path)
    assert name in str(info.value)
    assert not marker.exists()


def test_fallback_checkpoint_is_held_to_the_same_rule(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "last.ckpt").write_bytes(b"garbage")
    _write_evil(tmp_path / "last.prev.ckpt", _payloads(marker)["exec"], "torch-zip")
    with pytest.raises(MarineLifeError, match="last.prev.ckpt"):
        ck.load_training_state(tmp_path / "last.ckpt")
    assert not marker.exists()


def test_payloads_are_live(tmp_path):
    """Control: the same files DO run code when unpickled unsafely, so the refusals above are
    real refusals and not a payload that would have done nothing anyway."""
    for i, payload in enumerate(PAYLOADS):
        for container in ("torch-zip", "raw-pickle"):
            marker = tmp_path / f"pwned-{i}-{container}"
            path = tmp_path / f"evil-{i}-{container}"
            _write_evil(path, _payloads(marker)[payload], container)
            if container == "torch-zip":
                torch.load(path, weights_only=False)
            else:
                pickle.loads(path.read_bytes())
            assert marker.exists(), (payload, container)


# ---------------------------------------------------------------------------------------------
# bundles: model.json + weights


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A valid bundle of timm's tiny test net (loads in well under a second)."""
    from marinelife.config import TrainConfig
    from marinelife.data.preprocess import preprocess_config_for_model
    from marinelife.models import build_classifier
    from marinelife.models.bundle import ModelInfo, head_settings, write_model_json

    config = TrainConfig(architecture="test_efficientnet", pretrained=False)
    model = build_classifier(config, 3)
    folder = tmp_path / "bundle"
    fileio.save_weights(model.state_dict(), folder / "best.safetensors")
    info = ModelInfo(
        architecture=config.architecture,
        classes=["crab", "eel", "ray"],
        preprocess=preprocess_config_for_model(model.backbone, input_size=32),
        head=head_settings(config),
    )
    write_model_json(info, folder)
    load_bundle(folder)  # sanity: the untouched bundle loads
    return folder


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("weights_name", ["best.safetensors", "weights.pth", "model.bin"])
def test_bundle_with_pickled_weights_is_refused(bundle, tmp_path, payload, weights_name):
    marker = tmp_path / "pwned"
    data = json.loads((bundle / "model.json").read_text())
    data["weights"] = weights_name
    (bundle / "model.json").write_text(json.dumps(data))
    _write_evil(bundle / weights_name, _payloads(marker)[payload], "torch-zip")
    with pytest.raises(MarineLifeError, match=weights_name.replace(".", r"\.")):
        load_bundle(bundle)
    predictor = pytest.importorskip("marinelife.infer.predictor")
    with pytest.raises(MarineLifeError):
        predictor.Predictor.load(bundle, backend="torch")
    assert not marker.exists()


def test_feature_cache_entry_holding_a_pickle_is_rebuilt_not_run(tmp_path):
    """A cached features.npy swapped for an object array (pickle inside .npy) is treated as a
    damaged entry: np.load runs with allow_pickle=False, so nothing is unpickled."""
    from marinelife.fit import feature_cache as fc

    marker = tmp_path / "pwned"
    entry = tmp_path / "entry"
    entry.mkdir()
    evil = np.empty(1, dtype=object)
    evil[0] = _payloads(marker)["exec"]
    buffer = io.BytesIO()
    np.save(buffer, evil, allow_pickle=True)
    (entry / "features.npy").write_bytes(buffer.getvalue())
    meta = {"shape": [1], "sha256": fileio.file_sha256(entry / "features.npy")}
    (entry / "meta.json").write_text(json.dumps(meta))
    assert fc.load_entry(entry, (1,)) is None
    assert not marker.exists()


def test_run_config_yaml_cannot_construct_python_objects(tmp_path):
    """config.yaml is read with yaml.safe_load: python/object tags are an error, never a call."""
    from marinelife.config import load_config

    marker = tmp_path / "pwned"
    path = tmp_path / "config.yaml"
    path.write_text(f"epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(MarineLifeError, match="config.yaml"):
        load_config(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# model.json with unexpected types and values


def _set(path: tuple, value):
    def mutate(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(key: str):
    return lambda data: data.pop(key)


BAD_MODEL_JSON = {
    "format missing": _delete("format"),
    "format wrong": _set(("format",), "onnx-model"),
    "format_version string": _set(("format_version",), "1"),
    "format_version bool": _set(("format_version",), True),
    "format_version newer": _set(("format_version",), 99),
    "classes empty": _set(("classes",), []),
    "classes numbers": _set(("classes",), [1, 2, 3]),
    "classes a string": _set(("classes",), "crab,eel,ray"),
    "classes blank name": _set(("classes",), ["crab", "", "ray"]),
    "classes duplicated": _set(("classes",), ["crab", "crab", "ray"]),
    "classes wrong count": _set(("classes",), ["crab", "eel"]),
    "architecture number": _set(("architecture",), 5),
    "architecture unknown": _set(("architecture",), "resnet9000"),
    "architecture hub": _set(("architecture",), "hf-hub:someone/evil-model"),
    "head not a mapping": _set(("head",), "linear"),
    "head kind unknown": _set(("head", "head"), "transformer"),
    "head_hidden string": _set(("head", "head_hidden"), "1024"),
    "head_hidden huge": _set(("head", "head_hidden"), [10**9]),
    "head_hidden negative": _set(("head", "head_hidden"), [-5]),
    "mlp head sized to exhaust memory": lambda data: data["head"].update(
        head="mlp", head_hidden=[10**9], head_dropout=[0.5]
    ),
    "mlp head lengths differ": lambda data: data["head"].update(
        head="mlp", head_hidden=[64, 32], head_dropout=[0.5]
    ),
    "head_hidden floats": _set(("head", "head_hidden"), [1.5]),
    "head_dropout bad": _set(("head", "head_dropout"), [7.0]),
    "head_norm_first string": _set(("head", "head_norm_first"), "yes"),
    "drop_rate string": _set(("head", "drop_rate"), "0.2"),
    "drop_rate out of range": _set(("head", "drop_rate"), 3.0),
    "weights traversal": _set(("weights",), "../../outside.safetensors"),
    "weights absolute": _set(("weights",), "/etc/passwd"),
    "weights number": _set(("weights",), 5),
    "weights missing file": _set(("weights",), "other.safetensors"),
    "preprocess missing": _delete("preprocess"),
    "input_size huge": _set(("preprocess", "input_size"), 10**9),
    "input_size negative": _set(("preprocess", "input_size"), -1),
    "input_size string": _set(("preprocess", "input_size"), "224"),
    "input_size bool": _set(("preprocess", "input_size"), True),
    "mean words": _set(("preprocess", "mean"), ["a", 0, 0]),
    "mean short": _set(("preprocess", "mean"), [0.5]),
    "std zero": _set(("preprocess", "std"), [0, 1, 1]),
    "interpolation unknown": _set(("preprocess", "interpolation"), "__import__('os')"),
    "crop_pct zero": _set(("preprocess", "crop_pct"), 0),
    "crop_pct huge": _set(("preprocess", "crop_pct"), 50),
    "preprocess unknown key": _set(("preprocess", "eval"), "print(1)"),
    "denoise unknown filter": _set(("preprocess", "denoise"), {"name": "rm -rf /", "params": {}}),
    "denoise huge window": _set(
        ("preprocess", "denoise"), {"name": "median", "params": {"ksize": 10**9}}
    ),
    "rejection garbage": _set(("rejection",), {"score": "max_softmax", "threshold": "high"}),
}


@pytest.mark.parametrize("case", sorted(BAD_MODEL_JSON))
def test_bad_model_json_is_rejected_naming_the_file(bundle, case):
    original = json.loads((bundle / "model.json").read_text())
    data = copy.deepcopy(original)
    BAD_MODEL_JSON[case](data)
    (bundle / "model.json").write_text(json.dumps(data))
    with pytest.raises(MarineLifeError) as info:
        read_model_info(bundle)  # most are refused here, before any network is built
        load_bundle(bundle)
        predictor = pytest.importorskip("marinelife.infer.predictor")
        predictor.Predictor.load(bundle, backend="torch")
    message = str(info.value)
    assert "model.json" in message or str(bundle) in message, message


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1, 2, 3]",
        "null",
        '"a string"',
        "[" * 100_000 + "]" * 100_000,  # nesting deep enough to blow the recursion limit
        '{"format": "marinelife-model", "format_version": 1, "classes": ["a"], "x": NaN',
    ],
    ids=["empty", "not-json", "list", "null", "string", "deep-nesting", "truncated"],
)
def test_unparseable_model_json_is_rejected(bundle, text):
    (bundle / "model.json").write_text(text)
    with pytest.raises(MarineLifeError, match="model.json"):
        read_model_info(bundle)


def test_model_json_that_is_not_utf8_is_rejected(bundle):
    (bundle / "model.json").write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(MarineLifeError, match="model.json"):
        read_model_info(bundle)
