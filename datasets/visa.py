"""VisA: conversion of the raw archive to a per-object layout, and its loader.

The raw archive (``VisA_20220922.tar``) stores ``<object>/Data/Images/{Normal,
Anomaly}/*.JPG`` and ``<object>/Data/Masks/Anomaly/*.png``, plus split files in
``split_csv/`` with the columns object, split, label, image and mask. Raw mask
pixels may have values other than 255, and any non-zero value is anomalous.

:func:`prepare_visa` follows one split file (``1cls.csv`` by default) and writes
the layout that :func:`load_visa` reads::

    <root>/<object>/train/good/<image>
    <root>/<object>/test/good/<image>
    <root>/<object>/test/bad/<image>
    <root>/<object>/ground_truth/bad/<image stem>.png   (0/255 grey PNG)

Images are copied unchanged, and masks are rewritten as 0/255.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from datasets._staging import write_tree_once
from datasets.base import CategoryData
from datasets.errors import DatasetLayoutError, DatasetNotFoundError
from datasets.image_io import ImageReadError, read_mask
from datasets.mvtec import find_mask_file, load_mvtec_layout

logger = logging.getLogger(__name__)

SPLIT_COLUMNS = ("object", "split", "label", "image", "mask")
DEFAULT_SPLIT_FILE = Path("split_csv") / "1cls.csv"
ANOMALY_FOLDER = "bad"
PREPARED_STAMP = ".prepared.json"
# Bump when the prepared layout changes, so that prepared objects are rewritten.
PREPARE_VERSION = 1

_SPLITS = ("train", "test")
_LABELS = ("normal", "anomaly")


def load_visa(root: Path, category: str) -> CategoryData:
    """Load one VisA object from the layout that :func:`prepare_visa` writes.

    Anomalous test images have defect type ``"bad"``, because VisA's split files
    give no finer type. Sample ids follow the MVTec AD loader, for example
    ``"test/bad/000"``.

    Raises
    ------
    DatasetNotFoundError, DatasetLayoutError
        As :func:`datasets.mvtec.load_mvtec_ad` does; run
        ``scripts/prepare_visa.py`` first when the prepared layout is missing.
    """
    lookup = partial(find_mask_file, suffix="")
    return load_mvtec_layout(root, category, dataset="visa", mask_lookup=lookup)


def read_split_csv(path: Path) -> pd.DataFrame:
    """Read and check a VisA split file.

    Returns
    -------
    pandas.DataFrame
        One row per image with string columns object, split, label, image and
        mask (empty for normal images).

    Raises
    ------
    DatasetNotFoundError
        If the file does not exist.
    DatasetLayoutError
        If a column is missing, a split or label value is unknown, an anomalous
        image is in the training split, or an anomalous image has no mask.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"VisA split file not found: {path}; it ships in the archive's "
            "split_csv folder"
        )
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in SPLIT_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetLayoutError(
            f"{path}: columns {missing} are missing; a VisA split file has the "
            f"columns {list(SPLIT_COLUMNS)}"
        )
    _check_values(path, table, "split", _SPLITS)
    _check_values(path, table, "label", _LABELS)
    _check_anomaly_rows(path, table)
    return table


