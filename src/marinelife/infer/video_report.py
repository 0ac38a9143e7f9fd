"""One offline HTML page for classified videos: timeline, per-class summary and key frames.

Key frames are the ``per_class`` highest-confidence frames of each class. Two ways to get their
pixels, since :class:`~marinelife.infer.video.FrameResult` keeps none:

* stream: pass ``on_frame=keys`` (a :class:`KeyFrames`) to ``predict_video``; it keeps only
  the best few thumbnails per class while the video streams (a few hundred kB per video);
* re-read: without ``key_frames``, :func:`write_video_page` decodes the files again up to the
  last key frame (:func:`read_frames`). Simpler for the caller, but a second decoding pass.

The page is plain escaped HTML with inline CSS and relative links to ``figures/*.png`` and
``frames/*.jpg``: no scripts, no external resources, so the folder opens anywhere.
"""

from __future__ import annotations

import heapq
import html
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from PIL import Image

from marinelife.data.figures import save_figure
from marinelife.errors import ImageDecodeError
from marinelife.infer.video import ClassSummary, FrameResult, clock, open_video, probe_video

THUMB_SIDE = 320  # px, the longer side of a key-frame JPEG
_MAX_LABEL = 32  # characters of a class name on the timeline's axis

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1180px;
padding:0 24px 48px;color:#1d2733;line-height:1.45}h1{font-size:1.6em;margin:24px 0 4px}
h2{border-bottom:2px solid #dde3ea;padding-bottom:4px;margin-top:36px;overflow-wrap:anywhere}
h3{margin:22px 0 8px}h4{margin:14px 0 6px}table{border-collapse:collapse;margin:8px 0 16px;
font-size:.92em}th,td{border:1px solid #dde3ea;padding:4px 9px;text-align:left}
th{background:#f3f6fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eef1f4}.keys{display:flex;flex-wrap:wrap;gap:12px}
.keys figure{margin:0;width:240px}figcaption{font-size:.85em;color:#5a6877}
.note{color:#5a6877;font-size:.9em;overflow-wrap:anywhere}.warn{color:#a4262c}
tr.unk td{color:#8a96a3;font-style:italic}footer{margin-top:40px;color:#8a96a3;font-size:.8em}
"""


@dataclass(frozen=True)
class KeyFrame:
    file: str
    label: str
    frame: int
    time_s: float
    confidence: float
    rgb: np.ndarray  # a thumbnail, longer side <= THUMB_SIDE


class KeyFrames:
    """``on_frame`` hook for ``predict_video``: the ``per_class`` best thumbnails per class."""

    def __init__(self, per_class: int = 3):
        self.per_class = per_class
        self._heaps: dict[tuple[str, str], list] = {}
        self._tie = itertools.count()

    def __call__(self, result: FrameResult, rgb: np.ndarray) -> None:
        if result.unknown or self.per_class < 1:
            return
        heap = self._heaps.setdefault((result.file, result.label), [])
        # Min-heap on (confidence, earlier frame wins a tie): the root is the one to drop.
        key = (result.confidence, -result.frame)
        if len(heap) >= self.per_class and key <= heap[0][:2]:
            return  # not better than the worst kept: skip the resize
        item = (*key, next(self._tie), _keyframe(result, rgb))
        if len(heap) < self.per_class:
            heapq.heappush(heap, item)
        else:
            heapq.heapreplace(heap, item)

    def best(self, file: str, label: str) -> list[KeyFrame]:
        """Highest confidence first."""
        return [item[3] for item in sorted(self._heaps.get((file, label), []), reverse=True)]


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = THUMB_SIDE / max(height, width)
    if scale >= 1:
        return np.ascontiguousarray(rgb)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _keyframe(result: FrameResult, rgb: np.ndarray) -> KeyFrame:
    return KeyFrame(
        result.file, result.label, result.frame, result.time_s, result.confidence, _thumbnail(rgb)
    )


def read_frames(path: str | Path, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """RGB frames at these decode indices (``FrameResult.frame``); unreadable ones left out.

    Best effort: a damaged file gives what it can. Decodes from the start to the largest index,
    converting only the wanted frames (the same counting as ``sample_frames``).
    """
    wanted = {int(i) for i in indices if int(i) >= 0}
    found: dict[int, np.ndarray] = {}
    if not wanted:
        return found
    try:
        capture, _ = open_video(Path(path))
    except ImageDecodeError:
        return found
    try:
        for index in range(max(wanted) + 1):
            if not capture.grab():
                break
            if index in wanted:
                ok, bgr = capture.retrieve()
                if ok and bgr is not None:
                    found[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    return found


def _reread_key_frames(
    file: str, results: Sequence[FrameResult], per_class: int
) -> dict[str, list[KeyFrame]]:
    by_label: dict[str, list[FrameResult]] = {}
    for r in results:
        if not r.unknown:
            by_label.setdefault(r.label, []).append(r)
    best = {
        label: sorted(items, key=lambda r: (-r.confidence, r.frame))[:per_class]
        for label, items in by_label.items()
    }
    pixels = read_frames(file, (r.frame for items in best.values() for r in items))
    return {
        label: [_keyframe(r, pixels[r.frame]) for r in items if r.frame in pixels]
        for label, items in best.items()
    }


def _slug(text: str, limit: int = 60) -> str:
    # File names on disk come from us, never verbatim from user strings.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit] or "video"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…"


def _mmss(seconds: float, _pos: object = None) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def timeline_figure(
    results: Sequence[FrameResult], labels: Sequence[str], duration_s: float, path: Path
) -> Path:
    """Classes (first seen on top) × time; one mark per confident frame, opacity = confidence."""
    rows = {label: i for i, label in enumerate(labels)}
    height = min(1.3 + 0.32 * max(len(labels), 1), 12.0)
    fig = Figure(figsize=(10.5, height))
    ax = fig.add_subplot()
    palette = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    xs, ys, colours = [], [], []
    for r in results:
        if r.unknown or r.label not in rows:
            continue
        red, green, blue, _ = palette(rows[r.label] % palette.N)
        alpha = min(max(r.confidence, 0.12), 1.0) if math.isfinite(r.confidence) else 0.12
        xs.append(r.time_s)
        ys.append(rows[r.label])
        colours.append((red, green, blue, alpha))
    if xs:
        ax.scatter(xs, ys, c=colours, marker="|", s=160, linewidths=2.2)
    else:
        ax.text(0.5, 0.5, "no confident frames", transform=ax.transAxes, ha="center")
    # Class names are user data: no mathtext, so "$" in a name is just a dollar sign.
    ax.set_yticks(range(len(labels)), [_short(n) for n in labels], parse_math=False)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(0, max(duration_s, 1.0))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 3, 5, 6, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(_mmss))
    ax.set_xlabel("time in the video (m:ss)")
    ax.grid(axis="x", color="#e6eaef")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return save_figure(fig, path, dpi=110)


def _duration(file: str, results: Sequence[FrameResult]) -> float:
    last = max((r.time_s for r in results), default=0.0)
    try:
        header = probe_video(file).duration_s or 0.0
    except ImageDecodeError:
        header = 0.0  # gone or unreadable now: the sampled frames still say how long it ran
    # A header far beyond the last frame is an estimate gone wrong, not footage to show.
    return max(last, header if header < 10 * last + 60 else last)


def _table(rows: Sequence[ClassSummary]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("class", "first seen", "last seen", "frames", "max conf.", "mean conf.")
    )
    body = "".join(
        f"<tr{' class=unk' if s.unknown else ''}><td>{_esc(s.label)}</td>"
        f"<td class='n'>{clock(s.first_s)}</td>"
        f"<td class='n'>{clock(s.last_s)}</td><td class='n'>{s.frames}</td>"
        f"<td class='n'>{s.max_confidence:.3f}</td><td class='n'>{s.mean_confidence:.3f}</td></tr>"
        for s in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(
    number: int,
    file: str,
    results: Sequence[FrameResult],
    summaries: Sequence[ClassSummary],
    out_dir: Path,
    keys: KeyFrames | None,
    per_class: int,
    note: str | None,
) -> str:
    stem = f"{number:02d}_{_slug(Path(file).stem)}"
    labels = [s.label for s in summaries if not s.unknown]
    figure = timeline_figure(
        results, labels, _duration(file, results), out_dir / "figures" / f"{stem}_timeline.png"
    )
    unknown = sum(r.unknown for r in results)
    parts = [
        f"<section><h2>{_esc(Path(file).name)}</h2>",
        f"<p class='note'>{_esc(file)} · {len(results)} frames sampled, {unknown} unknown"
        f" (not shown on the timeline)</p>",
    ]
    if note:
        parts.append(f"<p class='note warn'>{_esc(note)}</p>")
    parts.append(
        f"<figure><img src='{quote(figure.relative_to(out_dir).as_posix())}' "
        f"alt='timeline of {_esc(Path(file).name)}'></figure>"
    )
    parts.append(_table(summaries) if summaries else "<p>No frames were classified.</p>")
    chosen = (
        {label: keys.best(file, label) for label in labels}
        if keys is not None
        else _reread_key_frames(file, results, per_class)
    )
    if any(chosen.values()):
        parts.append("<h3>Key frames</h3>")
    for c, label in enumerate(labels):
        shots = chosen.get(label, [])[:per_class]
        if not shots:
            continue
        parts.append(f"<h4>{_esc(label)}</h4><div class='keys'>")
        for rank, shot in enumerate(shots):
            name = f"frames/{stem}_c{c:03d}_{rank}_f{shot.frame}.jpg"
            (out_dir / "frames").mkdir(parents=True, exist_ok=True)
            Image.fromarray(shot.rgb).save(out_dir / name, quality=85)
            parts.append(
                f"<figure><img src='{quote(name)}' alt='{_esc(label)} at {clock(shot.time_s)}'>"
                f"<figcaption>{clock(shot.time_s)} · frame {shot.frame} · "
                f"confidence {shot.confidence:.3f}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def write_video_page(
    results: Iterable[FrameResult],
    summaries: Iterable[ClassSummary],
    out_dir: Path,
    *,
    title: str,
    key_frames: KeyFrames | None = None,
    per_class: int = 3,
    notes: Mapping[str, str] | None = None,
) -> Path:
    """Write ``OUT/<video>.html`` (one video) or ``OUT/index.html`` (several); returns its path.

    ``results`` and ``summaries`` (from :func:`~marinelife.infer.video.summarize`) may cover
    several files; each gets a section. ``key_frames``: the :class:`KeyFrames` that watched
    ``predict_video``; without it, the key frames are re-read from the files. ``notes``: a line
    per file to show in its section, e.g. ``{"dive.mp4": "truncated after 2:03.4"}``.
    """
    results = list(results)
    summaries = list(summaries)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list(dict.fromkeys([r.file for r in results] + [s.file for s in summaries]))
    sections = [
        _section(
            n,
            file,
            [r for r in results if r.file == file],
            [s for s in summaries if s.file == file],
            out_dir,
            key_frames,
            per_class,
            (notes or {}).get(file),
        )
        for n, file in enumerate(files, 1)
    ]
    page = out_dir / (f"{_slug(Path(files[0]).stem)}.html" if len(files) == 1 else "index.html")
    body = "\n".join(sections) or "<p>No videos.</p>"
    page.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1><p class='note'>{len(files)} video(s), {len(results)} frames "
        "classified. Timeline marks are frames whose label passed the rejection test; fainter "
        f"means less confident.</p>\n{body}\n<footer>marinelife</footer></body></html>\n",
        encoding="utf-8",
    )
    return page
