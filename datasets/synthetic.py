"""Seeded synthetic anomaly-detection data for smoke runs and tests.

Nominal images share one texture per category: a base colour with a smooth colour
field, periodic stripes and pixel grain. Each image draws its own field, stripe
phase and grain, so nominal images are similar but never identical. Anomalous
images add a defect with sharp edges at a random position, size and colour:

``"blob"``
    A dark irregular polygon.
``"scratch"``
    A bright polyline a few pixels wide.
``"patch"``
    A saturated colour rectangle.
``"combined"``
    A blob and a scratch in one image.

Every image has its own random stream derived from the seed and the image's role,
so one image does not change when the count of another changes. Generated trees
carry a JSON stamp of their parameters and are reused when the stamp matches.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datasets._staging import write_tree_once

logger = logging.getLogger(__name__)

DEFECT_TYPES = ("blob", "scratch", "patch", "combined")
STAMP_NAME = ".synthetic.json"
# Bump when the drawing code changes, so that stamped trees are regenerated.
GENERATOR_VERSION = 1
# Defects stay this share of the side away from the border, so that the usual
# 224/256 centre crop never cuts them off.
_MARGIN = 0.08


@dataclass(frozen=True)
class TextureStyle:
    """Texture shared by every image of one synthetic category.

    Attributes
    ----------
    base_colour : numpy.ndarray of shape (3,)
        Mean RGB value, mid-range so that dark and bright defects both stand out.
    stripe_colour : numpy.ndarray of shape (3,)
        RGB amplitude of the stripes.
    stripe_period : float
        Stripe period in pixels at 256 px image size.
    stripe_angle : float
        Stripe direction in radians.
    """

    base_colour: np.ndarray
    stripe_colour: np.ndarray
    stripe_period: float
    stripe_angle: float


def make_rng(seed: int, *keys: str | int) -> np.random.Generator:
    """Return a Generator that depends only on ``seed`` and ``keys``.

    Strings are hashed with CRC-32, which is stable across processes, unlike
    Python's ``hash``.
    """
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    words = [k if isinstance(k, int) else zlib.crc32(k.encode()) for k in keys]
    return np.random.default_rng([seed, *words])


def draw_style(rng: np.random.Generator) -> TextureStyle:
    """Draw the texture of one category."""
    return TextureStyle(
        base_colour=rng.uniform(100, 160, size=3),
        stripe_colour=rng.uniform(8, 20, size=3),
        stripe_period=float(rng.uniform(10, 18)),
        stripe_angle=float(rng.uniform(0, np.pi)),
    )


def render_nominal(
    rng: np.random.Generator, style: TextureStyle, size: int
) -> np.ndarray:
    """Render one nominal image.

    Returns
    -------
    numpy.ndarray of shape (size, size, 3), dtype uint8
    """
    image = np.broadcast_to(style.base_colour, (size, size, 3)).astype(np.float64)
    image = image + _smooth_field(rng, size, amplitude=6.0)
    image = image + _stripes(rng, style, size)
    image = image + rng.normal(0.0, 3.0, size=(size, size, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def add_defect(
    rng: np.random.Generator, image: np.ndarray, defect_type: str
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect onto a copy of ``image``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the position, size, shape and colour.
    image : numpy.ndarray of shape (H, W, 3), dtype uint8
        Nominal image.
    defect_type : str
        One of :data:`DEFECT_TYPES`.

    Returns
    -------
    image : numpy.ndarray of shape (H, W, 3), dtype uint8
    mask : numpy.ndarray of shape (H, W), dtype bool
        True where the defect was drawn; never empty.
    """
    if defect_type not in DEFECT_TYPES:
        raise ValueError(
            f"unknown synthetic defect type {defect_type!r}; "
            f"choose from {list(DEFECT_TYPES)}"
        )
    parts = ["blob", "scratch"] if defect_type == "combined" else [defect_type]
    result = image.copy()
    mask = np.zeros(image.shape[:2], dtype=bool)
    for part in parts:
        part_mask, colour = _DRAWERS[part](rng, image.shape[0])
        grain = rng.normal(0.0, 3.0, size=(int(part_mask.sum()), 3))
        result[part_mask] = np.clip(np.rint(colour + grain), 0, 255).astype(np.uint8)
        mask |= part_mask
    return result, mask


def generate_synthetic_mvtec(
    root: Path,
    category: str = "synthetic",
    n_train: int = 40,
    n_test_good: int = 10,
    n_defects_per_type: int = 8,
    defect_types: Sequence[str] = ("blob", "scratch"),
    image_size: int = 256,
    seed: int = 0,
) -> Path:
    """Write a synthetic category in the MVTec AD layout, or reuse a matching one.

    Files are ``train/good/NNN.png``, ``test/good/NNN.png``,
    ``test/<defect_type>/NNN.png`` and ``ground_truth/<defect_type>/NNN_mask.png``
    (0/255 grey PNG).

    Parameters
    ----------
    root : Path
        Folder that receives the category folder.
    category : str, default "synthetic"
        Category folder name; also varies the texture.
    n_train, n_test_good : int, default 40, 10
        Nominal training and test images.
    n_defects_per_type : int, default 8
        Anomalous test images per defect type.
    defect_types : sequence of str, default ("blob", "scratch")
        Defect folders to write, from :data:`DEFECT_TYPES`.
    image_size : int, default 256
        Width and height in pixels.
    seed : int, default 0
        Non-negative seed; the same parameters give identical files.

    Returns
    -------
    Path
        The category folder ``root / category``.

    Raises
    ------
    DatasetLayoutError
        If ``root / category`` exists, is not empty and was not written by this
        module.
    """
    params = {
        "layout": "mvtec",
        "category": category,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_defects_per_type": n_defects_per_type,
        "defect_types": list(defect_types),
        "image_size": image_size,
        "seed": seed,
    }
    validate_counts(params, ["n_train", "n_test_good", "n_defects_per_type"])
    validate_defect_types(defect_types)

    def write(folder: Path) -> None:
        _write_mvtec_tree(folder, params)

    return write_synthetic_tree(Path(root) / category, params, write)


