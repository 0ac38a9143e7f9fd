"""Fit a classifier through its stage plan: early stopping, restore-best, atomic checkpoints,
exact resume. Frozen stages train the head on cached features when the feature cache is on.

Under torchrun every rank runs this same loop on its shard (DDP keeps the weights identical);
validation covers the whole val set once, its metrics and every stop/keep decision come from
rank 0, and only rank 0 writes files. What the other ranks need from those files during training
(the best weights, the resume checkpoint) rank 0 reads and broadcasts.
"""

from __future__ import annotations

import csv
import gc
import io
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marinelife.config import TrainConfig
from marinelife.data.preprocess import PreprocessConfig
from marinelife.data.scan import DatasetLayout
from marinelife.errors import MarineLifeError
from marinelife.fileio import atomic_write_text, remove_stale_temp_files, save_weights
from marinelife.fit import distributed, tracking
from marinelife.fit.checkpoint import (
    load_training_state,
    rng_state,
    save_training_state,
    set_rng_state,
)
from marinelife.fit.epoch import NonFiniteCounter, train_one_epoch, validation_metrics
from marinelife.fit.schedule import build_scheduler, record_stage_plan
from marinelife.fit.stage_data import StageData, StageDataBuilder
from marinelife.fit.stages import RegularizedLoss, Stage, build_optimizer, monitor_improved
from marinelife.fit.tracking import log_epoch
from marinelife.models import head_l2_parameters, set_trainable
from marinelife.models.bundle import WEIGHTS_FILE, ModelInfo, write_model_json
from marinelife.models.forward import predict_logits, predict_probs
from marinelife.models.precision import make_scaler

