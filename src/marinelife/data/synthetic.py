"""A small labelled dataset of procedurally drawn shapes on underwater-coloured, noisy backgrounds.

Every file and folder it writes is named as synthetic. Tests and `make demo` use it so that neither
needs a download; the classes are visually distinct, so a tiny model learns them in seconds.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from marinelife.errors import MarineLifeError

SHAPES = ("disc", "square", "triangle", "star", "ring", "stripes", "cross", "crescent")
SYNTHETIC_CLASSES = tuple(f"synthetic {name}" for name in SHAPES)
DEFAULT_COUNTS = {"train": 24, "val": 8, "test": 8}
# What encode_image can write: the formats and pixel modes a fuzzer should start from.
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
IMAGE_MODES = ("RGB", "L", "RGBA", "P", "1", "CMYK", "I;16", "LA")


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    # Vertical gradient from surface turquoise to deep blue, plus sensor-like noise.
    top = np.array([40, 160, 190]) + rng.integers(-25, 25, 3)
    bottom = np.array([5, 30, 80]) + rng.integers(-5, 20, 3)
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    grad = top * (1 - t) + bottom * t
    img = np.broadcast_to(grad, (size, size, 3)).astype(np.float32)
    # A smooth random colour field makes every background unique (as real photos are), so
    # `check` and `split` find no spurious near-duplicates in synthetic sets.
    field = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(field).resize((size, size), Image.Resampling.BICUBIC))
    img = img + (smooth.astype(np.float32) - 128) * 0.5 + rng.normal(0, 12, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _polygon(cx: float, cy: float, radius: float, points: int, rot: float, inner: float = 1.0):
    coords = []
    for k in range(points * (2 if inner != 1.0 else 1)):
        r = radius if k % 2 == 0 or inner == 1.0 else radius * inner
        step = math.pi / points if inner != 1.0 else 2 * math.pi / points
        a = rot + k * step
        coords.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return coords


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One synthetic image of ``shape`` with random position, scale, rotation and colour."""
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    radius = size * rng.uniform(0.22, 0.34)
    cx = size / 2 + rng.uniform(-0.12, 0.12) * size
    cy = size / 2 + rng.uniform(-0.12, 0.12) * size
    rot = rng.uniform(0, 2 * math.pi)
    colour = tuple(int(c) for c in rng.integers(150, 256, 3))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    width = max(2, int(radius / 3))
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius, 4, rot), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius, 3, rot), fill=colour)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, radius, 5, rot, inner=0.45), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=width)
    elif shape == "stripes":
        for k in range(-3, 4):
            off = k * radius / 2.5
            dx, dy = math.cos(rot), math.sin(rot)
            p0 = (cx + off * -dy - radius * dx, cy + off * dx - radius * dy)
            p1 = (cx + off * -dy + radius * dx, cy + off * dx + radius * dy)
            draw.line([p0, p1], fill=colour, width=max(1, width // 2))
    elif shape == "cross":
        draw.line([(cx - radius, cy), (cx + radius, cy)], fill=colour, width=width)
        draw.line([(cx, cy - radius), (cx, cy + radius)], fill=colour, width=width)
    elif shape == "crescent":
        draw.ellipse(box, fill=colour)
        shift = radius * 0.5
        draw.ellipse(
            (box[0] + shift, box[1] - shift / 2, box[2] + shift, box[3] - shift / 2),
            fill=img.getpixel((int(min(size - 1, cx + radius)), 0)),
        )
    else:
        raise ValueError(f"unknown synthetic shape {shape!r}")
    # Suspended particles and a little blur, like turbid water.
    arr = np.asarray(img).astype(np.float32)
    particles = rng.random(arr.shape[:2]) < 0.004
    arr[particles] = 230
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 0.8))
    )


def make_synthetic_dataset(
    root: str | Path,
    *,
    num_classes: int = 4,
    counts: dict[str, int] | None = None,
    size: int = 64,
    seed: int = 0,
    flat: bool = False,
) -> Path:
    """Write ``root/{train,val,test}/synthetic CLASS/*.png`` (or ``root/CLASS/*`` when ``flat``).

    ``root`` must not exist or be empty; it is returned for chaining.
    """
    if not 2 <= num_classes <= len(SHAPES):
        raise MarineLifeError(f"synthetic data supports 2 to {len(SHAPES)} classes")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise MarineLifeError("is not empty", path=root, fix="choose a new folder")
    counts = dict(DEFAULT_COUNTS if counts is None else counts)
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for shape, class_name in zip(SHAPES[:num_classes], SYNTHETIC_CLASSES):
            folder = root / class_name if flat else root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                name = f"synthetic_{shape}_{split}_{i:04d}.png"
                draw_shape(shape, size, rng).save(folder / name)
    return root


def encode_image(fmt: str, mode: str, width: int, height: int, seed: int, frames: int = 1) -> bytes:
    """A small valid random-pixel image file (for fuzzing and format tests); modes a format
    cannot store fall back to one it can, extra frames only where the format has them."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    elif mode == "P":
        img = base.quantize(colors=16)
    else:
        img = base.convert(mode)
    fallback = {"JPEG": ("L", "RGB", "CMYK"), "GIF": ("P", "L"), "WEBP": ("RGB", "RGBA"),
                "BMP": ("1", "L", "P", "RGB")}  # fmt: skip
    if fmt in fallback and img.mode not in fallback[fmt]:
        img = base.convert(fallback[fmt][0] if fmt != "BMP" else "RGB")
    if fmt == "PNG" and img.mode == "CMYK":
        img = base
    buffer = io.BytesIO()
    if frames > 1 and fmt in ("GIF", "WEBP", "PNG", "TIFF"):
        others = [base.rotate(90 * i) for i in range(1, frames)]
        if fmt == "GIF":
            others = [o.convert("P") for o in others]
        img.save(buffer, format=fmt, save_all=True, append_images=others)
    else:
        img.save(buffer, format=fmt)
    return buffer.getvalue()


def mutate_bytes(data: bytes, ops: list[tuple[str, float, bytes]]) -> bytes:
    """``data`` damaged by ``ops``: (flip|overwrite|insert|truncate|delete|duplicate, relative
    position 0..1, payload bytes), applied in order; the fuzzers' model of a broken file."""
    out = bytearray(data)
    for op, where, chunk in ops:
        at = int(where * len(out)) if out else 0
        if op == "flip" and out:
            out[min(at, len(out) - 1)] ^= chunk[0] if chunk else 0xFF
        elif op == "overwrite":
            out[at : at + len(chunk)] = chunk
        elif op == "insert":
            out[at:at] = chunk
        elif op == "truncate":
            del out[at:]
        elif op == "delete":
            del out[at : at + max(1, len(chunk))]
        elif op == "duplicate":
            out[at:at] = out[at : at + 64]
    return bytes(out)
