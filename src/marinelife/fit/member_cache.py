"""Feature caches of an ensemble: one entry per member, built in one pass, read side by side.

Each member's pooled features are cached under a key of its own (the member's name and input
size, its weights digest, the ensemble's preprocessing), so an ensemble that shares members with
an earlier one — or a member that sees the ensemble's input unresized, like Lite2 in
``ensemble-lite``, and a single-backbone run of it at the same data config — reuses what was
built. Missing members are computed in one pass over the photos (decode and augment once, each
missing member's branch once per view); the entries are then joined per item, never copied
into one array, so memory stays what the memory maps need.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import numpy as np
import torch

from marinelife.fit import distributed
from marinelife.fit import feature_cache as fc


class JoinedFeatures:
    """``[N, views + 1, sum(F_i)]`` read from the members' ``[N, views + 1, F_i]`` entries."""

    def __init__(self, parts: Sequence[np.ndarray]):
        self.parts = list(parts)
        n, views = self.parts[0].shape[:2]
        self.shape = (n, views, sum(p.shape[2] for p in self.parts))
        self.dtype = self.parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return np.concatenate([np.asarray(p[key]) for p in self.parts], axis=-1)


def member_name(builder, i: int) -> str:
    """Member ``i``'s name in cache keys: a member fed the ensemble's input as it is keys like a
    single-backbone run of it, a resized one adds its size."""
    ensemble = builder.model.backbone
    size = round(builder.preprocess.input_size * ensemble.size_ratios[i])
    name = ensemble.names[i]
    return name if size == builder.preprocess.input_size else f"{name}@{size}"


def _build(builder, samples, members: list[int], folders, rows, views, desc, writer, engines):
    """One pass over the photos filling the entries of ``members`` (``folders``, in order).

    ``engines``: {members: [forward]}, owned by the caller: one export per set of members for the
    train and val builds of one stage, released with it (ORT sessions hold ~0.3 GB each)."""
    ensemble = builder.model.backbone

    def branches(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([ensemble.members[i](ensemble.member_input(x, i)) for i in members], 1)

    holder = engines.setdefault(tuple(members), [])
    return fc.build_feature_sets(
        samples=samples, hashes=builder._hashes_for(samples), outputs=folders, writer=writer,
        extract=builder._extractor(branches, holder),
        desc=f"{desc} ({len(members)} of {len(ensemble.members)} members)",
        **builder._build_options(rows, views),
    )  # fmt: skip


def ensemble_features(
    builder, samples, *, views: int, desc: str, engine: list | None = None
) -> JoinedFeatures:
    """The ensemble's pooled features for ``samples`` from (and into) its members' entries.

    ``engine``: the caller's holder shared by one stage's builds (see ``StageDataBuilder``)."""
    engine = [] if engine is None else engine
    if not engine:
        engine.append({})
    engines = engine[0]
    ensemble = builder.model.backbone
    hashes = builder._hashes_for(samples)
    rows = (len(samples), views + 1)
    entries = [
        (builder._cache_key(hashes, views, None, member=i), (size,))
        for i, size in enumerate(ensemble.feature_sizes)
    ]
    missing = [
        i for i, (key, shape) in enumerate(entries) if fc.cache_entry_missing(key, (*rows, *shape))
    ]
    start = time.perf_counter()
    if missing:
        folders = [(fc.cache_dir() / entries[i][0], entries[i][1]) for i in missing]
        writer = distributed.node_writes_cache(fc.cache_dir())
        if writer:  # as cached_features does: a damaged entry's meta.json goes first
            for folder, _ in folders:
                (folder / "meta.json").unlink(missing_ok=True)
        _build(builder, samples, missing, folders, rows, views, desc, writer, engines)
    parts = []
    for i, (key, shape) in enumerate(entries):
        # Found damaged when loaded: that member alone is computed again.
        rebuild = functools.partial(_rebuild_one, builder, samples, i, shape, rows, views, desc,
                                    engines)  # fmt: skip
        parts.append(fc.cached_features(key, (*rows, *shape), rebuild)[0])
    builder.cache_stats[desc] = {
        "hit": not missing,
        "seconds": round(time.perf_counter() - start, 2),
        "shape": [*rows, ensemble.num_features],
        "members_built": len(missing),
    }
    return JoinedFeatures(parts)


def _rebuild_one(builder, samples, i, shape, rows, views, desc, engines, folder, writer):
    return _build(builder, samples, [i], [(folder, shape)], rows, views, desc, writer, engines)[0]


__all__ = ["JoinedFeatures", "ensemble_features", "member_name"]
