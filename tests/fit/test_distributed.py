"""Multi-process training under torchrun (DDP over gloo on CPU), sharding, device and AMP flags.

The torchrun tests launch the real CLI as a user would (``python -m torch.distributed.run
--nproc_per_node=2 ...`` running ``marinelife.cli.main("train", ...)``) through a child script that
also makes each rank write the SHA-256 of its weights after every stage: that is how the tests see
inside rank 1 (it writes nothing else), with no test hook in the library.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import free_port, toy_training_run
from marinelife.cli import build_parser, config_from_flags, main
from marinelife.config import resolve_config
from marinelife.data.synthetic import make_synthetic_dataset
from marinelife.errors import MarineLifeError
from marinelife.fit import distributed
from marinelife.fit import feature_cache as fc
from marinelife.fit.distributed import ShardSampler
from marinelife.models.precision import check_amp, make_scaler

# Tiny, fast and free of dropout (whose random stream differs between 1 and 2 processes).
TINY = [
    "input_size=32",
    "feature_cache_views=1",
    "workers=0",
    "report=false",
    "drop_rate=0",
    "lr=0.01",
]
BATCH = 8  # per process: 2 processes x 8 = a global batch of 16
RUN_FILES = {
    "config.yaml",
    "classes.json",
    "metrics.csv",
    "plan.json",
    "best.safetensors",
    "model.json",
    "last.ckpt",
    "last.prev.ckpt",
    "test_metrics.json",
    "test_probs.npy",
}


def _sets(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


# `marinelife train` with one addition: after every stage (before restore-best) each rank writes
# the SHA-256 of its weights to $DDP_DUMP, so a test can prove DDP kept the ranks identical.
CHILD = """
import hashlib, os, sys
from pathlib import Path
import marinelife.fit.trainer as trainer_mod
from marinelife.fit import distributed

real_run_stage = trainer_mod.Trainer._run_stage

def run_stage(self, stage, resume):
    real_run_stage(self, stage, resume)
    digest = hashlib.sha256()
    for name, param in sorted(self.model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    folder = Path(os.environ["DDP_DUMP"])
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"stage{self.state.stage_index}.rank{distributed.rank()}.sha256"
    (folder / tag).write_text(digest.hexdigest())

trainer_mod.Trainer._run_stage = run_stage
from marinelife.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(args: list[str], *, cache: Path, dump: Path, timeout: int = 300) -> str:
    """Run ``marinelife train ARGS`` on 2 CPU processes; return its output (asserts success)."""
    child = dump.parent / "ddp_child.py"
    child.parent.mkdir(parents=True, exist_ok=True)
    child.write_text(CHILD)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        str(child),
        "train",
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if k != "MARINELIFE_QUIET"}
    env.update({"MARINELIFE_CACHE": str(cache), "DDP_DUMP": str(dump), "OMP_NUM_THREADS": "1"})
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _rank_digests(dump: Path, tag: str) -> tuple[str, str]:
    return (dump / f"{tag}.rank0.sha256").read_text(), (dump / f"{tag}.rank1.sha256").read_text()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp-data")
    return make_synthetic_dataset(
        root / "data", num_classes=4, counts={"train": 12, "val": 4, "test": 4}, size=32
    )


@pytest.fixture(scope="module")
def cached_ddp(data, tmp_path_factory) -> dict[str, Path]:
    """two-stage-lite on 2 processes: cached head stage, then the boundary-cached fine-tune."""
    root = tmp_path_factory.mktemp("ddp-cached")
    paths = {"runs": root / "runs", "cache": root / "cache", "dump": root / "dump"}
    sets = _sets([*TINY, "epochs=2", "finetune_epochs=1", f"batch_size={BATCH}"])
    args = ["--data", str(data), "--recipe", "two-stage-lite", "--name", "ddp"]
    args += ["--runs-dir", str(paths["runs"]), "--no-pretrained", *sets]
    paths["output"] = _torchrun(args, cache=paths["cache"], dump=paths["dump"])  # type: ignore
    return paths


@pytest.mark.slow
def test_ranks_end_every_stage_with_identical_weights(cached_ddp):
    for tag in ("stage0", "stage1"):
        rank0, rank1 = _rank_digests(cached_ddp["dump"], tag)
        assert rank0 == rank1, tag


