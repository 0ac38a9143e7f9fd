"""Fit a classifier through its stage plan: early stopping, restore-best, atomic checkpoints,
exact resume. Frozen stages train the head on cached features when the feature cache is on.
"""

from __future__ import annotations

import csv
import io
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from marinelife.config import TrainConfig
from marinelife.data.dataset import ImageSampleDataset
from marinelife.data.preprocess import PreprocessConfig
from marinelife.data.scan import DatasetLayout
from marinelife.data.transforms import build_eval_transform, build_train_transform
from marinelife.errors import MarineLifeError
from marinelife.infer.bundle import WEIGHTS_FILE, ModelInfo, write_model_json
from marinelife.models import frozen_batchnorm_eval, head_l2_parameters, set_trainable
from marinelife.train import feature_cache as fc
from marinelife.train.checkpoint import (
    atomic_write_text,
    load_training_state,
    rng_state,
    save_training_state,
    save_weights,
    set_rng_state,
)
from marinelife.train.engine import (
    NonFiniteCounter,
    predict_probs,
    train_one_epoch,
    validation_metrics,
)
from marinelife.train.schedule import build_scheduler
from marinelife.train.stages import RegularizedLoss, Stage, build_optimizer, monitor_improved

log = logging.getLogger(__name__)
METRIC_COLUMNS = (
    "stage",
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "val_f1",
    "lr",
    "seconds",
    "train_samples_per_s",
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def auto_workers(config: TrainConfig, n_items: int) -> int:
    if config.workers >= 0:
        return config.workers
    if n_items < 256:
        return 0  # worker start-up costs more than it saves on tiny sets
    import os

    return max(1, min(4, (os.cpu_count() or 2)))


@dataclass
class StageData:
    """What one stage trains on: full images through the model, or cached features into the head."""

    module: torch.nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    channels_last: bool
    prepare: Any = None
    on_epoch: Any = None  # called with the epoch seed before each training epoch


@dataclass
class RunState:
    stage_index: int = 0
    epoch: int = 0  # epochs completed in the current stage
    global_step: int = 0
    best_value: float | None = None
    best_stage_value: float | None = None
    bad_epochs: int = 0
    best_epoch_label: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped_nonfinite: int = 0


class Trainer:
    def __init__(
        self,
        *,
        config: TrainConfig,
        model: torch.nn.Module,
        layout: DatasetLayout,
        preprocess: PreprocessConfig,
        run_dir: Path,
        stages: list[Stage],
        device: torch.device,
    ):
        self.config, self.model, self.layout = config, model, layout
        self.preprocess, self.run_dir, self.stages, self.device = (
            preprocess,
            run_dir,
            stages,
            device,
        )
        self.state = RunState()
        self.nonfinite = NonFiniteCounter()
        self.train_samples = layout.samples("train")
        self.val_samples = layout.samples("val")
        self.class_to_index = layout.class_to_index
        self.eval_transform = build_eval_transform(preprocess)
        self.train_transform = (
            build_train_transform(config.augment, preprocess)
            if config.augment.enabled
            else self.eval_transform
        )
        self.draft = preprocess.draft_size  # the same decode scale predict uses
        self.cache_stats: dict[str, Any] = {}
        self._hashes: dict[Path, str] = {}
        self._criterion_weights = self._class_weights()

    # ------------------------------------------------------------------ data for a stage
    def _class_weights(self) -> torch.Tensor | None:
        if self.config.class_weights != "balanced":
            return None
        counts = np.bincount(
            [self.class_to_index[s.label] for s in self.train_samples],
            minlength=len(self.layout.classes),
        ).astype(np.float64)
        weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
        return torch.tensor(weights, dtype=torch.float32)

    def _loader(self, dataset, *, shuffle: bool, batch_size: int | None = None) -> DataLoader:
        batch_size = batch_size or self.config.batch_size
        workers = auto_workers(self.config, len(dataset))
        # A last batch of one breaks BatchNorm1d in the head; drop it only in that case.
        drop_last = shuffle and len(dataset) % batch_size == 1
        generator = torch.Generator().manual_seed(self.config.seed)
        sampler = None
        if shuffle and self.config.sampler == "balanced":
            targets = np.asarray(dataset.targets)
            freq = np.bincount(targets, minlength=len(self.layout.classes))
            weights = 1.0 / np.maximum(freq[targets], 1)
            sampler = torch.utils.data.WeightedRandomSampler(
                weights.tolist(), len(targets), replacement=True, generator=generator
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=workers,
            generator=generator,
            drop_last=drop_last,
        )

    def _image_stage_data(self, stage: Stage) -> StageData:
        train_ds = ImageSampleDataset(
            self.train_samples,
            self.class_to_index,
            self.train_transform,
            draft_size=self.draft,
        )
        val_ds = ImageSampleDataset(
            self.val_samples, self.class_to_index, self.eval_transform, draft_size=self.draft
        )

        def on_epoch(seed: int, loader=None) -> None:
            train_ds.epoch_seed = seed

        return StageData(
            module=self.model,
            train_loader=self._loader(train_ds, shuffle=True),
            val_loader=self._loader(val_ds, shuffle=False),
            channels_last=self.device.type == "cpu",
            prepare=frozen_batchnorm_eval,
            on_epoch=on_epoch,
        )

    def _hashes_for(self, samples) -> list[str]:
        for s in samples:
            if s.path not in self._hashes:
                self._hashes[s.path] = fc.file_sha256(s.path)
        return [self._hashes[s.path] for s in samples]

    def _features(self, samples, *, views: int, desc: str) -> np.ndarray:
        backbone = self.model.backbone
        weights_sha = getattr(backbone, "marinelife_weights", {}).get("sha256", "random")
        if weights_sha == "random":
            weights_sha = "random-" + str(self.config.seed)
        hashes = self._hashes_for(samples)
        key = fc.cache_key(
            image_hashes=hashes,
            backbone=self.config.architecture,
            weights_sha=weights_sha,
            preprocess=self.preprocess.to_dict(),
            augment=_plain(self.config.augment),
            views=views,
            seed=self.config.seed,
        )
        dim = self.model.num_features
        shape = (len(samples), views + 1, dim)
        backbone.eval()
        if self.device.type == "cpu":
            backbone.to(memory_format=torch.channels_last)

        @torch.inference_mode()
        def extract(inputs: torch.Tensor) -> torch.Tensor:
            inputs = inputs.to(self.device)
            if self.device.type == "cpu":
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            return self.model.forward_features_pooled(inputs)

        start = time.perf_counter()
        features, hit = fc.cached_features(
            key,
            shape,
            lambda folder: fc.build_features(
                samples=samples,
                hashes=hashes,
                extract=extract,
                feature_dim=dim,
                eval_transform=self.eval_transform,
                train_transform=self.train_transform,
                views=views,
                seed=self.config.seed,
                folder=folder,
                batch_size=max(32, self.config.batch_size),
                workers=auto_workers(self.config, shape[0] * shape[1]),
                draft=self.draft,
                desc=desc,
            ),
        )
        self.cache_stats[desc] = {
            "hit": hit,
            "seconds": round(time.perf_counter() - start, 2),
            "shape": list(shape),
        }
        return features

    def _cached_stage_data(self, stage: Stage) -> StageData:
        views = self.config.feature_cache_views if self.config.augment.enabled else 0
        train_feats = self._features(self.train_samples, views=views, desc="features train")
        val_feats = self._features(self.val_samples, views=0, desc="features val")
        train_ds = fc.CachedFeatureDataset(
            train_feats, [self.class_to_index[s.label] for s in self.train_samples], train=True
        )
        val_ds = fc.CachedFeatureDataset(
            val_feats, [self.class_to_index[s.label] for s in self.val_samples], train=False
        )
        batch = self.config.batch_size

        def on_epoch(seed: int) -> None:
            train_ds.set_epoch_views(np.random.default_rng(seed))

        def loader(ds, shuffle):
            drop_last = shuffle and len(ds) % batch == 1
            return DataLoader(
                ds,
                batch_size=batch,
                shuffle=shuffle,
                drop_last=drop_last,
                generator=torch.Generator().manual_seed(self.config.seed),
            )

        return StageData(
            module=self.model.head,
            train_loader=loader(train_ds, True),
            val_loader=loader(val_ds, False),
            channels_last=False,
            on_epoch=on_epoch,
        )

    def stage_data(self, stage: Stage) -> StageData:
        if stage.backbone_fraction == 0.0 and self.config.feature_cache:
            return self._cached_stage_data(stage)
        return self._image_stage_data(stage)

    # ------------------------------------------------------------------ files
    def _write_metrics_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.state.history)
        atomic_write_text(self.run_dir / "metrics.csv", buffer.getvalue())

    def save_best(self, metrics: dict[str, Any]) -> None:
        from marinelife.infer.bundle import head_settings

        save_weights(self.model.state_dict(), self.run_dir / WEIGHTS_FILE)
        info = ModelInfo(
            architecture=self.config.architecture,
            classes=list(self.layout.classes),
            preprocess=self.preprocess,
            head=head_settings(self.config),
            metrics=metrics,
            recipe=self.config.recipe,
        )
        write_model_json(info, self.run_dir)

    def _save_last(self, optimizer, scheduler) -> None:
        st = self.state
        save_training_state(
            {
                "epoch": st.epoch,
                "stage_index": st.stage_index,
                "global_step": st.global_step,
                "best_value": st.best_value,
                "best_stage_value": st.best_stage_value,
                "bad_epochs": st.bad_epochs,
                "best_epoch_label": st.best_epoch_label,
                "history": st.history,
                "skipped_nonfinite": self.nonfinite.skipped,
                "model": self.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
            },
            self.run_dir / "last.ckpt",
        )

    def load_resume_state(self) -> dict[str, Any]:
        saved = load_training_state(self.run_dir / "last.ckpt")
        self.model.load_state_dict(saved["model"])
        st = self.state
        for key in ("epoch", "stage_index", "global_step", "best_value", "best_stage_value"):
            setattr(st, key, saved[key])
        st.bad_epochs, st.best_epoch_label = saved["bad_epochs"], saved["best_epoch_label"]
        st.history = list(saved["history"])
        self.nonfinite.skipped = saved["skipped_nonfinite"]
        set_rng_state(saved["rng"])
        return saved

    # ------------------------------------------------------------------ the loop
    def _validate(self, data: StageData) -> dict[str, float]:
        targets, probs = predict_probs(
            data.module,
            data.val_loader,
            device=self.device,
            desc="val",
            channels_last=data.channels_last,
        )
        return validation_metrics(targets, probs, self.config.label_smoothing)

    def fit(self, resume: dict[str, Any] | None = None) -> RunState:
        st = self.state
        for index in range(st.stage_index, len(self.stages)):
            stage = self.stages[index]
            resuming = resume is not None and index == st.stage_index
            if not resuming:
                st.stage_index, st.epoch, st.bad_epochs = index, 0, 0
            self._run_stage(stage, resume if resuming else None)
            resume = None
            self.restore_best()
            st.stage_index, st.epoch = index + 1, 0
        return st

    def restore_best(self) -> None:
        from marinelife.train.checkpoint import load_weights

        best = self.run_dir / WEIGHTS_FILE
        if best.exists():
            self.model.load_state_dict(load_weights(best))

    def _run_stage(self, stage: Stage, resume: dict[str, Any] | None) -> None:
        st, config = self.state, self.config
        trainable_count = set_trainable(self.model, train_backbone_fraction=stage.backbone_fraction)
        data = self.stage_data(stage)
        trainable = [(n, p) for n, p in data.module.named_parameters() if p.requires_grad]
        log.info(
            "stage %s: %d epochs, lr %g, %s trainable parameters",
            stage.name,
            stage.epochs,
            stage.lr,
            f"{trainable_count:,}",
        )
        optimizer = build_optimizer(trainable, config, stage.lr)
        scheduler = build_scheduler(
            optimizer,
            epochs=stage.epochs,
            steps_per_epoch=len(data.train_loader),
            warmup_epochs=stage.warmup_epochs,
            min_ratio=config.min_lr_ratio,
        )
        criterion = RegularizedLoss(
            config.label_smoothing,
            l2=config.head_l2 if config.head == "mlp" else 0.0,
            l2_params=list(head_l2_parameters(self.model)),
            class_weights=self._criterion_weights,
        )
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
        elif st.best_value is not None or st.stage_index > 0:
            # A later stage must beat what the earlier one achieved on its own monitor.
            baseline = self._validate(data)
            st.best_stage_value = _monitor_value(stage.monitor, baseline)
            log.info("stage %s starts from %s=%.4f", stage.name, stage.monitor, st.best_stage_value)
        else:
            st.best_stage_value = None
        if data.channels_last:
            self.model.to(memory_format=torch.channels_last)
        for epoch in range(st.epoch, stage.epochs):
            label = f"{stage.name} {epoch + 1}/{stage.epochs}"
            epoch_seed = (config.seed * 10_007 + st.stage_index * 1_009 + epoch) & 0x7FFFFFFF
            seed_everything(epoch_seed)
            data.train_loader.generator.manual_seed(epoch_seed)
            if data.on_epoch is not None:
                data.on_epoch(epoch_seed)
            start = time.perf_counter()
            train = train_one_epoch(
                data.module,
                data.train_loader,
                optimizer,
                scheduler,
                criterion,
                device=self.device,
                epoch_label=label,
                global_step=st.global_step,
                skip_nonfinite=config.skip_nonfinite,
                nonfinite=self.nonfinite,
                prepare_model=data.prepare,
                channels_last=data.channels_last,
            )
            st.global_step += train["steps"]
            val = self._validate(data)
            row = {
                "stage": stage.name,
                "epoch": len(st.history) + 1,
                "train_loss": round(train["loss"], 5),
                "train_acc": round(train["acc"], 5),
                "val_loss": round(val["loss"], 5),
                "val_acc": round(val["acc"], 5),
                "val_f1": round(val["f1"], 5),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - start, 2),
                "train_samples_per_s": round(train["samples_per_s"], 1),
            }
            st.history.append(row)
            value = _monitor_value(stage.monitor, val)
            improved = monitor_improved(stage.monitor, value, st.best_stage_value)
            if improved:
                st.best_stage_value, st.bad_epochs = value, 0
                st.best_value = value
                st.best_epoch_label = label
                self.save_best(
                    {
                        "val_loss": val["loss"],
                        "val_acc": val["acc"],
                        "val_macro_f1": val["f1"],
                        "epoch": label,
                    }
                )
            else:
                st.bad_epochs += 1
            st.epoch = epoch + 1
            self._write_metrics_csv()
            self._save_last(optimizer, scheduler)
            log.info(
                "%s  train loss %.4f acc %.3f | val loss %.4f acc %.3f f1 %.3f%s  (%.1fs)",
                label,
                train["loss"],
                train["acc"],
                val["loss"],
                val["acc"],
                val["f1"],
                "  *best" if improved else "",
                row["seconds"],
            )
            if stage.patience and st.bad_epochs >= stage.patience:
                log.info(
                    "early stopping: no %s improvement for %d epochs", stage.monitor, stage.patience
                )
                break
        if self.nonfinite.skipped:
            log.warning("skipped %d non-finite steps", self.nonfinite.skipped)


def _monitor_value(monitor: str, metrics: dict[str, float]) -> float:
    return {"val_acc": metrics["acc"], "val_loss": metrics["loss"], "val_f1": metrics["f1"]}[
        monitor
    ]


def _plain(obj: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def require_val_split(layout: DatasetLayout) -> None:
    if "val" not in layout.splits:
        raise MarineLifeError(
            "has no val/ split (needed for early stopping and checkpoints)",
            path=layout.root,
            fix=f"run `marinelife split` to make train/val/test, or add {layout.root}/val/",
        )
