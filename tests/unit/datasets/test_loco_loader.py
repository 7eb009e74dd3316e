"""Tests for the MVTec LOCO AD loader on a generated tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import load_category
from datasets.errors import DatasetNotFoundError
from datasets.image_io import read_mask
from datasets.mvtec_loco import load_mvtec_loco
from datasets.synthetic_layouts import generate_synthetic_loco


@pytest.fixture(scope="module")
def loco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loco")
    generate_synthetic_loco(root, category="box")
    return root


@pytest.fixture
def loco_copy(loco_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(loco_root / "box", tmp_path / "box")
    return tmp_path


def test_counts_and_defect_types(loco_root):
    data = load_mvtec_loco(loco_root, "box")
    assert data.dataset == "mvtec_loco"
    assert len(data.train) == 8
    assert len(data.test) == 3 + 2 * 3
    types = {s.defect_type for s in data.test if s.label}
    assert types == {"logical_anomalies", "structural_anomalies"}
    assert data.has_pixel_masks


def test_structural_masks_merged(loco_root):
    data = load_mvtec_loco(loco_root, "box")
    sample = next(
        s for s in data.test if s.sample_id == "test/structural_anomalies/001"
    )
    assert [p.name for p in sample.mask_paths] == ["000.png", "001.png"]
    second = np.asarray(Image.open(sample.mask_paths[1]))
    assert set(np.unique(second).tolist()) == {0, 238}
    merged = read_mask(sample.mask_paths, (64, 64))
    assert merged.sum() >= (second > 0).sum()
    assert merged[second > 0].all()


def test_validation_appended_on_request(loco_root):
    data = load_mvtec_loco(loco_root, "box", use_validation=True)
    assert len(data.train) == 8 + 3
    assert data.train[-1].sample_id == "validation/good/002"
    assert data.train[-1].split == "train"


def test_missing_mask_folder_named(loco_copy):
    shutil.rmtree(loco_copy / "box" / "ground_truth" / "logical_anomalies" / "002")
    with pytest.raises(DatasetNotFoundError, match="logical_anomalies/002"):
        load_mvtec_loco(loco_copy, "box")


def test_empty_mask_folder_named(loco_copy):
    folder = loco_copy / "box" / "ground_truth" / "logical_anomalies" / "000"
    for path in folder.iterdir():
        path.unlink()
    with pytest.raises(DatasetNotFoundError, match="contains no mask images"):
        load_mvtec_loco(loco_copy, "box")


def test_no_ground_truth_loads_without_masks(loco_copy):
    shutil.rmtree(loco_copy / "box" / "ground_truth")
    data = load_mvtec_loco(loco_copy, "box")
    assert not data.has_pixel_masks


def test_dispatch_by_name(loco_root):
    data = load_category("mvtec_loco", loco_root, "box", use_validation=True)
    assert len(data.train) == 11
