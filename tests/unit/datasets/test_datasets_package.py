"""Tests for the package entry point and its import name."""

from __future__ import annotations

from pathlib import Path

import pytest

import datasets
from datasets import load_category

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_import_resolves_to_suite_package():
    package_file = Path(datasets.__file__).resolve()
    assert package_file == REPO_ROOT / "datasets" / "__init__.py"


def test_unknown_dataset_lists_known_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mvtec_ad"):
        load_category("imagenet", tmp_path, "x")


def test_synthetic_generated_on_first_use(tmp_path):
    data = load_category(
        "synthetic",
        tmp_path,
        "smoke",
        n_train=4,
        n_test_good=2,
        n_defects_per_type=2,
        image_size=32,
    )
    assert data.dataset == "synthetic"
    assert data.category == "smoke"
    assert len(data.train) == 4
    assert len(data.test) == 2 + 2 * 2
    assert (tmp_path / "smoke" / "train" / "good" / "000.png").is_file()


def test_misspelt_option_rejected(tmp_path):
    with pytest.raises(TypeError, match="n_trian"):
        load_category("synthetic", tmp_path, "smoke", n_trian=4)


def test_mvtec_ad_dispatch(synthetic_root):
    data = load_category("mvtec_ad", synthetic_root, "tiny")
    assert data.dataset == "mvtec_ad"
    assert len(data.train) == 12
