"""The built-in "shapes" dataset: synthetic images with the difficulties detectors face.

``generate_shapes(root, cfg)`` writes a COCO root::

    root/annotations/instances_train.json   root/train/000000.png ...
    root/annotations/instances_val.json     root/val/000000.png ...

What the images exercise:

- six classes with imbalanced frequencies (``CLASS_NAMES`` / ``CLASS_FREQUENCIES``), some of
  them easy to confuse (circle, ellipse, ring);
- object sizes from ``min_object_size`` to ``max_object_size`` of the image side (the longer
  side of the box), log-uniform, so small objects are the most frequent;
- overlapping objects: some objects are placed on top of an earlier one with a similar size,
  so some ground-truth pairs overlap with IoU above 0.5. Objects are painted in order, later
  ones occlude earlier ones; an object left less than ``min_visible`` visible is not painted
  and not annotated. Boxes are the full (amodal) extent of the shape, clipped to the image;
- objects cut by the image border;
- textured backgrounds (gradients, stripes, low-frequency noise), sensor noise, and unlabelled
  distractors (lines, blobs, polygon outlines);
- about ``empty_fraction`` of the images without any object.

Determinism: image ``i`` of split ``s`` is drawn from its own ``numpy.random.Generator`` seeded
with ``SeedSequence([seed, split_id, i])``, so an image does not depend on how many images are
generated or in which process. PNGs are written with fixed settings and the JSON with sorted
keys, so the same seed gives byte-identical files (with the same zlib and Pillow versions).

Shape shorthand: images are ``(H, W, 3)`` uint8 arrays here (NumPy, before they become
tensors in ``Sample``); boxes are pixel-edge ``xyxy`` integers (a box ``[x0, y0, x1, y1]``
covers pixels ``x0..x1-1``). COCO's ``[x, y, w, h]`` is written only into the JSON.
"""

from __future__ import annotations

import colorsys
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from workbench.atomic import write_text_atomic
from workbench.errors import ConfigError

CLASS_NAMES = ("circle", "square", "triangle", "ellipse", "star", "ring")
CLASS_FREQUENCIES = (0.35, 0.25, 0.15, 0.12, 0.08, 0.05)
SPLITS = ("train", "val")
FORMAT_VERSION = "v1"
PNG_COMPRESS_LEVEL = 1  # fast; noisy images compress little better at higher levels
JSON_FLOAT_DIGITS = 3


@dataclass(frozen=True)
class ShapesConfig:
    """How many images, how large, and the knobs of the scene generator.

    Sizes are fractions of the image side. ``overlap_p`` is the chance that an object is placed
    over an earlier one (offset by ``overlap_offset`` of its size), which is what makes
    ground-truth pairs with IoU above 0.5.
    """

    num_train: int = 1000
    num_val: int = 200
    image_size: int = 256
    seed: int = 0
    empty_fraction: float = 0.05
    max_objects: int = 8
    min_object_size: float = 0.04
    max_object_size: float = 0.6
    overlap_p: float = 0.3
    overlap_offset: tuple[float, float] = (0.12, 0.35)
    min_visible: float = 0.3
    max_distractors: int = 5
    noise_sigma: tuple[float, float] = (2.0, 10.0)

    def __post_init__(self) -> None:
        if self.num_train < 0 or self.num_val < 0:
            raise ConfigError("shapes: the numbers of images must not be negative")
        if self.image_size < 32:
            raise ConfigError(f"shapes: image size {self.image_size} is below the minimum 32")
        if not 0 < self.min_object_size <= self.max_object_size <= 1:
            raise ConfigError("shapes: object sizes must satisfy 0 < min <= max <= 1")
        if self.max_objects < 1:
            raise ConfigError("shapes: max_objects must be at least 1")

    def num_images(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val}[split]


# --------------------------------------------------------------------------- geometry


