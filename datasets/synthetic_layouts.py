"""Synthetic data in the VisA (raw archive), MVTec LOCO AD, UCSD Ped2 and generic
folder layouts, so that every loader can be tested end to end without real data.

The images come from :mod:`datasets.synthetic`, and every tree is stamped and
reused in the same way as there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from datasets.synthetic import (
    TextureStyle,
    add_defect,
    draw_style,
    make_rng,
    render_nominal,
    save_mask,
    save_rgb,
    validate_counts,
    validate_defect_types,
    write_synthetic_tree,
)

logger = logging.getLogger(__name__)

# Defects drawn for the two MVTec LOCO AD types. A colour patch represents a logical
# anomaly, and a blob plus a scratch, saved as two masks, a structural one.
LOCO_DEFECTS = {
    "logical_anomalies": ("patch",),
    "structural_anomalies": ("blob", "scratch"),
}
# Values of the first and second LOCO mask file. Real LOCO masks also use values
# other than 255.
LOCO_MASK_VALUES = (255, 238)


def generate_synthetic_visa_raw(
    root: Path,
    objects: Sequence[str] = ("synth_a", "synth_b"),
    n_train: int = 8,
    n_test_good: int = 3,
    n_anomalous: int = 4,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write objects in the raw VisA archive layout with ``split_csv/1cls.csv``.

    Images are ``<object>/Data/Images/{Normal,Anomaly}/*.JPG``. Raw masks in
    ``<object>/Data/Masks/Anomaly/*.png`` contain the values 1 to 3 where the
    defect is, to exercise the rule that any non-zero value is anomalous.

    Returns
    -------
    Path
        ``root``, the raw archive folder to pass to ``prepare_visa``.
    """
    params = {
        "layout": "visa_raw",
        "objects": list(objects),
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_anomalous": n_anomalous,
        "image_size": image_size,
        "seed": seed,
    }
    validate_counts(params, ["n_train", "n_test_good", "n_anomalous"])

    def write(folder: Path) -> None:
        rows = [
            row for name in objects for row in _write_visa_object(folder, name, params)
        ]
        (folder / "split_csv").mkdir()
        columns = ["object", "split", "label", "image", "mask"]
        pd.DataFrame(rows, columns=columns).to_csv(
            folder / "split_csv" / "1cls.csv", index=False
        )

    return write_synthetic_tree(Path(root), params, write)