def validate_counts(params: dict, names: Sequence[str]) -> None:
    """Raise ValueError unless each named count is at least 1 and the size fits."""
    for name in names:
        if int(params[name]) < 1:
            raise ValueError(f"{name} must be at least 1, got {params[name]}")
    size = params.get("image_size")
    if size is not None and int(size) < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {size}")


def validate_defect_types(defect_types: Sequence[str]) -> None:
    """Raise ValueError for an empty, repeated or unknown defect type list."""
    unknown = [t for t in defect_types if t not in DEFECT_TYPES]
    if not defect_types or unknown or len(set(defect_types)) != len(defect_types):
        raise ValueError(
            f"defect_types must be distinct names from {list(DEFECT_TYPES)}, "
            f"got {list(defect_types)}"
        )


def write_synthetic_tree(
    target: Path, params: dict, write: Callable[[Path], None]
) -> Path:
    """Write a generated tree to ``target`` unless one with ``params`` is there.

    Raises
    ------
    DatasetLayoutError
        If ``target`` exists, is not empty and was not written by this module.
    """
    stamp = {"generator_version": GENERATOR_VERSION, **params}
    return write_tree_once(target, stamp, write, STAMP_NAME)


def save_rgb(path: Path, image: np.ndarray) -> None:
    """Save an (H, W, 3) uint8 array, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(path)


def save_mask(path: Path, mask: np.ndarray, value: int = 255) -> None:
    """Save an (H, W) bool mask as a grey image with ``value`` where it is True."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * np.uint8(value)).save(path)


def _write_mvtec_tree(folder: Path, params: dict) -> None:
    seed, size, category = params["seed"], params["image_size"], params["category"]
    style = draw_style(make_rng(seed, "style", category))

    for split, count in (("train", params["n_train"]), ("test", params["n_test_good"])):
        for i in range(count):
            image = render_nominal(make_rng(seed, split, "good", i), style, size)
            save_rgb(folder / split / "good" / f"{i:03d}.png", image)

    for defect_type in params["defect_types"]:
        for i in range(params["n_defects_per_type"]):
            rng = make_rng(seed, "test", defect_type, i)
            image, mask = add_defect(rng, render_nominal(rng, style, size), defect_type)
            save_rgb(folder / "test" / defect_type / f"{i:03d}.png", image)
            save_mask(folder / "ground_truth" / defect_type / f"{i:03d}_mask.png", mask)


def _smooth_field(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """Slowly varying colour offsets of shape (size, size, 3)."""
    coarse = rng.normal(0.0, amplitude, size=(4, 4, 3)).astype(np.float32)
    channels = [
        np.asarray(
            Image.fromarray(coarse[:, :, c]).resize(
                (size, size), Image.Resampling.BICUBIC
            )
        )
        for c in range(3)
    ]
    return np.stack(channels, axis=2).astype(np.float64)


def _stripes(rng: np.random.Generator, style: TextureStyle, size: int) -> np.ndarray:
    """Stripes of shape (size, size, 3) with a per-image phase and slight tilt."""
    period = style.stripe_period * size / 256
    angle = style.stripe_angle + rng.normal(0.0, 0.02)
    phase = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size]
    wave = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
    return wave[:, :, None] * style.stripe_colour


def _draw_blob(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    radius = rng.uniform(0.06, 0.13) * size
    margin = _MARGIN * size + radius
    centre = rng.uniform(margin, size - margin, size=2)
    n_vertices = int(rng.integers(9, 16))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n_vertices))
    radii = radius * rng.uniform(0.6, 1.0, n_vertices)
    points = (
        centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    )
    mask = _draw_mask(size, lambda draw: draw.polygon(_as_xy(points), fill=1))
    colour = rng.uniform(0, 45, size=3)
    return mask, colour


def _draw_scratch(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(2, round(size * rng.uniform(0.008, 0.016)))
    length = rng.uniform(0.3, 0.55) * size
    low, high = _MARGIN * size, (1 - _MARGIN) * size
    start = rng.uniform(0.2 * size, 0.8 * size, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    points = [start]
    for _ in range(int(rng.integers(2, 4))):
        angle += rng.normal(0.0, 0.35)
        step = length / 3 * np.array([np.cos(angle), np.sin(angle)])
        points.append(np.clip(points[-1] + step, low, high))
    mask = _draw_mask(
        size, lambda draw: draw.line(_as_xy(np.array(points)), fill=1, width=width)
    )
    colour = rng.uniform(225, 255, size=3)
    return mask, colour


def _draw_patch(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    half = rng.uniform(0.05, 0.1, size=2) * size
    margin = _MARGIN * size + half
    centre = rng.uniform(margin, size - margin)
    box = [*(centre - half), *(centre + half)]
    mask = _draw_mask(size, lambda draw: draw.rectangle(box, fill=1))
    colour = np.zeros(3)
    colour[rng.permutation(3)[:2]] = rng.uniform([200, 0], [255, 60])
    return mask, colour


def _draw_mask(
    size: int, draw_shape: Callable[[ImageDraw.ImageDraw], None]
) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw_shape(ImageDraw.Draw(canvas))
    return np.asarray(canvas) > 0


def _as_xy(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points]


_DRAWERS = {"blob": _draw_blob, "scratch": _draw_scratch, "patch": _draw_patch}
