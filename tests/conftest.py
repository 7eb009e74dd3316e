"""Shared fixtures: paths to the real data shipped beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def bottle_root() -> Path:
    """Root of the real MVTec AD folder holding the bottle category."""
    root = SHARED_DATA / "mvtec_ad"
    if not (root / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"real MVTec AD bottle images not found under {root}")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """Root holding a small seeded synthetic category ``tiny`` in MVTec AD layout."""
    from datasets.synthetic import generate_synthetic_mvtec

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_mvtec(
        root,
        "tiny",
        n_train=16,
        n_test_good=4,
        n_defects_per_type=4,
        image_size=96,
        seed=0,
    )
    return root


@pytest.fixture(scope="session")
def tiny_category(synthetic_root):
    """The loaded ``tiny`` synthetic category."""
    from datasets import load_category

    return load_category("mvtec_ad", synthetic_root, "tiny")
