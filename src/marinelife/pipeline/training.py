"""One training run end to end: run folder → fit → calibrate rejection → test → report."""

from __future__ import annotations

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

from marinelife.config import TrainConfig, load_config, save_config
from marinelife.data.check import one_class_message
from marinelife.data.preprocess import preprocess_config_for_model
from marinelife.data.scan import DatasetLayout, save_classes, scan_dataset
from marinelife.errors import MarineLifeError
from marinelife.evaluate.evals import dataset_record
from marinelife.evaluate.evaluate_split import (
    evaluable_samples,
    predict_samples,
    print_summary,
    write_split_metrics,
)
from marinelife.evaluate.report import build_report
from marinelife.fit import distributed, tracking
from marinelife.fit.distributed import select_device
from marinelife.fit.stages import plan_stages
from marinelife.fit.trainer import Trainer, require_val_split, seed_everything
from marinelife.infer.rejection import ensure_rejection
from marinelife.models import build_classifier
from marinelife.models.bundle import read_model_info, write_model_json
from marinelife.models.onnx_forward import fast_cpu_forward
from marinelife.models.precision import check_amp

log = logging.getLogger(__name__)


# All that a first attempt writes before its first checkpoint: a folder holding only these
# (and temp files of unfinished writes) has nothing worth keeping and is trained into again.
_BEFORE_FIRST_CHECKPOINT = {
    "config.yaml",
    "classes.json",
    "plan.json",
    "metrics.csv",
    "tensorboard",
}


def _saved_nothing(run_dir: Path) -> bool:
    return all(
        p.name in _BEFORE_FIRST_CHECKPOINT or (p.name.startswith(".") and p.suffix == ".tmp")
        for p in run_dir.iterdir()
    )


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "last.ckpt").exists() or (run_dir / "last.prev.ckpt").exists()


def prepare_run_dir(runs_dir: Path, name: str | None, recipe: str, resume: bool) -> Path:
    """The run folder to train into: new, resumable, or an earlier attempt that saved nothing."""
    if name is None:
        if resume:
            raise MarineLifeError("resume needs the name of the run folder to continue")
        name = f"{Path(recipe).stem}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(runs_dir) / name
    if resume:
        if not has_checkpoint(run_dir):
            raise MarineLifeError(
                "no last.ckpt to resume from", path=run_dir, fix="start a new run without --resume"
            )
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        if not _saved_nothing(run_dir):
            raise MarineLifeError(
                "run folder already exists",
                path=run_dir,
                fix="pass --resume to continue it, or choose another --name",
            )
        log.info("reusing %s: the earlier attempt stopped before its first checkpoint", run_dir)
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
        model.backbone,
        input_size=config.input_size,
        denoise=config.denoise,
        enhance=config.enhance,
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
    if len(layout.classes) < 2:
        raise MarineLifeError(one_class_message(layout.classes), path=layout.root / "train")
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
    split = "test" if "test" in layout.splits else "val"
    samples = evaluable_samples(layout.samples(split), preprocess)
    fast = _evaluation_forward(model, config, preprocess, device, len(samples))
    ensure_rejection(
        run_dir,
        layout,
        model=model,
        device=device,
        force=True,
        forward=(lambda x: fast(torch.from_numpy(x)).numpy()) if fast else None,
        val_logits=trainer.cached_val_logits(),  # no photo read when the val set is cached
    )
    targets, probs = predict_samples(
        model, samples, layout.class_to_index, preprocess, device=device, forward=fast
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
        # The dataset path and fingerprint: `evaluate` tells the training data from any other.
        **dataset_record(layout.root, layout.samples(split)),
    }
    metrics = write_split_metrics(run_dir, split, samples, targets, probs, layout.classes, extra)
    _add_test_metrics_to_bundle(run_dir, metrics)
    print_summary(metrics, split)
    if config.report:
        print(f"report: {build_report(run_dir, data=layout, gradcam=False)}")
    return metrics


def _evaluation_forward(model, config: TrainConfig, preprocess, device, items: int):
    """One ONNX Runtime export for the rejection calibration and the test read (CPU, fp32)."""
    if device.type != "cpu" or config.feature_engine != "auto" or config.amp != "none":
        return None
    return fast_cpu_forward(model, preprocess.input_size, threads=config.threads, items=items)


def _add_test_metrics_to_bundle(run_dir: Path, metrics: dict[str, Any]) -> None:
    info, _ = read_model_info(run_dir)
    info.metrics.update({f"test_{k}": metrics[k] for k in ("accuracy", "macro_f1") if k in metrics})
    write_model_json(info, run_dir)


def resume_config(
    run_dir: Path, *, device: str | None = None, ignored: list[str] = ()
) -> TrainConfig:
    """The saved config of the run to continue; only ``device`` may change (where, not what)."""
    if not has_checkpoint(Path(run_dir)):
        raise MarineLifeError(
            "no last.ckpt to resume from", path=run_dir, fix="start a new run without --resume"
        )
    config = load_config(Path(run_dir) / "config.yaml")
    if ignored:
        log.warning("resume continues with the run's config.yaml; ignoring %s", ", ".join(ignored))
    if device:
        config.device = device
        config.validate()
    return config


def run_training(
    data: Path,
    config: TrainConfig,
    *,
    runs_dir: Path = Path("runs"),
    name: str | None = None,
    resume: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Train into ``runs_dir/name``, alone or as one process of ``torchrun --nproc_per_node=N``.

    Returns the run folder and its test metrics (``{}`` on ranks other than 0).
    """
    # Joins the process group under torchrun (WORLD_SIZE > 1); a plain run stays one process.
    device = distributed.setup(config.device)
    try:
        layout = load_training_layout(Path(data))
        # Rank 0 alone checks and creates the folder; every rank gets its path or its error.
        run_dir = distributed.on_main(
            lambda: prepare_run_dir(Path(runs_dir), name, config.recipe, resume)
        )
        log.info("run folder: %s", run_dir)
        if distributed.world_size() > 1:
            log.info(
                "global batch %d = batch_size %d x %d processes",
                config.batch_size * distributed.world_size(),
                config.batch_size,
                distributed.world_size(),
            )
        again = _how_to_continue(Path(data), Path(runs_dir), run_dir)
        try:
            metrics = train(layout, config, run_dir=run_dir, resume=resume, device=device)
        except KeyboardInterrupt:
            # stderr, once: the CLI adds "interrupted" and exits 130.
            if distributed.is_main():
                tracking.close(run_dir)  # flush the epochs already logged to TensorBoard
                print(f"marinelife train: {again()}", file=sys.stderr)
            raise
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise MarineLifeError(
                f"no space left on the device ({exc.strerror}); every checkpoint on disk is whole",
                path=exc.filename or run_dir,
                fix=f"free some space, then {again()}",
            ) from exc
        if distributed.is_main():
            print(f"run folder: {run_dir}")
        return run_dir, metrics
    finally:
        distributed.teardown()


def _how_to_continue(data: Path, runs_dir: Path, run_dir: Path):
    """The exact command that continues ``run_dir`` (or why there is nothing to continue)."""

    def message() -> str:
        if not has_checkpoint(run_dir):
            return (
                "start again with the same command (no epoch had finished, so there is "
                "nothing to resume)"
            )
        command = ["marinelife", "train", "--data", str(data), "--name", run_dir.name]
        command += ["--runs-dir", str(runs_dir), "--resume"]
        return f"resume with: {shlex.join(command)}"

    return message