def _regular_polygon(n: int, radius: float = 1.0, phase: float = 0.0) -> np.ndarray:
    """Vertices ``(n, 2)`` of a regular polygon centred on the origin."""
    t = phase + 2 * math.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``(n, 2)`` points about the origin by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def shape_outline(name: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Unit-scale polygons ``[(n, 2), ...]`` of one shape, centred on the origin.

    The first polygon is filled; the following ones are holes (the ring's inner circle). The
    caller scales them so that the extent of the rotated shape is the wanted size.
    """
    angle = rng.uniform(0, 2 * math.pi)
    if name == "circle":
        return [_regular_polygon(64)]
    if name == "square":
        return [_rotate(_regular_polygon(4, phase=math.pi / 4), angle)]
    if name == "triangle":
        pts = _regular_polygon(3, phase=-math.pi / 2)
        pts = pts + rng.uniform(-0.15, 0.15, size=pts.shape)
        return [_rotate(pts, angle)]
    if name == "ellipse":
        pts = _regular_polygon(64) * np.array([1.0, rng.uniform(0.35, 0.65)])
        return [_rotate(pts, angle)]
    if name == "star":
        radii = np.tile([1.0, rng.uniform(0.38, 0.5)], 5)
        return [_rotate(_regular_polygon(10) * radii[:, None], angle)]
    if name == "ring":
        return [_regular_polygon(64), _regular_polygon(64, radius=rng.uniform(0.45, 0.7))]
    raise ValueError(f"unknown shape {name!r}")


def _place(polygons: list[np.ndarray], centre: tuple[float, float], size: float) -> list[np.ndarray]:
    """Scale unit polygons so the outer one covers ``size`` pixels (longer side), then move.

    A filled polygon covers the pixels of both its end points: an extent of ``size - 1``.
    """
    outer = polygons[0]
    extent = float((outer.max(0) - outer.min(0)).max())
    mid = (outer.max(0) + outer.min(0)) / 2
    scale = (size - 1) / extent
    return [(p - mid) * scale + np.asarray(centre) for p in polygons]


def rasterize(polygons: list[np.ndarray], image_size: int) -> tuple[int, int, np.ndarray] | None:
    """Binary mask of filled polygons (holes after the first), cropped to its window.

    Returns ``(y0, x0, mask)`` with ``mask`` a ``(h, w)`` bool array placed at ``(y0, x0)`` of
    the image, or None when nothing of the shape lies inside the image.
    """
    lo = np.floor(polygons[0].min(0)).astype(int)
    hi = np.ceil(polygons[0].max(0)).astype(int) + 1
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), image_size), min(int(hi[1]), image_size)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    for k, poly in enumerate(polygons):
        pts = [(float(x - x0), float(y - y0)) for x, y in poly]
        draw.polygon(pts, fill=255 if k == 0 else 0)
    mask = np.asarray(canvas) > 0
    if not mask.any():
        return None
    return y0, x0, mask


def mask_box(y0: int, x0: int, mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight pixel-edge box ``(x0, y0, x1, y1)`` of a windowed mask (non-empty)."""
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    return (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)


# --------------------------------------------------------------------------- painting


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour ``(3,)`` in 0..255 with varied hue, saturation and value."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.25, 1.0), rng.uniform(0.25, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background ``(size, size, 3)`` float32 in 0..255.

    One of: a linear gradient, stripes (sine or square wave at a random angle and period),
    or low-frequency colour noise; sometimes stripes are laid over another background.
    """
    x, y = _coords(size)
    c0, c1 = _random_colour(rng), _random_colour(rng)
    kind = rng.integers(3)
    if kind == 0:
        a = rng.uniform(0, 2 * math.pi)
        t = (x * math.cos(a) + y * math.sin(a)) / size
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = c0 + t[..., None] * (c1 - c0)
    elif kind == 1:
        img = _stripes(rng, x, y, size, c0, c1)
    else:
        grid = int(rng.integers(3, 12))
        small = rng.uniform(0, 255, size=(grid, grid, 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC), np.float32)
        img = 0.5 * img + 0.5 * c0
    if kind != 1 and rng.uniform() < 0.3:
        img = 0.6 * img + 0.4 * _stripes(rng, x, y, size, c0, c1)
    return img.astype(np.float32)


def _stripes(rng, x, y, size, c0, c1) -> np.ndarray:
    """Stripes ``(size, size, 3)`` between colours c0 and c1."""
    a = rng.uniform(0, math.pi)
    period = rng.uniform(0.03, 0.2) * size
    wave = np.sin(2 * math.pi * (x * math.cos(a) + y * math.sin(a)) / period)
    if rng.uniform() < 0.5:
        wave = np.sign(wave)
    t = 0.5 + 0.5 * wave
    contrast = rng.uniform(0.2, 0.7)
    return c0 + (contrast * t)[..., None] * (c1 - c0)


def paint_distractors(rng: np.random.Generator, img: np.ndarray, max_count: int) -> np.ndarray:
    """Draw unlabelled clutter (lines, blobs, polygon outlines) on ``img`` ``(H, W, 3)``."""
    count = int(rng.integers(0, max_count + 1))
    if count == 0:
        return img
    size = img.shape[0]
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(count):
        colour = tuple(int(c) for c in _random_colour(rng))
        kind = rng.integers(3)
        if kind == 0:  # a line
            p = rng.uniform(0, size, size=4)
            draw.line([float(v) for v in p], fill=colour, width=int(rng.integers(1, 4)))
        elif kind == 1:  # a blob: a wobbly polygon
            n = 14
            radii = rng.uniform(0.6, 1.0, size=n)
            pts = _regular_polygon(n) * radii[:, None] * rng.uniform(0.03, 0.12) * size
            pts = pts + rng.uniform(0, size, size=2)
            draw.polygon([(float(a), float(b)) for a, b in pts], fill=colour)
        else:  # an outline of a pentagon, hexagon or octagon
            n = int(rng.choice([5, 6, 8]))
            pts = _regular_polygon(n, phase=rng.uniform(0, math.pi)) * rng.uniform(0.05, 0.2) * size
            pts = pts + rng.uniform(0, size, size=2)
            draw.polygon([(float(a), float(b)) for a, b in pts], outline=colour, width=int(rng.integers(1, 3)))
    return np.asarray(canvas, dtype=np.float32)


@dataclass(frozen=True)
class ShapeObject:
    """One annotated object: category id (1-based), pixel-edge box xyxy, mask pixel count."""

    category_id: int
    box: tuple[int, int, int, int]
    area: int


def _sample_layout(rng: np.random.Generator, cfg: ShapesConfig) -> list[tuple[int, tuple[int, int, np.ndarray]]]:
    """Draw the objects of one image: ``[(class index, (y0, x0, mask)), ...]`` in depth order."""
    size = cfg.image_size
    if rng.uniform() < cfg.empty_fraction:
        return []
    n = int(rng.integers(1, cfg.max_objects + 1))
    log_lo, log_hi = math.log(cfg.min_object_size), math.log(cfg.max_object_size)
    placed: list[tuple[float, float, float]] = []  # centre x, centre y, size
    layout = []
    for _ in range(n):
        cls = int(rng.choice(len(CLASS_NAMES), p=CLASS_FREQUENCIES))
        if placed and rng.uniform() < cfg.overlap_p:
            cx, cy, s0 = placed[int(rng.integers(len(placed)))]
            s = s0 * rng.uniform(0.85, 1.2)
            a = rng.uniform(0, 2 * math.pi)
            r = rng.uniform(*cfg.overlap_offset) * s0
            cx, cy = cx + r * math.cos(a), cy + r * math.sin(a)
        else:
            s = math.exp(rng.uniform(log_lo, log_hi)) * size
            cx, cy = rng.uniform(0.2 * s, size - 0.2 * s, size=2)
        s = min(max(s, cfg.min_object_size * size, 4.0), cfg.max_object_size * size)
        # at most about a third of an object is cut by the border: no unrecognisable slivers
        cx, cy = (float(np.clip(c, 0.2 * s, size - 0.2 * s)) for c in (cx, cy))
        polys = _place(shape_outline(CLASS_NAMES[cls], rng), (cx, cy), s)
        window = rasterize(polys, size)
        if window is None:
            continue
        placed.append((cx, cy, s))
        layout.append((cls, window))
    return layout


def _visible(layout, size: int, min_visible: float) -> list[bool]:
    """Which objects keep at least ``min_visible`` of their pixels under those painted later."""
    owner = np.full((size, size), -1, dtype=np.int32)
    for k, (_, (y0, x0, mask)) in enumerate(layout):
        view = owner[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
        view[mask] = k
    counts = np.bincount(owner.ravel() + 1, minlength=len(layout) + 1)[1:]
    return [counts[k] >= min_visible * mask.sum() for k, (_, (_, _, mask)) in enumerate(layout)]


def _paint_object(rng: np.random.Generator, img: np.ndarray, y0: int, x0: int, mask: np.ndarray) -> None:
    """Fill ``mask`` at ``(y0, x0)`` of ``img`` with a shaded colour that stands out locally."""
    h, w = mask.shape
    view = img[y0 : y0 + h, x0 : x0 + w]
    local = view[mask].mean(0)
    colour = _random_colour(rng)
    for _ in range(8):
        if np.abs(colour - local).sum() > 120:
            break
        colour = _random_colour(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    shade = (xx * math.cos(a) + yy * math.sin(a)) / max(h, w) * rng.uniform(-40, 40)
    fill = np.clip(colour + shade[..., None], 0, 255)
    view[mask] = fill[mask]


def render_image(rng: np.random.Generator, cfg: ShapesConfig) -> tuple[np.ndarray, list[ShapeObject]]:
    """One scene: the image ``(S, S, 3)`` uint8 and its objects (in depth order)."""
    size = cfg.image_size
    img = background(rng, size)
    img = paint_distractors(rng, img, cfg.max_distractors)
    layout = _sample_layout(rng, cfg)
    keep = _visible(layout, size, cfg.min_visible)
    objects = []
    for (cls, (y0, x0, mask)), k in zip(layout, keep):
        if not k:
            continue
        _paint_object(rng, img, y0, x0, mask)
        objects.append(ShapeObject(cls + 1, mask_box(y0, x0, mask), int(mask.sum())))
    sigma = rng.uniform(*cfg.noise_sigma)
    img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), objects


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of all other images."""
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))