def prepare_visa(
    raw_root: Path,
    out_root: Path,
    split_csv: Path | None = None,
    objects: Sequence[str] | None = None,
) -> list[Path]:
    """Convert raw VisA objects to the per-object layout that :func:`load_visa` reads.

    Each object is written to a staging folder and moved into place when it is
    complete. An object already prepared from the same split file is skipped.

    Parameters
    ----------
    raw_root : Path
        Extracted archive, the folder that contains the object folders.
    out_root : Path
        Folder that receives one folder per object.
    split_csv : Path or None, default None
        Split file; None uses ``raw_root/split_csv/1cls.csv``.
    objects : sequence of str or None, default None
        Objects to convert; None converts every object of the split file.

    Returns
    -------
    list of Path
        The prepared object folders.

    Raises
    ------
    DatasetNotFoundError
        If the split file, an image or a mask listed in it is missing.
    DatasetLayoutError
        If the split file is invalid, an object is not in it, two images would
        get the same file name, or a mask's size differs from its image's.
    """
    raw_root, out_root = Path(raw_root), Path(out_root)
    split_path = (
        Path(split_csv) if split_csv is not None else raw_root / DEFAULT_SPLIT_FILE
    )
    table = read_split_csv(split_path)
    selected = _select_objects(split_path, table, objects)
    digest = hashlib.sha256(split_path.read_bytes()).hexdigest()

    folders = []
    for name in selected:
        rows = table[table["object"] == name]
        stamp = {"version": PREPARE_VERSION, "object": name, "split_sha256": digest}

        def write(folder: Path, rows: pd.DataFrame = rows) -> None:
            _write_object(raw_root, folder, rows)

        folders.append(write_tree_once(out_root / name, stamp, write, PREPARED_STAMP))
        logger.info("Prepared VisA object %s (%d images)", name, len(rows))
    return folders


def _check_values(
    path: Path, table: pd.DataFrame, column: str, allowed: tuple[str, ...]
) -> None:
    invalid = table[~table[column].isin(allowed)]
    if len(invalid):
        line = int(invalid.index[0]) + 2
        raise DatasetLayoutError(
            f"{path} line {line}: {column} {invalid[column].iloc[0]!r} is invalid; "
            f"expected one of {list(allowed)}"
        )


def _check_anomaly_rows(path: Path, table: pd.DataFrame) -> None:
    anomalies = table[table["label"] == "anomaly"]
    in_train = anomalies[anomalies["split"] == "train"]
    if len(in_train):
        raise DatasetLayoutError(
            f"{path} puts {len(in_train)} anomalous images in the training split "
            f"(line {int(in_train.index[0]) + 2}), but the prepared layout holds "
            "only nominal training images; use split_csv/1cls.csv"
        )
    without_mask = anomalies[anomalies["mask"].str.strip() == ""]
    if len(without_mask):
        raise DatasetLayoutError(
            f"{path} line {int(without_mask.index[0]) + 2}: anomalous image "
            f"{without_mask['image'].iloc[0]} has no mask path"
        )


def _select_objects(
    path: Path, table: pd.DataFrame, objects: Sequence[str] | None
) -> list[str]:
    available = sorted(table["object"].unique())
    if objects is None:
        return available
    unknown = [name for name in objects if name not in available]
    if unknown:
        raise DatasetLayoutError(
            f"objects {unknown} are not in {path}; objects found: {available}"
        )
    return list(objects)


def _write_object(raw_root: Path, folder: Path, rows: pd.DataFrame) -> None:
    written: set[Path] = set()
    for row in rows.itertuples(index=False):
        source = _require_file(raw_root / row.image, "image")
        sub = "good" if row.label == "normal" else ANOMALY_FOLDER
        target = folder / row.split / sub / source.name
        _claim(written, target, source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

        if row.label == "anomaly":
            mask_path = folder / "ground_truth" / ANOMALY_FOLDER / f"{source.stem}.png"
            _claim(written, mask_path, source)
            _write_binary_mask(
                source, _require_file(raw_root / row.mask, "mask"), mask_path
            )


def _claim(written: set[Path], target: Path, source: Path) -> None:
    """Record ``target``, raising if an earlier row already wrote it."""
    if target in written:
        raise DatasetLayoutError(
            f"two images of the split file map to {target} (the second is "
            f"{source}); rename one of the raw files"
        )
    written.add(target)


def _write_binary_mask(image_path: Path, raw_mask: Path, target: Path) -> None:
    try:
        with Image.open(image_path) as image:
            width, height = image.size
    except OSError as error:
        raise ImageReadError(
            f"{image_path}: cannot read image size ({error})"
        ) from error
    mask = read_mask([raw_mask], (height, width))
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(target)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetNotFoundError(
            f"VisA {what} listed in the split file not found: {path}; check that "
            "raw_root is the extracted archive folder"
        )
    return path
