"""Loader for MVTec LOCO AD.

Layout of one category::

    <root>/<category>/train/good/*.png
    <root>/<category>/validation/good/*.png
    <root>/<category>/test/{good,logical_anomalies,structural_anomalies}/*.png
    <root>/<category>/ground_truth/<defect_type>/<stem>/000.png, 001.png, ...

Each anomalous image has a folder of masks, one per annotated defect region,
which are merged by union. Mask pixels hold a defect-specific value (for example
236 to 255) and any non-zero value counts as anomalous.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from datasets.base import CategoryData
from datasets.errors import DatasetNotFoundError
from datasets.image_io import list_images
from datasets.mvtec import GOOD, load_mvtec_layout, load_split

logger = logging.getLogger(__name__)


def find_loco_masks(mask_dir: Path, stem: str) -> tuple[Path, ...]:
    """Return every mask image in ``mask_dir/<stem>/``, sorted by name.

    Raises
    ------
    DatasetNotFoundError
        If the folder is missing or contains no image.
    """
    folder = mask_dir / stem
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"mask folder not found: {folder}; every anomalous MVTec LOCO AD image "
            "needs one, so restore it from the original archive"
        )
    masks = list_images(folder)
    if not masks:
        raise DatasetNotFoundError(
            f"mask folder {folder} contains no mask images; restore it from the "
            "original archive"
        )
    return tuple(masks)


def load_mvtec_loco(
    root: Path, category: str, use_validation: bool = False
) -> CategoryData:
    """Load one MVTec LOCO AD category.

    Defect types are the test folder names, ``"logical_anomalies"`` and
    ``"structural_anomalies"``. Sample ids follow the MVTec AD loader, for example
    ``"test/logical_anomalies/004"``.

    Parameters
    ----------
    root : Path
        Folder that contains the category folders.
    category : str
        Category folder name, for example ``"breakfast_box"``.
    use_validation : bool, default False
        Append the nominal ``validation/good`` images to the training set, with
        ids ``"validation/good/<stem>"`` and split ``"train"``.

    Returns
    -------
    CategoryData
        With ``dataset="mvtec_loco"``.

    Raises
    ------
    DatasetNotFoundError, DatasetLayoutError
        As :func:`datasets.mvtec.load_mvtec_ad`, and when a mask folder of an
        anomalous image, or ``validation/good`` with ``use_validation``, is
        missing.
    """
    data = load_mvtec_layout(
        root, category, dataset="mvtec_loco", mask_lookup=find_loco_masks
    )
    if not use_validation:
        return data

    validation = load_split(Path(root) / category, "validation", [GOOD])
    extra = [replace(sample, split="train") for sample in validation]
    logger.info("Added %d validation images to training", len(extra))
    return data.with_split(data.train + extra, data.test, data.injected_ids)