def encode_png(img: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 image, with fixed encoder settings."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
    return buf.getvalue()


def _render_and_write(task: tuple[ShapesConfig, str, int, str]) -> list[ShapeObject]:
    """Render image ``index`` of ``split`` and write it to ``path``; returns its objects."""
    cfg, split, index, path = task
    img, objects = render_image(image_rng(cfg.seed, split, index), cfg)
    Path(path).write_bytes(encode_png(img))
    return objects


# --------------------------------------------------------------------------- COCO JSON


def file_name(index: int) -> str:
    return f"{index:06d}.png"


def coco_dict(cfg: ShapesConfig, split: str, objects_per_image: list[list[ShapeObject]]) -> dict:
    """The COCO dictionary of one split (image ids and annotation ids start at 1)."""
    size = cfg.image_size
    images, annotations = [], []
    for index, objects in enumerate(objects_per_image):
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name(index), "width": size, "height": size})
        for obj in objects:
            x0, y0, x1, y1 = obj.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj.category_id,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": obj.area,
                    "iscrowd": 0,
                }
            )
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    return {
        "info": {
            "description": f"workbench built-in shapes dataset, {split} split",
            "version": FORMAT_VERSION,
            "generator": params,
        },
        "licenses": [],
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASS_NAMES)],
        "images": images,
        "annotations": annotations,
    }


