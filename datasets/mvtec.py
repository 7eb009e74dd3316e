"""Loader for MVTec AD and for any dataset written in its folder layout.

Layout of one category::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect_type>/*.png
    <root>/<category>/ground_truth/<defect_type>/<stem>_mask.png
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

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

GOOD = "good"

# Finds the mask files of one anomalous image from its defect type's mask folder
# and its file stem, raising DatasetNotFoundError when they are missing.
MaskLookup = Callable[[Path, str], tuple[Path, ...]]


def load_mvtec_ad(root: Path, category: str) -> CategoryData:
    """Load one MVTec AD category.

    Sample ids are ``<split>/<defect_type>/<file stem>``, for example
    ``"train/good/000"`` and ``"test/broken_large/003"``. A category without a
    ``ground_truth`` folder loads with ``has_pixel_masks=False``.

    Parameters
    ----------
    root : Path
        Folder that contains the category folders.
    category : str
        Category folder name, for example ``"bottle"``.

    Returns
    -------
    CategoryData
        With ``dataset="mvtec_ad"``; samples in file-name order.

    Raises
    ------
    DatasetNotFoundError
        If the root, the category, ``train/good`` or ``test/good`` is missing or
        has no images, or an anomalous image has no mask file.
    DatasetLayoutError
        If the test set has no anomalous images, or some defect types have mask
        folders and others do not.
    """
    return load_mvtec_layout(root, category, dataset="mvtec_ad")


def find_mask_file(mask_dir: Path, stem: str, suffix: str = "_mask") -> tuple[Path]:
    """Return ``mask_dir/<stem><suffix>.png``, or the same name with another
    image extension or extension case.

    Raises
    ------
    DatasetNotFoundError
        Naming the expected ``.png`` path when no such file exists.
    """
    expected = mask_dir / f"{stem}{suffix}.png"
    if expected.is_file():
        return (expected,)
    for candidate in list_images(mask_dir):
        if candidate.stem == f"{stem}{suffix}":
            return (candidate,)
    raise DatasetNotFoundError(
        f"mask file not found: {expected}; every anomalous test image needs "
        "its mask, so restore it from the original archive"
    )


def load_mvtec_layout(
    root: Path,
    category: str,
    dataset: str,
    mask_lookup: MaskLookup = find_mask_file,
) -> CategoryData:
    """Load a category in the MVTec AD layout under the dataset name ``dataset``.

    ``mask_lookup`` finds the masks of an anomalous test image; the default
    expects MVTec's ``<stem>_mask.png``. See :func:`load_mvtec_ad` for the
    layout, ids and errors.
    """
    root = require_root(root, dataset)
    folder = require_category(root, category, dataset)

    train = load_split(folder, "train", [GOOD])
    defect_types = list_defect_types(folder)
    masks = find_mask_folders(folder, defect_types)
    test = load_split(folder, "test", [GOOD, *defect_types], masks, mask_lookup)

    check_unique_ids(train, f"{folder / 'train'}")
    check_unique_ids(test, f"{folder / 'test'}")
    logger.info(
        "Loaded %s/%s: %d train, %d test (%d anomalous, defect types %s)",
        dataset,
        category,
        len(train),
        len(test),
        sum(s.label for s in test),
        defect_types,
    )
    return CategoryData(dataset, category, train, test, has_pixel_masks=bool(masks))


def list_defect_types(folder: Path) -> list[str]:
    """List the non-empty defect folders under ``folder/test``, sorted.

    Raises
    ------
    DatasetNotFoundError
        If ``test/good`` is missing or has no images.
    DatasetLayoutError
        If no defect folder has images.
    """
    test_dir = folder / "test"
    require_images(test_dir / GOOD, "nominal test")
    defect_types = []
    for name in list_subdirs(test_dir):
        if name == GOOD:
            continue
        if list_images(test_dir / name):
            defect_types.append(name)
        else:
            logger.warning("Skipping empty defect folder %s", test_dir / name)

    if not defect_types:
        raise DatasetLayoutError(
            f"{test_dir} has no defect folder with images besides 'good'; "
            "image-level metrics and corruption need anomalous test images"
        )
    return defect_types


def find_mask_folders(folder: Path, defect_types: list[str]) -> dict[str, Path]:
    """Map each defect type to its mask folder, or return {} for no masks."""
    gt_dir = folder / "ground_truth"
    if not gt_dir.is_dir():
        logger.info("No ground_truth folder in %s: pixel metrics unavailable", folder)
        return {}

    masks = {t: gt_dir / t for t in defect_types if (gt_dir / t).is_dir()}
    if not masks:
        logger.warning(
            "%s has no mask folder for any defect type %s: pixel metrics unavailable",
            gt_dir,
            defect_types,
        )
        return {}

    missing = [t for t in defect_types if t not in masks]
    if missing:
        raise DatasetLayoutError(
            f"mask folders missing for defect types {missing}: expected "
            f"{[str(gt_dir / t) for t in missing]}, while other defect types have "
            "masks; restore the folders, or remove the whole ground_truth folder "
            "to load the category without pixel labels"
        )
    return masks


def load_split(
    folder: Path,
    split: str,
    defect_types: list[str],
    masks: dict[str, Path] | None = None,
    mask_lookup: MaskLookup = find_mask_file,
) -> list[Sample]:
    """Load the images of ``folder/<split>/<defect_type>`` for each defect type.

    Sample ids are ``<split>/<defect_type>/<stem>``. ``masks`` maps defect
    types to mask folders, in which ``mask_lookup`` finds each image's masks.
    """
    samples = []
    for defect_type in defect_types:
        description = f"nominal {split}" if defect_type == GOOD else defect_type
        images = require_images(folder / split / defect_type, description)
        mask_dir = (masks or {}).get(defect_type)
        for image_path in images:
            sample = _make_sample(split, defect_type, image_path, mask_dir, mask_lookup)
            samples.append(sample)
    return samples


def _make_sample(
    split: str,
    defect_type: str,
    image_path: Path,
    mask_dir: Path | None,
    mask_lookup: MaskLookup,
) -> Sample:
    label = NOMINAL if defect_type == GOOD else ANOMALOUS
    mask_paths = ()
    if label == ANOMALOUS and mask_dir is not None:
        mask_paths = mask_lookup(mask_dir, image_path.stem)
    return Sample(
        sample_id=f"{split}/{defect_type}/{image_path.stem}",
        image_path=image_path,
        label=label,
        mask_paths=mask_paths,
        defect_type=defect_type,
        split=split,
    )
