"""Tests for the MVTec AD loader on generated trees and on the real bottle category."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.errors import DatasetLayoutError, DatasetNotFoundError
from datasets.mvtec import load_mvtec_ad


@pytest.fixture
def tiny_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """Writable copy of the synthetic category; returns the root above it."""
    shutil.copytree(synthetic_root / "tiny", tmp_path / "tiny")
    return tmp_path


def test_synthetic_tree_counts_and_ids(synthetic_root):
    data = load_mvtec_ad(synthetic_root, "tiny")
    assert data.dataset == "mvtec_ad"
    assert data.category == "tiny"
    assert len(data.train) == 12
    assert len(data.test) == 4 + 3 * 3
    assert data.has_pixel_masks
    assert data.train[0].sample_id == "train/good/000"
    assert [s.sample_id for s in data.test[4:7]] == [
        "test/blob/000",
        "test/blob/001",
        "test/blob/002",
    ]


def test_synthetic_tree_labels_and_masks(synthetic_root):
    data = load_mvtec_ad(synthetic_root, "tiny")
    for sample in data.train:
        assert sample.label == 0
        assert sample.split == "train"
        assert sample.mask_paths == ()
    anomalous = [s for s in data.test if s.label == 1]
    assert {s.defect_type for s in anomalous} == {"blob", "scratch", "combined"}
    for sample in anomalous:
        assert len(sample.mask_paths) == 1
        assert sample.mask_paths[0].name == f"{sample.image_path.stem}_mask.png"
        assert sample.group_id == sample.sample_id


def test_real_bottle_split(bottle_root):
    data = load_mvtec_ad(bottle_root, "bottle")
    assert len(data.train) == 209
    assert len(data.test) == 83
    assert sum(s.label for s in data.test) == 63
    sample = next(s for s in data.test if s.sample_id == "test/broken_large/003")
    assert sample.mask_paths[0].is_file()
    assert sample.mask_paths[0].name == "003_mask.png"


def test_missing_root_names_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="absent_root"):
        load_mvtec_ad(tmp_path / "absent_root", "bottle")


def test_unknown_category_lists_found(tiny_copy):
    (tiny_copy / "other").mkdir()
    with pytest.raises(DatasetNotFoundError, match="'bottle'.*other, tiny"):
        load_mvtec_ad(tiny_copy, "bottle")


def test_missing_train_good_raises(tiny_copy):
    shutil.rmtree(tiny_copy / "tiny" / "train" / "good")
    with pytest.raises(DatasetNotFoundError, match="train/good"):
        load_mvtec_ad(tiny_copy, "tiny")


def test_empty_train_good_raises(tiny_copy):
    for path in (tiny_copy / "tiny" / "train" / "good").iterdir():
        path.unlink()
    (tiny_copy / "tiny" / "train" / "good" / ".DS_Store").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="contains no image files"):
        load_mvtec_ad(tiny_copy, "tiny")


def test_missing_test_good_raises(tiny_copy):
    shutil.rmtree(tiny_copy / "tiny" / "test" / "good")
    with pytest.raises(DatasetNotFoundError, match="test/good"):
        load_mvtec_ad(tiny_copy, "tiny")


def test_no_defect_folder_raises(tiny_copy):
    for defect_type in ("blob", "scratch", "combined"):
        shutil.rmtree(tiny_copy / "tiny" / "test" / defect_type)
    with pytest.raises(DatasetLayoutError, match="no defect folder"):
        load_mvtec_ad(tiny_copy, "tiny")


def test_missing_mask_folder_names_type(tiny_copy):
    shutil.rmtree(tiny_copy / "tiny" / "ground_truth" / "scratch")
    with pytest.raises(DatasetLayoutError, match=r"\['scratch'\]"):
        load_mvtec_ad(tiny_copy, "tiny")


def test_missing_mask_file_names_expected_path(tiny_copy):
    (tiny_copy / "tiny" / "ground_truth" / "blob" / "001_mask.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="blob/001_mask.png"):
        load_mvtec_ad(tiny_copy, "tiny")


def test_no_ground_truth_loads_without_masks(tiny_copy):
    shutil.rmtree(tiny_copy / "tiny" / "ground_truth")
    data = load_mvtec_ad(tiny_copy, "tiny")
    assert not data.has_pixel_masks
    assert all(s.mask_paths == () for s in data.test)


def test_hidden_and_upper_case_files(tiny_copy):
    good = tiny_copy / "tiny" / "train" / "good"
    (good / "._000.png").write_bytes(b"\x00")
    (good / "Thumbs.db").write_bytes(b"\x00")
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(good / "999.PNG")
    blob = tiny_copy / "tiny" / "test" / "blob"
    (blob / "000.png").rename(blob / "000.PNG")
    masks = tiny_copy / "tiny" / "ground_truth" / "blob"
    (masks / "000_mask.png").rename(masks / "000_mask.PNG")

    data = load_mvtec_ad(tiny_copy, "tiny")
    assert len(data.train) == 13
    assert data.train[-1].sample_id == "train/good/999"
    sample = next(s for s in data.test if s.sample_id == "test/blob/000")
    assert sample.mask_paths[0].name == "000_mask.PNG"


def test_duplicate_stem_raises(tiny_copy):
    good = tiny_copy / "tiny" / "train" / "good"
    shutil.copy(good / "000.png", good / "000.jpg")
    with pytest.raises(DatasetLayoutError, match="train/good/000"):
        load_mvtec_ad(tiny_copy, "tiny")