def generate_synthetic_loco(
    root: Path,
    category: str = "synthetic_loco",
    n_train: int = 8,
    n_validation: int = 3,
    n_test_good: int = 3,
    n_defects_per_type: int = 3,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a category in the MVTec LOCO AD layout.

    Structural anomalies get two mask files, ``000.png`` (value 255) and
    ``001.png`` (value 238); logical anomalies get one.

    Returns
    -------
    Path
        The category folder ``root / category``.
    """
    params = {
        "layout": "mvtec_loco",
        "category": category,
        "n_train": n_train,
        "n_validation": n_validation,
        "n_test_good": n_test_good,
        "n_defects_per_type": n_defects_per_type,
        "image_size": image_size,
        "seed": seed,
    }
    validate_counts(params, ["n_train", "n_validation", "n_test_good"])
    validate_counts(params, ["n_defects_per_type"])

    def write(folder: Path) -> None:
        _write_loco_tree(folder, params)

    return write_synthetic_tree(Path(root) / category, params, write)


def generate_synthetic_ped2(
    root: Path,
    n_train_clips: int = 3,
    n_test_clips: int = 3,
    n_frames: int = 12,
    frame_size: tuple[int, int] = (48, 32),
    seed: int = 0,
) -> Path:
    """Write clips in the UCSD Ped2 layout under ``root/UCSDped2``.

    Frames are 8-bit grey TIFFs of small dark walkers on a static background.
    In the labelled frames of a test clip a large bright object crosses the
    scene quickly. ``Test/UCSDped2.m`` lists those frames, the last clip with
    two ranges, and ``TestNNN_gt/NNN.bmp`` contains a 0/255 mask for every frame.

    Parameters
    ----------
    frame_size : tuple of int, default (48, 32)
        Width and height in pixels.

    Returns
    -------
    Path
        The dataset folder ``root / "UCSDped2"``.
    """
    params = {
        "layout": "ucsd_ped2",
        "n_train_clips": n_train_clips,
        "n_test_clips": n_test_clips,
        "n_frames": n_frames,
        "frame_size": list(frame_size),
        "seed": seed,
    }
    validate_counts(params, ["n_train_clips", "n_test_clips"])
    if n_frames < 6:
        raise ValueError(f"n_frames must be at least 6, got {n_frames}")

    def write(folder: Path) -> None:
        _write_ped2_tree(folder, params)

    return write_synthetic_tree(Path(root) / "UCSDped2", params, write)


def generate_synthetic_folder(
    root: Path,
    category: str = "synthetic_folder",
    n_good: int = 20,
    n_defects_per_type: int = 4,
    defect_types: Sequence[str] = ("blob", "scratch"),
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a category in the generic folder layout with ``masks/``.

    Files are ``good/NNN.png``, ``<defect_type>/NNN.png`` and
    ``masks/<defect_type>/NNN_mask.png``.

    Returns
    -------
    Path
        The category folder ``root / category``.
    """
    params = {
        "layout": "folder",
        "category": category,
        "n_good": n_good,
        "n_defects_per_type": n_defects_per_type,
        "defect_types": list(defect_types),
        "image_size": image_size,
        "seed": seed,
    }
    validate_counts(params, ["n_good", "n_defects_per_type"])
    validate_defect_types(defect_types)

    def write(folder: Path) -> None:
        _write_folder_tree(folder, params)

    return write_synthetic_tree(Path(root) / category, params, write)


def _write_visa_object(folder: Path, name: str, params: dict) -> list[list[str]]:
    seed, size = params["seed"], params["image_size"]
    style = draw_style(make_rng(seed, "style", name))
    images = Path(name) / "Data" / "Images"
    rows = []

    n_good = params["n_train"] + params["n_test_good"]
    for i in range(n_good):
        relative = images / "Normal" / f"{i:04d}.JPG"
        _save_jpeg(
            folder / relative, render_nominal(make_rng(seed, name, i), style, size)
        )
        split = "train" if i < params["n_train"] else "test"
        rows.append([name, split, "normal", relative.as_posix(), ""])

    for i in range(params["n_anomalous"]):
        rng = make_rng(seed, name, "anomaly", i)
        image, mask = add_defect(rng, render_nominal(rng, style, size), "blob")
        relative = images / "Anomaly" / f"{i:03d}.JPG"
        mask_relative = Path(name) / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png"
        _save_jpeg(folder / relative, image)
        save_mask(folder / mask_relative, mask, value=1 + i % 3)
        rows.append(
            [name, "test", "anomaly", relative.as_posix(), mask_relative.as_posix()]
        )
    return rows


def _write_loco_tree(folder: Path, params: dict) -> None:
    seed, size, category = params["seed"], params["image_size"], params["category"]
    style = draw_style(make_rng(seed, "style", category))
    for split, count in (
        ("train", params["n_train"]),
        ("validation", params["n_validation"]),
        ("test", params["n_test_good"]),
    ):
        for i in range(count):
            image = render_nominal(make_rng(seed, split, "good", i), style, size)
            save_rgb(folder / split / "good" / f"{i:03d}.png", image)

    for defect_type, parts in LOCO_DEFECTS.items():
        for i in range(params["n_defects_per_type"]):
            rng = make_rng(seed, "test", defect_type, i)
            image = render_nominal(rng, style, size)
            mask_dir = folder / "ground_truth" / defect_type / f"{i:03d}"
            for index, part in enumerate(parts):
                image, mask = add_defect(rng, image, part)
                save_mask(mask_dir / f"{index:03d}.png", mask, LOCO_MASK_VALUES[index])
            save_rgb(folder / "test" / defect_type / f"{i:03d}.png", image)


def _write_folder_tree(folder: Path, params: dict) -> None:
    seed, size, category = params["seed"], params["image_size"], params["category"]
    style = draw_style(make_rng(seed, "style", category))
    for i in range(params["n_good"]):
        image = render_nominal(make_rng(seed, "good", i), style, size)
        save_rgb(folder / "good" / f"{i:03d}.png", image)

    for defect_type in params["defect_types"]:
        for i in range(params["n_defects_per_type"]):
            rng = make_rng(seed, defect_type, i)
            image, mask = add_defect(rng, render_nominal(rng, style, size), defect_type)
            save_rgb(folder / defect_type / f"{i:03d}.png", image)
            save_mask(folder / "masks" / defect_type / f"{i:03d}_mask.png", mask)


def _write_ped2_tree(folder: Path, params: dict) -> None:
    seed, n_frames = params["seed"], params["n_frames"]
    width, height = params["frame_size"]
    background = _ped2_background(make_rng(seed, "background"), width, height)

    for c in range(1, params["n_train_clips"] + 1):
        rng = make_rng(seed, "train", c)
        clip = folder / "Train" / f"Train{c:03d}"
        for number in range(1, n_frames + 1):
            frame, _ = _ped2_frame(rng, background, number, anomalous=False)
            _save_grey_tiff(clip / f"{number:03d}.tif", frame)

    entries = []
    for c in range(1, params["n_test_clips"] + 1):
        rng = make_rng(seed, "test", c)
        ranges = _ped2_ranges(rng, n_frames, split=c == params["n_test_clips"])
        entries.append(", ".join(f"{start}:{stop}" for start, stop in ranges))
        _write_ped2_test_clip(
            folder / "Test", f"Test{c:03d}", rng, background, ranges, n_frames
        )

    lines = ["TestVideoFile = {};"]
    lines += [f"TestVideoFile{{end+1}}.gt_frame = [{entry}];" for entry in entries]
    (folder / "Test" / "UCSDped2.m").write_text("\n".join(lines) + "\n")


def _write_ped2_test_clip(
    test_dir: Path,
    clip: str,
    rng: np.random.Generator,
    background: np.ndarray,
    ranges: list[tuple[int, int]],
    n_frames: int,
) -> None:
    for number in range(1, n_frames + 1):
        anomalous = any(start <= number <= stop for start, stop in ranges)
        frame, mask = _ped2_frame(rng, background, number, anomalous)
        _save_grey_tiff(test_dir / clip / f"{number:03d}.tif", frame)
        mask_path = test_dir / f"{clip}_gt" / f"{number:03d}.bmp"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(mask_path)


def _ped2_ranges(
    rng: np.random.Generator, n_frames: int, split: bool
) -> list[tuple[int, int]]:
    """Return 1-based inclusive frame ranges of the anomalous event(s)."""
    start = int(rng.integers(2, n_frames // 2))
    if not split:
        return [(start, n_frames)]
    return [(start, start + 1), (start + 3, n_frames)]


def _ped2_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    style = TextureStyle(
        base_colour=np.full(3, 150.0),
        stripe_colour=np.full(3, 6.0),
        stripe_period=40.0,
        stripe_angle=float(rng.uniform(0, np.pi)),
    )
    square = render_nominal(rng, style, max(width, height))
    return square[:height, :width, 0].astype(np.float64)


def _ped2_frame(
    rng: np.random.Generator, background: np.ndarray, number: int, anomalous: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Render frame ``number`` as (H, W) uint8 and its (H, W) bool anomaly mask."""
    frame = background.copy()
    height, width = frame.shape
    for walker in range(3):
        x = (4 + 9 * walker + number) % (width - 4)
        y = 4 + 8 * walker
        frame[y : y + 6, x : x + 3] = 40
    mask = np.zeros((height, width), dtype=bool)
    if anomalous:
        x = (5 * number) % (width - 10)
        mask[height // 2 : height // 2 + 8, x : x + 10] = True
        frame[mask] = 245
    frame += rng.normal(0.0, 2.0, size=frame.shape)
    return np.clip(np.rint(frame), 0, 255).astype(np.uint8), mask


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=95)


def _save_grey_tiff(path: Path, frame: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, format="TIFF")
