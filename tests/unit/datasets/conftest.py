"""Fixtures that write small generated datasets for the dataset tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets.synthetic import generate_synthetic_mvtec


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root holding a 64 px synthetic category ``tiny`` with three defect types."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_mvtec(
        root,
        category="tiny",
        n_train=12,
        n_test_good=4,
        n_defects_per_type=3,
        defect_types=("blob", "scratch", "combined"),
        image_size=64,
        seed=0,
    )
    return root
