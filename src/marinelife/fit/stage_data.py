"""What a stage trains on: images through the model, or cached frozen features into the head."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from marinelife.config import TrainConfig
from marinelife.data.dataset import EpochSeedSampler, ImageSampleDataset
from marinelife.data.preprocess import PreprocessConfig
from marinelife.data.scan import DatasetLayout
from marinelife.data.transforms import build_eval_transform, build_train_transform
from marinelife.fileio import file_sha256
from marinelife.fit import distributed
from marinelife.fit import feature_cache as fc
from marinelife.fit.boundary_cache import split_within_budget
from marinelife.fit.member_cache import ensemble_features, member_name
from marinelife.fit.stages import Stage, plan_stages
from marinelife.models import Classifier, frozen_batchnorm_eval
from marinelife.models.onnx_forward import onnx_extract
from marinelife.models.precision import autocast

log = logging.getLogger(__name__)


def auto_workers(config: TrainConfig, n_items: int) -> int:
    if config.workers >= 0:
        return config.workers
    if n_items < 256:
        return 0  # worker start-up costs more than it saves on tiny sets
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
    # Indices into the val split of this rank's val items, in loader order (all of them in one
    # process); the trainer uses them to reassemble the whole val set from every rank's shard.
    val_index: list[int] = dataclasses.field(default_factory=list)


def drop_last_batch(items: int, batch_size: int) -> bool:
    """A last batch of one breaks BatchNorm1d in the head: drop it only in that case."""
    return items % batch_size == 1


class StageDataBuilder:
    """Builds each stage's loaders; owns the transforms, content hashes and feature-cache stats."""

    def __init__(
        self,
        *,
        config: TrainConfig,
        model: Classifier,
        layout: DatasetLayout,
        preprocess: PreprocessConfig,
        device: torch.device,
    ):
        self.config, self.model, self.layout = config, model, layout
        self.preprocess, self.device = preprocess, device
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
        views = config.feature_cache_views if config.augment.enabled and config.feature_cache else 0
        self.views = fc.views_by_data(views, len(self.train_samples), len(layout.classes))
        self._hashes: dict[Path, str] = {}

    def class_weights(self) -> torch.Tensor | None:
        if self.config.class_weights != "balanced":
            return None
        counts = np.bincount(
            [self.class_to_index[s.label] for s in self.train_samples],
            minlength=len(self.layout.classes),
        ).astype(np.float64)
        weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
        return torch.tensor(weights, dtype=torch.float32)

    def _order(self, dataset, *, shuffle: bool):
        """This rank's item order: a seeded shuffle sharded per rank, or its val shard."""
        if not shuffle:
            return distributed.shard_indices(len(dataset))
        # The sampler owns its generator: the DataLoader draws worker seeds from its own one, and
        # sharing them would make the order depend on whether workers persist.
        generator = torch.Generator().manual_seed(self.config.seed)
        if self.config.sampler == "balanced":
            targets = np.asarray(dataset.targets)
            freq = np.bincount(targets, minlength=len(self.layout.classes))
            weights = 1.0 / np.maximum(freq[targets], 1)
            inner = torch.utils.data.WeightedRandomSampler(
                weights.tolist(), len(targets), replacement=True, generator=generator
            )
        else:
            inner = torch.utils.data.RandomSampler(dataset, generator=generator)
        # Every rank draws the same order and keeps its stride of it (DistributedSampler-style).
        return distributed.ShardSampler(inner)

    def _loader(self, dataset, *, shuffle: bool, seeded_items: bool = True) -> DataLoader:
        """``seeded_items``: wrap in :class:`EpochSeedSampler` (image datasets seed augmentation
        per (epoch, item)); cached-feature datasets take plain indices."""
        batch_size = self.config.batch_size
        order = self._order(dataset, shuffle=shuffle)
        workers = auto_workers(self.config, len(dataset)) if seeded_items else 0
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochSeedSampler(order) if seeded_items else order,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.config.seed),
            drop_last=shuffle and drop_last_batch(len(order), batch_size),
        )

    def _image_stage_data(self, stage: Stage) -> StageData:
        train_ds = ImageSampleDataset(
            self.train_samples, self.class_to_index, self.train_transform, draft_size=self.draft
        )
        val_ds = ImageSampleDataset(
            self.val_samples, self.class_to_index, self.eval_transform, draft_size=self.draft
        )
        train_loader = self._loader(train_ds, shuffle=True)
        val_loader = self._loader(val_ds, shuffle=False)

        def on_epoch(seed: int) -> None:
            train_loader.sampler.epoch_seed = seed
            train_loader.sampler.inner.set_epoch(seed)

        return StageData(
            module=self.model,
            train_loader=train_loader,
            val_loader=val_loader,
            channels_last=self.config.channels_last,
            prepare=frozen_batchnorm_eval,
            on_epoch=on_epoch,
            val_index=list(val_loader.sampler.inner),
        )

    def _hashes_for(self, samples) -> list[str]:
        missing = list(dict.fromkeys(s.path for s in samples if s.path not in self._hashes))
        # Each rank reads its share of the files; every rank ends up with every hash.
        mine = missing[distributed.rank() :: distributed.world_size()]
        for part in distributed.all_gather_objects({p: file_sha256(p) for p in mine}):
            self._hashes.update(part)
        return [self._hashes[s.path] for s in samples]

    def features(
        self,
        samples,
        *,
        views: int,
        desc: str,
        extract_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        item_shape: tuple[int, ...] | None = None,
        part_sha: str | None = None,
        engine: list[Callable[[torch.Tensor], torch.Tensor]] | None = None,
    ) -> np.ndarray:
        """Cached ``[N, views + 1, *item_shape]`` outputs of ``extract_fn`` (default: the frozen
        backbone's pooled features) for the clean view and ``views`` augmented views.

        ``engine``: a holder for the chosen forward pass, shared by the calls of one stage over
        the same frozen part so that train and val builds export it once."""
        if extract_fn is None and hasattr(self.model.backbone, "members"):
            return ensemble_features(self, samples, views=views, desc=desc, engine=engine)
        hashes = self._hashes_for(samples)
        key = self._cache_key(hashes, views, part_sha)
        extract_fn = extract_fn or self.model.forward_features_pooled
        item_shape = item_shape or (self.model.num_features,)
        shape = (len(samples), views + 1, *item_shape)
        extract = self._extractor(extract_fn, engine)
        start = time.perf_counter()
        features, hit = fc.cached_features(
            key,
            shape,
            lambda folder, writer: fc.build_features(
                samples=samples, hashes=hashes, extract=extract, item_shape=item_shape,
                folder=folder, desc=desc, writer=writer, **self._build_options(shape, views),
            ),
        )  # fmt: skip
        seconds = round(time.perf_counter() - start, 2)
        self.cache_stats[desc] = {"hit": hit, "seconds": seconds, "shape": list(shape)}
        return features

    def _cache_key(
        self, hashes: list[str], views: int, part_sha: str | None, *, member: int | None = None
    ) -> str:
        """Pooled features (``part_sha`` None) or activations below a boundary of that hash;
        ``member``: that ensemble member's pooled features (``member_cache.member_name``)."""
        backbone = self.model.backbone
        name = self.config.architecture + ("" if part_sha is None else ":boundary")
        if member is not None:
            name, backbone = member_name(self, member), backbone.members[member]
        weights_sha = part_sha or getattr(backbone, "marinelife_weights", {}).get("sha256", "")
        return fc.cache_key(
            image_hashes=hashes, backbone=name, weights_sha=weights_sha,
            preprocess=self.preprocess.to_dict(), augment=dataclasses.asdict(self.config.augment),
            views=views, seed=self.config.seed, precision=self.config.amp,
        )  # fmt: skip

    def _build_options(self, shape: tuple[int, ...], views: int) -> dict[str, Any]:
        return {
            "eval_transform": self.eval_transform,
            "train_transform": self.train_transform,
            "views": views,
            "seed": self.config.seed,
            "batch_size": max(32, self.config.batch_size),
            "workers": auto_workers(self.config, shape[0] * shape[1]),
            "draft": self.draft,
        }

    def _extractor(self, extract_fn: Callable, engine: list | None) -> Callable:
        """The frozen pass for a cache build: ONNX Runtime when it matches, else eager."""
        self.model.eval()
        channels_last = self.config.channels_last
        if channels_last:
            self.model.backbone.to(memory_format=torch.channels_last)

        @torch.inference_mode()
        def extract_eager(inputs: torch.Tensor) -> torch.Tensor:
            inputs = inputs.to(self.device)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.config.amp):
                return extract_fn(inputs).float().contiguous()

        engine = [] if engine is None else engine

        def extract(inputs: torch.Tensor) -> torch.Tensor:
            if not engine:  # chosen on the first batch: a cache hit never exports anything
                engine.append(self._onnx_extract(extract_fn) or extract_eager)
            return engine[0](inputs)

        return extract

    def _onnx_extract(self, extract_fn: Callable) -> Callable | None:
        """ONNX Runtime for the frozen pass on a CPU in fp32 (``feature_engine=auto``)."""
        auto = self.config.feature_engine == "auto" and self.config.amp == "none"
        if not auto or self.device.type != "cpu":
            return None
        fn = onnx_extract(
            extract_fn, self.model, self.preprocess.input_size, threads=self.config.threads
        )
        if fn is not None:
            log.info("frozen forward passes run in ONNX Runtime (feature_engine=auto)")
        return fn

    def _cached_data(self, module, train_feats, val_feats, *, prepare=None) -> StageData:
        train_ds = fc.CachedFeatureDataset(
            train_feats, [self.class_to_index[s.label] for s in self.train_samples], train=True
        )
        val_ds = fc.CachedFeatureDataset(
            val_feats, [self.class_to_index[s.label] for s in self.val_samples], train=False
        )
        train_loader = self._loader(train_ds, shuffle=True, seeded_items=False)
        val_loader = self._loader(val_ds, shuffle=False, seeded_items=False)

        def on_epoch(seed: int) -> None:
            # Views are drawn for the whole set on every rank alike, so sharding keeps them.
            train_ds.set_epoch_views(np.random.default_rng(seed))
            # Reseeded per epoch (not once per stage), so a resumed run replays the same order.
            train_loader.sampler.set_epoch(seed)

        return StageData(
            module=module,
            train_loader=train_loader,
            val_loader=val_loader,
            channels_last=False,
            prepare=prepare,
            on_epoch=on_epoch,
            val_index=list(val_loader.sampler),
        )

    def _head_stage_data(self) -> StageData:
        engine: list = []  # one export for both builds
        joint_engine: list = []  # likewise for the one-pass builds of features + boundary
        later = self._planned_boundary_split()
        features = []
        for samples, views, split_name in (
            (self.train_samples, self.views, "train"),
            (self.val_samples, 0, "val"),
        ):
            both = (
                self._features_and_boundary(samples, views, split_name, later, joint_engine)
                if later
                else None
            )
            features.append(
                both
                if both is not None
                else self.features(
                    samples, views=views, desc=f"features {split_name}", engine=engine
                )  # fmt: skip
            )
        return self._cached_data(self.model.head, *features)

    def _planned_boundary_split(self):
        """The fine-tune stage's verified split, when a later stage will use a boundary cache."""
        later = [s for s in plan_stages(self.config) if 0.0 < s.backbone_fraction < 1.0]
        return self._boundary_split(later[0]) if later and self.config.feature_cache else None

    def _features_and_boundary(self, samples, views: int, split_name: str, split, engine: list):
        """Pooled features and boundary activations in one frozen pass, when both are missing.

        The frozen part then runs once per view instead of twice (once per cache). Each entry
        keeps its own key and checksum, so the fine-tune stage later finds its boundary cache
        exactly as if it had built it. Returns None when either entry already exists.
        """
        hashes = self._hashes_for(samples)
        pooled = (self.model.num_features,)
        entries = [
            (self._cache_key(hashes, views, None), pooled),
            (self._cache_key(hashes, views, split.bottom_sha256()), split.activation_shape),
        ]
        rows = (len(samples), views + 1)
        if not all(fc.cache_entry_missing(key, (*rows, *shape)) for key, shape in entries):
            return None

        def both(x: torch.Tensor) -> torch.Tensor:
            acts = split.bottom(x)
            return torch.cat([split.top.pooled(acts), acts.flatten(1)], dim=1)

        start = time.perf_counter()
        folders = [(fc.cache_dir() / key, shape) for key, shape in entries]
        writer = distributed.node_writes_cache(fc.cache_dir())
        if writer:  # as cached_features does: a damaged entry's meta.json goes first
            for folder, _ in folders:
                (folder / "meta.json").unlink(missing_ok=True)
        features, _ = fc.build_feature_sets(
            samples=samples, hashes=hashes, extract=self._extractor(both, engine), outputs=folders,
            desc=f"features + boundary {split_name}", writer=writer,
            **self._build_options(rows, views),
        )  # fmt: skip
        seconds = round(time.perf_counter() - start, 2)
        for desc, (_, shape) in zip(("features", "boundary"), entries):
            self.cache_stats[f"{desc} {split_name}"] = {
                "hit": False, "seconds": seconds, "shape": [*rows, *shape], "one_pass": True,
            }  # fmt: skip
        return features

    def _boundary_split(self, stage: Stage):
        """The verified split at ``stage``'s freeze boundary within the memory budget, or None."""
        n_items = len(self.train_samples) * (self.views + 1) + len(self.val_samples)
        return split_within_budget(
            self.model, stage.backbone_fraction, self.preprocess.input_size,
            items=n_items, budget_mb=self.config.boundary_cache_mb,
        )  # fmt: skip

    def _boundary_stage_data(self, stage: Stage) -> StageData | None:
        split = self._boundary_split(stage)
        if split is None:
            return None
        item_shape, needed_mb = split.activation_shape, split.megabytes
        sha = split.bottom_sha256()
        common = {"extract_fn": split.bottom, "item_shape": item_shape, "part_sha": sha}
        common["engine"] = []  # one export for both builds
        train_acts = self.features(
            self.train_samples, views=self.views, desc="boundary train", **common
        )
        val_acts = self.features(self.val_samples, views=0, desc="boundary val", **common)
        self.cache_stats["boundary"] = {"megabytes": round(needed_mb, 1), "shape": item_shape}
        return self._cached_data(split.top, train_acts, val_acts, prepare=frozen_batchnorm_eval)

    def stage_data(self, stage: Stage) -> StageData:
        if self.config.feature_cache and stage.backbone_fraction == 0.0:
            return self._head_stage_data()
        if self.config.feature_cache and 0.0 < stage.backbone_fraction < 1.0:
            # Exact: everything below the boundary is frozen, so its BatchNorm is in eval mode.
            data = self._boundary_stage_data(stage)
            if data is not None:
                return data
        return self._image_stage_data(stage)
