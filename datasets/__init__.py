"""Dataset loaders, image reading, corruption and synthetic data of the BAAF suite.

This package shares its import name with Hugging Face Datasets; run the suite in
its own environment so that ``import datasets`` finds this package.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from datasets.base import ANOMALOUS, NOMINAL, CategoryData, Sample
from datasets.corruption import corrupt
from datasets.folder import load_folder
from datasets.image_io import ImageReadError, check_readable, read_image, read_mask
from datasets.mvtec import load_mvtec_ad, load_mvtec_layout
from datasets.mvtec_loco import load_mvtec_loco
from datasets.synthetic import generate_synthetic_mvtec
from datasets.ucsd_ped2 import load_ucsd_ped2
from datasets.visa import load_visa

logger = logging.getLogger(__name__)

__all__ = [
    "ANOMALOUS",
    "NOMINAL",
    "CategoryData",
    "ImageReadError",
    "Sample",
    "check_readable",
    "corrupt",
    "generate_synthetic_mvtec",
    "load_category",
    "load_folder",
    "load_mvtec_ad",
    "load_mvtec_loco",
    "load_ucsd_ped2",
    "load_visa",
    "read_image",
    "read_mask",
]


def _load_synthetic(root: Path, category: str, **options: object) -> CategoryData:
    generate_synthetic_mvtec(root, category, **options)
    return load_mvtec_layout(root, category, dataset="synthetic")


LOADERS: dict[str, Callable[..., CategoryData]] = {
    "folder": load_folder,
    "mvtec_ad": load_mvtec_ad,
    "mvtec_loco": load_mvtec_loco,
    "synthetic": _load_synthetic,
    "ucsd_ped2": load_ucsd_ped2,
    "visa": load_visa,
}


def load_category(name: str, root: Path, category: str, **options) -> CategoryData:
    """Load one category of the dataset called ``name``.

    Parameters
    ----------
    name : str
        Dataset name, a key of :data:`LOADERS`.
    root : Path
        Dataset root folder. For ``"synthetic"`` the generated tree is written
        there on first use and reused afterwards.
    category : str
        Category name.
    **options
        Loader options, passed on as keyword arguments, so a misspelt option
        raises TypeError. ``"mvtec_loco"`` takes ``use_validation``,
        ``"ucsd_ped2"`` takes ``gt_file``, ``"folder"`` takes ``test_share`` and
        ``seed``, and ``"synthetic"`` takes the parameters of
        :func:`datasets.synthetic.generate_synthetic_mvtec`. The others take none.

    Returns
    -------
    CategoryData

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset.
    """
    if name not in LOADERS:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(LOADERS))}"
        )
    return LOADERS[name](Path(root), category, **options)
