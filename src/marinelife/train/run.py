"""`marinelife train`: resolve the config, build the run folder, fit, evaluate on test."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
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
from marinelife.evaluate.run import predict_samples, print_summary, write_split_metrics
from marinelife.models import build_classifier
from marinelife.train.stages import plan_stages
from marinelife.train.trainer import Trainer, require_val_split, seed_everything

log = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MarineLifeError(
            "--device cuda requested but no CUDA GPU is available",
            fix="use --set device=cpu or device=auto",
        )
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise MarineLifeError(
            "--device mps requested but MPS is not available",
            fix="use --set device=cpu or device=auto",
        )
    return torch.device(name)


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
) -> dict[str, Any]:
    """Train ``config`` on ``data`` into ``run_dir``; returns the test metrics (or val if none)."""
    layout = data if isinstance(data, DatasetLayout) else load_training_layout(data)
    data = layout.root
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = select_device(config.device)
    if config.bf16 and device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        log.warning("bf16 requested but this CPU has no native bfloat16: expect it to be slower")
    seed_everything(config.seed)
    if resume:
        saved_config = load_config(run_dir / "config.yaml")
        if saved_config.architecture != config.architecture:
            raise MarineLifeError(
                "config differs from the run being resumed", path=run_dir / "config.yaml"
            )
        classes = json.loads((run_dir / "classes.json").read_text("utf-8"))
        if classes != layout.classes:
            raise MarineLifeError("classes differ from the run being resumed", path=data)
    model = build_classifier(config, len(layout.classes), pretrained=False if resume else None)
    model.to(device)
    preprocess = preprocess_config_for_model(
        model.backbone, input_size=config.input_size, denoise=config.denoise
    )
    save_config(config, run_dir / "config.yaml")
    save_classes(layout.classes, run_dir / "classes.json")
    trainer = Trainer(
        config=config,
        model=model,
        layout=layout,
        preprocess=preprocess,
        run_dir=run_dir,
        stages=plan_stages(config),
        device=device,
    )
    saved = trainer.load_resume_state() if resume else None
    start = time.perf_counter()
    state = trainer.fit(resume=saved)
    train_seconds = time.perf_counter() - start
    trainer.restore_best()
    split = "test" if "test" in layout.splits else "val"
    samples = layout.samples(split)
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
    }
    metrics = write_split_metrics(run_dir, split, samples, targets, probs, layout.classes, extra)
    _add_test_metrics_to_bundle(run_dir, metrics)
    print_summary(metrics, split)
    return metrics


def _add_test_metrics_to_bundle(run_dir: Path, metrics: dict[str, Any]) -> None:
    from marinelife.infer.bundle import read_model_info, write_model_json

    info, _ = read_model_info(run_dir)
    info.metrics.update({f"test_{k}": metrics[k] for k in ("accuracy", "macro_f1") if k in metrics})
    write_model_json(info, run_dir)


def run_train(args: argparse.Namespace) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if args.no_pretrained:
        extra["pretrained"] = False
    if args.weights is not None:
        extra["weights"] = str(args.weights)
    if args.no_feature_cache:
        extra["feature_cache"] = False
    if args.resume:
        if args.name is None:
            raise MarineLifeError("--resume needs --name RUN (the run folder to continue)")
        config_path = args.runs_dir / args.name / "config.yaml"
        config = load_config(config_path)
    else:
        config = resolve_config(args.recipe, args.overrides, extra)
    layout = load_training_layout(args.data)
    run_dir = _run_dir(args.runs_dir, args.name, config.recipe, args.resume)
    log.info("run folder: %s", run_dir)
    try:
        metrics = train(layout, config, run_dir=run_dir, resume=args.resume)
    except KeyboardInterrupt:
        print(
            f"interrupted; resume with: marinelife train --data {args.data} "
            f"--name {run_dir.name} --runs-dir {args.runs_dir} --resume"
        )
        raise
    print(f"run folder: {run_dir}")
    return metrics


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