log = logging.getLogger(__name__)
METRIC_COLUMNS = ("stage", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1",
                  "lr", "seconds", "train_samples_per_s")  # fmt: skip


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
        self.last_stage_data: StageData | None = None  # the val inputs of the final weights
        self.nonfinite = NonFiniteCounter()
        self.data = StageDataBuilder(
            config=config, model=model, layout=layout, preprocess=preprocess, device=device
        )
        self._criterion_weights = self.data.class_weights()
        if self._criterion_weights is not None:
            self._criterion_weights = self._criterion_weights.to(device)
        # One scaler for the whole run (fp16 only), saved in last.ckpt so a resume is exact.
        self.scaler = make_scaler(config.amp, device)

    # ------------------------------------------------------------------ files
    def _write_metrics_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.state.history)
        atomic_write_text(self.run_dir / "metrics.csv", buffer.getvalue())

    def save_best(self, metrics: dict[str, Any]) -> None:
        from marinelife.models.bundle import head_settings

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
        extra = {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}
        save_training_state(
            {
                **extra,
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

    def _read_last(self) -> dict[str, Any]:
        for leftover in remove_stale_temp_files(self.run_dir):
            log.info("removed %s, left by a write that was interrupted", leftover.name)
        return load_training_state(self.run_dir / "last.ckpt")

    def load_resume_state(self) -> dict[str, Any]:
        # Rank 0 reads (and may fall back to last.prev.ckpt); every rank gets the same state.
        saved = distributed.on_main(self._read_last)
        self.model.load_state_dict(saved["model"])
        if self.scaler is not None and "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])
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
        """Metrics over the whole val set: each rank predicts its shard, rank 0 reassembles them
        in order and computes, every rank receives the result."""
        # Each rank's last training step updated its BatchNorm statistics from its own batch;
        # validate (like the checkpoint rank 0 saves) with rank 0's.
        distributed.broadcast_module_state(data.module, buffers_only=True)
        targets, probs = predict_probs(
            data.module,  # the plain module: no DDP hooks, shards may differ in length
            data.val_loader,
            device=self.device,
            desc="val",
            channels_last=data.channels_last,
            amp=self.config.amp,
        )
        whole = distributed.gather_in_order(data.val_index, targets, probs)
        metrics = None if whole is None else validation_metrics(*whole, self.config.label_smoothing)
        return distributed.broadcast_object(metrics)

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
        if distributed.is_main():
            tracking.close(self.run_dir)
        return st

    def cached_val_logits(self) -> np.ndarray | None:
        """The val logits of the model as it is now (best weights restored) from the last stage's
        cached inputs, in the order of the val split; None when that stage read photos or ran
        sharded. Exact: everything below the cached features or activations is frozen."""
        data = self.last_stage_data
        if data is None or data.module is self.model or distributed.world_size() > 1:
            return None
        was_training = data.module.training  # predict_logits switches to eval; put it back
        try:
            _, logits = predict_logits(
                data.module, data.val_loader, device=self.device, desc="val logits",
                channels_last=data.channels_last, amp=self.config.amp, show_progress=False,
            )  # fmt: skip
        finally:
            data.module.train(was_training)
        return logits

    def restore_best(self) -> None:
        from marinelife.fileio import load_weights

        best = self.run_dir / WEIGHTS_FILE

        def load() -> bool:
            if not best.exists():
                return False
            self.model.load_state_dict(load_weights(best))
            return True

        if distributed.on_main(load):
            distributed.broadcast_module_state(self.model)

    def _training_module(self, data: StageData) -> torch.nn.Module:
        """What the optimizer steps through: DDP under torchrun, compiled with ``compile``."""
        module = distributed.wrap_for_training(data.module, self.device)
        if self.config.compile:
            module = torch.compile(module)
        return module

    def _run_stage(self, stage: Stage, resume: dict[str, Any] | None) -> None:
        st, config = self.state, self.config
        trainable_count = set_trainable(
            self.model,
            train_backbone_fraction=stage.backbone_fraction,
            train_batchnorm=stage.train_batchnorm,
        )
        data = self.last_stage_data = self.data.stage_data(stage)
        trainable = [(n, p) for n, p in data.module.named_parameters() if p.requires_grad]
        log.info(
            "stage %s: %d epochs, lr %g, %s trainable parameters, batch %d x %d processes",
            stage.name,
            stage.epochs,
            stage.lr,
            f"{trainable_count:,}",
            config.batch_size,
            distributed.world_size(),
        )
        optimizer = build_optimizer(trainable, config, stage.lr)
        if distributed.is_main():
            record_stage_plan(self.run_dir, stage, len(data.train_loader), config)
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
        # Wrapped after set_trainable: DDP hooks only the parameters that train in this stage.
        module = self._training_module(data)
        for epoch in range(st.epoch, stage.epochs):
            if self._run_epoch(stage, epoch, data, module, optimizer, scheduler, criterion):
                log.info(
                    "early stopping: no %s improvement for %d epochs", stage.monitor, stage.patience
                )
                break
        # Drop this stage's DDP wrapper now: its gradient hooks must not outlive the stage.
        del module
        gc.collect()
        if self.nonfinite.skipped:
            log.warning("skipped %d non-finite steps", self.nonfinite.skipped)

    def _run_epoch(self, stage, epoch, data, module, optimizer, scheduler, criterion) -> bool:
        """One epoch: train, validate, keep the best, checkpoint. True when it is time to stop."""
        st, config = self.state, self.config
        label = f"{stage.name} {epoch + 1}/{stage.epochs}"
        # Same seed on every rank: identical dropout streams and one shared sample order.
        epoch_seed = (config.seed * 10_007 + st.stage_index * 1_009 + epoch) & 0x7FFFFFFF
        seed_everything(epoch_seed)
        data.train_loader.generator.manual_seed(epoch_seed)  # worker base seeds
        if data.on_epoch is not None:
            data.on_epoch(epoch_seed)
        start = time.perf_counter()
        train = train_one_epoch(
            module,
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
            amp=config.amp,
            scaler=self.scaler,
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
        # Every rank holds the same metrics, but the decision is still rank 0's, broadcast, so
        # the ranks cannot drift apart and one stopping early never leaves the others waiting.
        improved = distributed.broadcast_object(
            monitor_improved(stage.monitor, value, st.best_stage_value)
        )
        if improved:
            st.best_stage_value, st.bad_epochs = value, 0
            st.best_value = value
            st.best_epoch_label = label
        else:
            st.bad_epochs += 1
        st.epoch = epoch + 1
        if distributed.is_main():
            log_epoch(self.run_dir, row)
            if improved:
                self.save_best(
                    {
                        "val_loss": val["loss"],
                        "val_acc": val["acc"],
                        "val_macro_f1": val["f1"],
                        "epoch": label,
                    }
                )
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
        stop = bool(stage.patience and st.bad_epochs >= stage.patience)
        return distributed.broadcast_object(stop)


def _monitor_value(monitor: str, metrics: dict[str, float]) -> float:
    return {"val_acc": metrics["acc"], "val_loss": metrics["loss"], "val_f1": metrics["f1"]}[
        monitor
    ]


def require_val_split(layout: DatasetLayout) -> None:
    if "val" not in layout.splits:
        raise MarineLifeError(
            "has no val/ split (needed for early stopping and checkpoints)",
            path=layout.root,
            fix=f"run `marinelife split` to make train/val/test, or add {layout.root}/val/",
        )
