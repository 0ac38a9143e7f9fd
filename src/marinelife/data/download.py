"""`marinelife download`: fetch the Kaggle Sea Animals dataset with kagglehub, then `split` it."""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

from marinelife.data.image_io import is_image_path
from marinelife.data.scan import EXPECTED_LAYOUT, SPLIT_ALIASES, visible_subdirs
from marinelife.data.split import check_destination, run_split
from marinelife.errors import MarineLifeError

log = logging.getLogger(__name__)

KAGGLE_DATASET = "vencerlanz09/sea-animals-image-dataste"
_HELP = (
    "check network/credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY), "
    "or download manually and run `marinelife split SRC DST`"
)


def _has_images(folder: Path) -> bool:
    try:
        return any(p.is_file() and is_image_path(p) for p in folder.iterdir())
    except OSError:
        return False


def find_class_root(folder: Path, *, max_depth: int = 4) -> Path:
    """The folder inside a download that holds the class folders (or train/val/test folders).

    Archives nest it (``.../versions/N/Sea Animals/CLASS/``), so search breadth-first for the first
    folder with a train split or with at least two sub-folders that directly contain images.
    """
    queue = deque([(Path(folder), 0)])
    while queue:
        current, depth = queue.popleft()
        try:
            subdirs = visible_subdirs(current)
        except OSError:
            continue
        if any(SPLIT_ALIASES.get(d.name.lower()) == "train" for d in subdirs):
            return current
        if sum(_has_images(d) for d in subdirs) >= 2:
            return current
        if depth < max_depth:
            queue.extend((d, depth + 1) for d in subdirs)
    raise MarineLifeError(
        "contains no class folders with images", path=folder, fix=EXPECTED_LAYOUT.capitalize()
    )


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def run_download(dest: Path, *, seed: int = 42) -> Path:
    """Download :data:`KAGGLE_DATASET` (kagglehub cache) and split it 70/15/15 into ``dest``."""
    dest = Path(dest).expanduser()
    check_destination(dest)  # fail before a long download, not after
    try:
        import kagglehub

        downloaded = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, auth, HTTP and import errors all mean "cannot"
        raise MarineLifeError(
            f"could not download {KAGGLE_DATASET}: {_reason(exc)}; {_HELP}"
        ) from exc
    root = find_class_root(downloaded)
    log.info("downloaded %s to %s; splitting into %s", KAGGLE_DATASET, root, dest)
    # Hard links save a second copy of the download (kagglehub cache); falls back to copying.
    return run_split(root, dest, val=0.15, test=0.15, seed=seed, mode="link")