@pytest.mark.slow
def test_only_rank_zero_writes_one_set_of_run_files(cached_ddp):
    runs = cached_ddp["runs"]
    assert [p.name for p in runs.iterdir()] == ["ddp"]
    run = runs / "ddp"
    written = {p.name for p in run.iterdir() if p.name != "tensorboard"}
    assert written == RUN_FILES  # no second copy, no temp files left by a racing rank
    assert [row["epoch"] for row in _metrics(run)] == ["1", "2", "3"]  # each epoch once
    plan = json.loads((run / "plan.json").read_text())  # what the report's schedule is drawn from
    assert plan["world_size"] == 2 and plan["batch_size"] == BATCH
    # One voice: rank 1 logs no progress and prints no results.
    output = cached_ddp["output"]
    assert output.count("global batch 16 = batch_size 8 x 2 processes") == 1
    assert output.count("test accuracy") == 1 and output.count("head 2/2  train loss") == 1
    entries = list((cached_ddp["cache"] / "features").iterdir())
    assert len(entries) == 4  # features train/val, boundary train/val
    for entry in entries:
        assert sorted(p.name for p in entry.iterdir()) == ["features.npy", "meta.json"]


@pytest.mark.slow
def test_ddp_equals_one_process_with_the_same_global_batch(cached_ddp, data, tmp_path, monkeypatch):
    monkeypatch.setenv("MARINELIFE_CACHE", str(tmp_path / "cache"))
    sets = _sets([*TINY, "epochs=2", "finetune_epochs=1", f"batch_size={2 * BATCH}"])
    args = ["train", "--data", str(data), "--recipe", "two-stage-lite", "--name", "one"]
    assert main([*args, "--runs-dir", str(tmp_path), "--no-pretrained", "-q", *sets]) == 0
    one, ddp = _metrics(tmp_path / "one"), _metrics(cached_ddp["runs"] / "ddp")
    assert len(one) == len(ddp) == 3
    for a, b in zip(one, ddp):
        assert abs(float(a["val_loss"]) - float(b["val_loss"])) < 1e-3, (a, b)
        assert abs(float(a["val_acc"]) - float(b["val_acc"])) <= 1 / 16 + 1e-9, (a, b)
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) < 1e-3, (a, b)
    # The sharded feature-cache build assembles the same entries one process computes.
    for entry in (tmp_path / "cache" / "features").iterdir():
        mine = np.load(entry / "features.npy")
        theirs = np.load(cached_ddp["cache"] / "features" / entry.name / "features.npy")
        assert np.allclose(mine, theirs, atol=1e-5), entry.name


