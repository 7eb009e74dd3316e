"""Loader for a generic folder of nominal and anomalous images.

Layout of one category::

    <root>/<category>/good/*.png                   nominal images
    <root>/<category>/<defect_type>/*.png          anomalous images, any folder name
    <root>/<category>/masks/<defect_type>/<stem>*.png   optional masks

A seeded share of the nominal images becomes the nominal test set; the rest is
the training set. All anomalous images are test images.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from datasets._layout import (
    check_unique_ids,
    list_subdirs,
    require_category,
    require_images,
    require_root,
)
from datasets.base import ANOMALOUS, NOMINAL, CategoryData, Sample
from datasets.errors import DatasetLayoutError, DatasetNotFoundError
from datasets.image_io import list_images

logger = logging.getLogger(__name__)

DATASET = "folder"
GOOD = "good"
MASKS = "masks"


def load_folder(
    root: Path, category: str, test_share: float = 0.2, seed: int = 0
) -> CategoryData:
    """Load a folder of images and split the nominal ones into train and test.

    Sample ids are ``train/good/<stem>``, ``test/good/<stem>`` and
    ``test/<defect_type>/<stem>``. An anomalous image's masks are the files in
    ``masks/<defect_type>/`` whose stem is the image stem or starts with the
    image stem and an underscore (``003.png``, ``003_mask.png``, ``003_1.png``).
    Several masks of one image are merged.

    Parameters
    ----------
    root : Path
        Folder that contains ``category``.
    category : str
        Dataset folder name.
    test_share : float, default 0.2
        Share of the nominal images moved to the test set, in (0, 1), rounded
        half up and kept between 1 and all but one image.
    seed : int, default 0
        Seed of the nominal split, through ``numpy.random.default_rng``.

    Raises
    ------
    ValueError
        If ``test_share`` is outside (0, 1) or there are fewer than 2 nominal
        images.
    DatasetNotFoundError
        If the folder, ``good`` or an anomalous image's mask is missing.
    DatasetLayoutError
        If there is no defect folder with images, or only some defect types have
        mask folders.
    """
    if not 0.0 < test_share < 1.0:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    folder = require_category(require_root(root, DATASET), category, DATASET)

    nominal = require_images(folder / GOOD, "nominal")
    train_paths, test_paths = _split_nominal(folder, nominal, test_share, seed)
    train = [_sample("train", GOOD, path, ()) for path in train_paths]
    test = [_sample("test", GOOD, path, ()) for path in test_paths]
    test += _load_anomalous(folder)

    check_unique_ids(train + test, str(folder))
    logger.info(
        "Loaded folder %s: %d train, %d test (%d anomalous)",
        folder,
        len(train),
        len(test),
        sum(s.label for s in test),
    )
    has_masks = (folder / MASKS).is_dir()
    return CategoryData(DATASET, category, train, test, has_pixel_masks=has_masks)


def _split_nominal(
    folder: Path, nominal: list[Path], test_share: float, seed: int
) -> tuple[list[Path], list[Path]]:
    if len(nominal) < 2:
        raise ValueError(
            f"{folder / GOOD} has {len(nominal)} nominal image; at least 2 are "
            "needed to split them into train and test"
        )
    n_test = math.floor(test_share * len(nominal) + 0.5)
    n_test = min(max(n_test, 1), len(nominal) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(nominal))[:n_test])
    train = [p for i, p in enumerate(nominal) if i not in chosen]
    test = [p for i, p in enumerate(nominal) if i in chosen]
    return train, test


def _load_anomalous(folder: Path) -> list[Sample]:
    defect_types = [
        name
        for name in list_subdirs(folder)
        if name not in (GOOD, MASKS) and list_images(folder / name)
    ]
    if not defect_types:
        raise DatasetLayoutError(
            f"{folder} has no defect folder with images besides '{GOOD}' and "
            f"'{MASKS}'; image-level metrics and corruption need anomalous images"
        )
    mask_dirs = _mask_folders(folder, defect_types)

    samples = []
    for defect_type in defect_types:
        mask_dir = mask_dirs.get(defect_type)
        masks = list_images(mask_dir) if mask_dir is not None else None
        for path in list_images(folder / defect_type):
            mask_paths = () if masks is None else _masks_of(masks, path, defect_type)
            samples.append(_sample("test", defect_type, path, mask_paths))
    return samples


def _mask_folders(folder: Path, defect_types: list[str]) -> dict[str, Path]:
    mask_root = folder / MASKS
    if not mask_root.is_dir():
        return {}
    missing = [t for t in defect_types if not (mask_root / t).is_dir()]
    if missing:
        raise DatasetLayoutError(
            f"mask folders missing for defect types {missing} under {mask_root}, "
            "while the masks folder exists; add them, or remove the masks folder "
            "to load without pixel labels"
        )
    return {t: mask_root / t for t in defect_types}


def _masks_of(masks: list[Path], image: Path, defect_type: str) -> tuple[Path, ...]:
    stem = image.stem
    found = tuple(m for m in masks if m.stem == stem or m.stem.startswith(f"{stem}_"))
    if not found:
        raise DatasetNotFoundError(
            f"mask of {image} not found: expected {MASKS}/{defect_type}/{stem}.png "
            f"or {stem}_*.png in {image.parent.parent}"
        )
    return found


def _sample(
    split: str, defect_type: str, path: Path, mask_paths: tuple[Path, ...]
) -> Sample:
    return Sample(
        sample_id=f"{split}/{defect_type}/{path.stem}",
        image_path=path,
        label=NOMINAL if defect_type == GOOD else ANOMALOUS,
        mask_paths=mask_paths,
        defect_type=defect_type,
        split=split,
    )
