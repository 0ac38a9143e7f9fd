"""`marinelife train`: resolve the config, build the run folder, fit, evaluate on test."""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from marinelife.config import (
    TrainConfig,
    available_recipes,
    load_config,
    load_recipe_data,
    resolve_config,
    save_config,
    valid_keys,
)
from marinelife.data.preprocess import preprocess_config_for_model
from marinelife.data.scan import DatasetLayout, save_classes, scan_dataset
from marinelife.errors import MarineLifeError
from marinelife.evaluate import tracking
from marinelife.evaluate.run import (
    evaluable_samples,
    predict_samples,
    print_summary,
    write_split_metrics,
)
from marinelife.models import build_classifier
from marinelife.train import distributed
from marinelife.train.distributed import select_device
from marinelife.train.precision import check_amp
from marinelife.train.stages import plan_stages
from marinelife.train.trainer import Trainer, require_val_split, seed_everything

log = logging.getLogger(__name__)


def _run_dir(runs_dir: Path, name: str | None, recipe: str, resume: bool) -> Path:
    if name is None:
        if resume:
            raise MarineLifeError("--resume needs --name RUN (the run folder to continue)")
        name = f"{recipe}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    run_dir = runs_dir / name
    if resume:
        if not (run_dir / "last.ckpt").exists() and not (run_dir / "last.prev.ckpt").exists():
            raise MarineLifeError(
                "no last.ckpt to resume from", path=run_dir, fix="start a new run without --resume"
            )
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise MarineLifeError(
            "run folder already exists",
            path=run_dir,
            fix="pass --resume to continue it, or choose another --name",
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def build_trainer(
    layout: DatasetLayout,
    config: TrainConfig,
    run_dir: Path,
    *,
    device: torch.device | None = None,
    pretrained: bool | None = None,
) -> Trainer:
    """Model, preprocessing (from the backbone's own data config) and stage plan for a run."""
    device = device or torch.device("cpu")
    model = build_classifier(config, len(layout.classes), pretrained=pretrained).to(device)
    preprocess = preprocess_config_for_model(
        model.backbone, input_size=config.input_size, denoise=config.denoise
    )
    return Trainer(
        config=config,
        model=model,
        layout=layout,
        preprocess=preprocess,
        run_dir=run_dir,
        stages=plan_stages(config),
        device=device,
    )


def load_training_layout(data: Path) -> DatasetLayout:
    """Scan ``data`` and insist on train/ and val/ (test/ optional) before anything is written."""
    layout = scan_dataset(data)
    layout.require_splits("train")
    require_val_split(layout)
    return layout


def train(
    data: Path | DatasetLayout,
    config: TrainConfig,
    *,
    run_dir: Path,
    resume: bool = False,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Train ``config`` on ``data`` into ``run_dir``; returns the test metrics (or val if none).

    ``device`` defaults to ``config.device``. Under torchrun (see :func:`run_train`) every rank
    trains; rank 0 alone evaluates on test and writes, and the other ranks return ``{}``.
    """
    layout = data if isinstance(data, DatasetLayout) else load_training_layout(data)
    data = layout.root
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = device or select_device(config.device)
    check_amp(config.amp, device)
    seed_everything(config.seed)
    if resume:
        classes = distributed.on_main(
            lambda: json.loads((run_dir / "classes.json").read_text("utf-8"))
        )
        if classes != layout.classes:
            raise MarineLifeError("classes differ from the run being resumed", path=data)
    # A resumed run takes its weights from last.ckpt, so it needs no pretrained download.
    trainer = build_trainer(
        layout, config, run_dir, device=device, pretrained=False if resume else None
    )
    model, preprocess = trainer.model, trainer.preprocess
    # Every rank starts from rank 0's weights (DDP also does this, but the frozen-feature cache
    # is computed before any DDP wrapper exists).
    distributed.broadcast_module_state(model)
    if distributed.is_main():
        save_config(config, run_dir / "config.yaml")
        save_classes(layout.classes, run_dir / "classes.json")
    saved = trainer.load_resume_state() if resume else None
    start = time.perf_counter()
    state = trainer.fit(resume=saved)
    train_seconds = time.perf_counter() - start
    trainer.restore_best()
    if not distributed.is_main():
        return {}  # the test evaluation and every file below are rank 0's
    from marinelife.infer.rejection import ensure_rejection

    ensure_rejection(run_dir, layout, model=model, device=device, force=True)
    split = "test" if "test" in layout.splits else "val"
    samples = evaluable_samples(layout.samples(split), preprocess)
    targets, probs = predict_samples(
        model, samples, layout.class_to_index, preprocess, device=device
    )
    extra = {
        "train_seconds": round(train_seconds, 1),
        "best_epoch": state.best_epoch_label,
        "skipped_nonfinite_steps": trainer.nonfinite.skipped,
        "feature_cache": trainer.data.cache_stats,
        "recipe": config.recipe,
        "architecture": config.architecture,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "train_samples": len(layout.samples("train")),
    }
    metrics = write_split_metrics(run_dir, split, samples, targets, probs, layout.classes, extra)
    _add_test_metrics_to_bundle(run_dir, metrics)
    print_summary(metrics, split)
    if config.report:
        from marinelife.evaluate.report import build_report

        print(f"report: {build_report(run_dir, data=layout, gradcam=False)}")
    return metrics


def _add_test_metrics_to_bundle(run_dir: Path, metrics: dict[str, Any]) -> None:
    from marinelife.infer.bundle import read_model_info, write_model_json

    info, _ = read_model_info(run_dir)
    info.metrics.update({f"test_{k}": metrics[k] for k in ("accuracy", "macro_f1") if k in metrics})
    write_model_json(info, run_dir)


def config_from_flags(args: argparse.Namespace) -> TrainConfig:
    """The recipe with the command line's flags and ``--set`` overrides applied."""
    extra: dict[str, Any] = {}
    if args.no_pretrained:
        extra["pretrained"] = False
    if args.weights is not None:
        extra["weights"] = str(args.weights)
    if args.no_feature_cache:
        extra["feature_cache"] = False
    if getattr(args, "device", None):
        extra["device"] = args.device
    if getattr(args, "amp", None):
        # --amp is the general key; it also switches off the older `bf16: true` of a recipe.
        extra.update({"amp": args.amp, "bf16": args.amp == "bf16"})
    if getattr(args, "compile", False):
        extra["compile"] = True
    return resolve_config(args.recipe, args.overrides, extra)


def _resume_config(args: argparse.Namespace) -> TrainConfig:
    """The saved config of the run to continue; only --device may change (where, not what)."""
    if args.name is None:
        raise MarineLifeError("--resume needs --name RUN (the run folder to continue)")
    config = load_config(args.runs_dir / args.name / "config.yaml")
    ignored = [f"--{k}" for k in ("amp", "compile") if getattr(args, k, None)]
    ignored += ["--set"] if args.overrides else []
    if ignored:
        log.warning("--resume continues with the run's config.yaml; ignoring %s", " ".join(ignored))
    if getattr(args, "device", None):
        config.device = args.device
        config.validate()
    return config


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    """`marinelife train`, alone or as one process of ``torchrun --nproc_per_node=N``."""
    config = _resume_config(args) if args.resume else config_from_flags(args)
    # Joins the process group under torchrun (WORLD_SIZE > 1); a plain run stays one process.
    device = distributed.setup(config.device)
    try:
        return _train_in_process(args, config, device)
    finally:
        distributed.teardown()


def _train_in_process(
    args: argparse.Namespace, config: TrainConfig, device: torch.device
) -> dict[str, Any]:
    layout = load_training_layout(args.data)
    # Rank 0 alone checks and creates the folder; every rank gets its path or its error.
    run_dir = distributed.on_main(
        lambda: _run_dir(args.runs_dir, args.name, config.recipe, args.resume)
    )
    log.info("run folder: %s", run_dir)
    if distributed.world_size() > 1:
        log.info(
            "global batch %d = batch_size %d x %d processes",
            config.batch_size * distributed.world_size(),
            config.batch_size,
            distributed.world_size(),
        )
    try:
        metrics = train(layout, config, run_dir=run_dir, resume=args.resume, device=device)
    except KeyboardInterrupt:
        # stderr, once: the CLI adds "interrupted" and exits 130.
        if distributed.is_main():
            tracking.close(run_dir)  # flush the epochs already logged to TensorBoard
            print(f"marinelife train: {_how_to_continue(args, run_dir)}", file=sys.stderr)
        raise
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise MarineLifeError(
            f"no space left on the device ({exc.strerror}); every checkpoint on disk is whole",
            path=exc.filename or run_dir,
            fix=f"free some space, then {_how_to_continue(args, run_dir)}",
        ) from exc
    if distributed.is_main():
        print(f"run folder: {run_dir}")
    return metrics


def _how_to_continue(args: argparse.Namespace, run_dir: Path) -> str:
    """The exact command that continues ``run_dir`` (or why there is nothing to continue)."""
    if not (run_dir / "last.ckpt").exists() and not (run_dir / "last.prev.ckpt").exists():
        return (
            "start again (no epoch had finished, so there is nothing to resume): "
            f"delete {run_dir} or pick another --name"
        )
    command = ["marinelife", "train", "--data", str(args.data), "--name", run_dir.name]
    command += ["--runs-dir", str(args.runs_dir), "--resume"]
    return f"resume with: {shlex.join(command)}"


def show_recipes(name: str | None, *, keys: bool = False) -> None:
    if keys:
        print("\n".join(valid_keys()))
        return
    if name is None:
        for recipe in available_recipes():
            _, data = load_recipe_data(recipe)
            first = str(data.get("description", "")).split(". ")[0]
            print(f"{recipe:16s} {data.get('architecture', ''):24s} {first[:70]}")
        return
    config = resolve_config(name)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))