@pytest.mark.slow
def test_resume_under_ddp_gives_the_uninterrupted_weights(data, tmp_path):
    """The image path (no cache) on 2 processes; "interrupted" = the run folder as it was after
    epoch 2 of 3 (last.prev.ckpt is exactly the checkpoint a kill during epoch 3 leaves)."""
    sets = [*TINY, "architecture=test_efficientnet", "feature_cache=false", "epochs=3"]
    sets += ["finetune_epochs=0", f"batch_size={BATCH}", "augment.rotation=10"]
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    common = ["--data", str(data), "--runs-dir", str(runs)]
    _torchrun(
        [*common, "--name", "full", "--recipe", "two-stage-lite", "--no-pretrained", *_sets(sets)],
        cache=cache,
        dump=tmp_path / "dump-full",
    )
    shutil.copytree(runs / "full", runs / "cut")
    os.replace(runs / "cut" / "last.prev.ckpt", runs / "cut" / "last.ckpt")
    assert torch.load(runs / "cut" / "last.ckpt", weights_only=True)["epoch"] == 2
    _torchrun([*common, "--name", "cut", "--resume"], cache=cache, dump=tmp_path / "dump-cut")
    rank0, rank1 = _rank_digests(tmp_path / "dump-cut", "stage0")
    assert rank0 == rank1
    assert rank0 == _rank_digests(tmp_path / "dump-full", "stage0")[0]
    full = torch.load(runs / "full" / "last.ckpt", weights_only=True)
    resumed = torch.load(runs / "cut" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 3 and len(resumed["history"]) == 3
    for key, value in full["model"].items():
        assert torch.allclose(value.float(), resumed["model"][key].float(), atol=1e-6), key
    a, b = (
        load_file(runs / "full" / "best.safetensors"),
        load_file(runs / "cut" / "best.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- sharding (in-process)
@pytest.mark.parametrize("n, world", [(10, 3), (12, 4), (5, 2), (2, 3)])
def test_shard_sampler_splits_one_seeded_order_like_distributed_sampler(n, world):
    def inner() -> torch.utils.data.RandomSampler:
        return torch.utils.data.RandomSampler(range(n), generator=torch.Generator().manual_seed(7))

    order = list(inner())
    shards = [list(ShardSampler(inner(), rank_=r, world=world)) for r in range(world)]
    per_rank = -(-n // world)
    assert all(len(s) == per_rank for s in shards)  # equal lengths: equal step counts
    padded = (order * world)[: per_rank * world]
    # Global step k holds the same items as one process with world x the batch size.
    assert [shards[r][i] for i in range(per_rank) for r in range(world)] == padded
    assert set().union(*shards) == set(range(n))


def test_shard_sampler_reseeds_per_epoch_and_is_plain_in_one_process():
    sampler = ShardSampler(torch.utils.data.RandomSampler(range(20), generator=torch.Generator()))
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(4)
    assert list(sampler) != first
    sampler.set_epoch(3)
    assert list(sampler) == first and sorted(first) == list(range(20))
    assert list(distributed.shard_indices(5)) == [0, 1, 2, 3, 4]


def test_val_shards_cover_every_item_once_and_reassemble_in_order(monkeypatch):
    n, world = 7, 3
    shards = []
    for r in range(world):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        shards.append(list(distributed.shard_indices(n)))
    assert sorted(i for shard in shards for i in shard) == list(range(n))  # no padding in val
    probs = np.eye(n, dtype=np.float32)
    targets = np.arange(n)
    parts = [(shard, targets[shard], probs[shard]) for shard in shards]
    parts.append(([], np.zeros(0, np.int64), np.zeros((0, 0), np.float32)))  # an empty shard
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "gather_to_main", lambda obj: parts)
    whole_targets, whole_probs = distributed.gather_in_order([], targets[:0], probs[:0])
    assert np.array_equal(whole_targets, targets) and np.array_equal(whole_probs, probs)


def test_collectives_are_no_ops_in_one_process():
    assert not distributed.is_distributed() and distributed.is_main()
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.gather_to_main(3) == [3]
    assert distributed.all_true(False) is False and distributed.all_true(True) is True
    assert distributed.sum_over_ranks([1.0, 2.0]) == [1.0, 2.0]
    assert distributed.on_main(lambda: 5) == 5

    def fails() -> None:
        raise MarineLifeError("x")

    with pytest.raises(MarineLifeError):
        distributed.on_main(fails)
    module = torch.nn.Linear(2, 2)
    assert distributed.wrap_for_training(module, torch.device("cpu")) is module


# --------------------------------------------------------------------------- device / AMP flags
def _train_args(*extra: str):
    return build_parser().parse_args(["train", "--data", "d", "--no-pretrained", *extra])


def test_device_amp_and_compile_flags_reach_the_config():
    config = config_from_flags(_train_args("--device", "cpu", "--amp", "bf16", "--compile"))
    assert (config.device, config.amp, config.bf16, config.compile) == ("cpu", "bf16", True, True)
    default = config_from_flags(_train_args())
    assert (default.device, default.amp, default.compile) == ("auto", "none", False)
    for bad in (["--device", "tpu"], ["--amp", "fp8"]):
        with pytest.raises(SystemExit):
            _train_args(*bad)


def test_bf16_key_is_an_alias_of_amp_bf16(tmp_path):
    assert resolve_config(None, ["bf16=true"]).amp == "bf16"
    assert resolve_config(None, ["amp=fp16"]).amp == "fp16"
    with pytest.raises(MarineLifeError, match="contradicts"):
        resolve_config(None, ["bf16=true", "amp=fp16"])
    recipe = tmp_path / "old.yaml"
    recipe.write_text("bf16: true\n")
    assert resolve_config(str(recipe)).amp == "bf16"
    # --amp is the general key and wins over an older recipe's bf16: true.
    assert config_from_flags(_train_args("--recipe", str(recipe), "--amp", "none")).amp == "none"


def test_cuda_without_a_gpu_is_a_clear_error(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    runs = tmp_path / "runs"
    args = ["train", "--data", str(data), "--runs-dir", str(runs), "--name", "x"]
    assert main([*args, "--no-pretrained", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no CUDA GPU" in err and "--device cpu" in err and len(err.splitlines()) == 1
    assert not runs.exists()  # refused before anything was written
    with pytest.raises(MarineLifeError, match="--device cpu"):
        distributed.select_device("cuda")


def test_fp16_needs_cuda():
    with pytest.raises(MarineLifeError, match="--amp bf16"):
        check_amp("fp16", torch.device("cpu"))
    check_amp("none", torch.device("cpu"))
    assert make_scaler("bf16", torch.device("cpu")) is None


def test_loss_scaled_step_trains():
    """The fp16 branch of the loop (scale, backward, unscale-and-step, update), on CPU."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    losses, _, _ = toy_training_run(scaler=scaler)
    assert losses[-1] < losses[0]
    assert scaler.get_scale() > 0


def test_cache_key_tracks_precision_but_keeps_old_keys():
    base = dict(
        image_hashes=["a"], backbone="b", weights_sha="w", preprocess={}, augment=None,
        views=0, seed=0,
    )  # fmt: skip
    assert fc.cache_key(**base) == fc.cache_key(**base, precision="none")
    assert fc.cache_key(**base, precision="bf16") != fc.cache_key(**base)
