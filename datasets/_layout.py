"""Folder checks shared by the loaders, each raising an error that names the fix."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from datasets.base import Sample
from datasets.errors import DatasetLayoutError, DatasetNotFoundError
from datasets.image_io import list_images

logger = logging.getLogger(__name__)


def require_root(root: Path, dataset: str) -> Path:
    """Return ``root`` as a Path, or raise if it is not a directory."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"{dataset} root folder not found: {root}; set the dataset root to the "
            "folder that contains the category folders"
        )
    return root


def list_subdirs(folder: Path) -> list[str]:
    """List the names of the non-hidden subfolders of ``folder``, sorted."""
    names = [p.name for p in Path(folder).iterdir() if p.is_dir()]
    return sorted(name for name in names if not name.startswith("."))


def require_category(root: Path, category: str, dataset: str) -> Path:
    """Return ``root / category``, or raise listing the categories under ``root``."""
    folder = Path(root) / category
    if not folder.is_dir():
        found = ", ".join(list_subdirs(root)) or "none"
        raise DatasetNotFoundError(
            f"{dataset} category {category!r} not found under {root}; "
            f"categories found there: {found}"
        )
    return folder


def require_images(folder: Path, description: str) -> list[Path]:
    """List the images in ``folder``, or raise if it is missing or has none.

    Parameters
    ----------
    folder : Path
        Folder that must contain at least one image.
    description : str
        What the folder holds, for the message, for example ``"nominal train"``.
    """
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"{description} image folder not found: {folder}; the dataset layout "
            "needs it, so restore it from the original archive"
        )
    images = list_images(folder)
    if not images:
        raise DatasetNotFoundError(
            f"{description} image folder {folder} contains no image files "
            "(.png, .jpg, .jpeg, .tif, .tiff, .bmp); restore it from the original "
            "archive"
        )
    return images


def check_unique_ids(samples: Iterable[Sample], where: str) -> None:
    """Raise if two samples share an id, which happens when two files share a stem."""
    counts = Counter(sample.sample_id for sample in samples)
    duplicates = sorted(sample_id for sample_id, n in counts.items() if n > 1)
    if duplicates:
        raise DatasetLayoutError(
            f"{where}: sample ids {duplicates[:5]} occur more than once, because "
            "files in one folder share a name and differ only in extension; "
            "remove the duplicate files"
        )