def _round_floats(obj, digits: int):
    """Round every float in a JSON-like structure, so the text does not depend on float noise."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round_floats(v, digits) for v in obj]
    return obj


def dumps_json(obj) -> str:
    """Stable JSON text: sorted keys, rounded floats, compact separators, final newline."""
    return json.dumps(_round_floats(obj, JSON_FLOAT_DIGITS), sort_keys=True, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- entry points


def _default_workers(num_images: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if num_images < 64 else min(4, cores)


def generate_shapes(
    root: Path, cfg: ShapesConfig = ShapesConfig(), progress: bool = True, workers: int | None = None
) -> Path:
    """Write the shapes dataset into ``root`` (a COCO root, see the module doc); returns root.

    ``workers`` processes render images in parallel (None: up to 4 for larger sets, 0: in this
    process); the output does not depend on it.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    tasks = []
    for split in SPLITS:
        (root / split).mkdir(exist_ok=True)
        tasks += [(cfg, split, i, str(root / split / file_name(i))) for i in range(cfg.num_images(split))]
    workers = _default_workers(len(tasks)) if workers is None else workers
    bar = tqdm(total=len(tasks), desc="shapes", unit="img", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for objects in pool.map(_render_and_write, tasks, chunksize=16):
                results.append(objects)
                bar.update()
    else:
        results = []
        for task in tasks:
            results.append(_render_and_write(task))
            bar.update()
    bar.close()
    start = 0
    for split in SPLITS:
        n = cfg.num_images(split)
        text = dumps_json(coco_dict(cfg, split, results[start : start + n]))
        write_text_atomic(root / "annotations" / f"instances_{split}.json", text)
        start += n
    return root


def cache_dir() -> Path:
    """Where built-in datasets are cached: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``."""
    env = os.environ.get("WORKBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "workbench"


def cache_name(cfg: ShapesConfig) -> str:
    """Folder name of a configuration, e.g. ``shapes-v1-1000-200-256px-seed0-<hash>``."""
    params = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    digest = hashlib.sha256(params.encode()).hexdigest()[:8]
    return f"shapes-{FORMAT_VERSION}-{cfg.num_train}-{cfg.num_val}-{cfg.image_size}px-seed{cfg.seed}-{digest}"


def builtin_shapes_root(cfg: ShapesConfig | None = None, progress: bool = True) -> Path:
    """The COCO root of the built-in shapes dataset, generated on first use and reused after.

    The default configuration is 1000 train / 200 val images of 256 px, seed 0. The set is
    generated into a temporary folder beside the cache folder and renamed into place, so an
    interrupted generation never leaves a partial dataset behind.
    """
    cfg = cfg or ShapesConfig()
    base = cache_dir()
    final = base / cache_name(cfg)
    if final.is_dir():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-" + final.name + "-", dir=base))
    try:
        generate_shapes(tmp, cfg, progress=progress)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a concurrent generation that finished first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
