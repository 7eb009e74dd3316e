"""Tests for the generic folder loader on a generated tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datasets import load_category
from datasets.errors import DatasetLayoutError, DatasetNotFoundError
from datasets.folder import load_folder
from datasets.synthetic_layouts import generate_synthetic_folder


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    generate_synthetic_folder(root, category="parts")
    return root


@pytest.fixture
def folder_copy(folder_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder_root / "parts", tmp_path / "parts")
    return tmp_path


def test_nominal_split_counts(folder_root):
    data = load_folder(folder_root, "parts", test_share=0.2, seed=0)
    assert data.dataset == "folder"
    assert len(data.train) == 16
    assert len(data.test) == 4 + 2 * 4
    assert data.has_pixel_masks
    assert all(s.sample_id.startswith("train/good/") for s in data.train)
    train_stems = {s.image_path.stem for s in data.train}
    test_stems = {s.image_path.stem for s in data.test if s.label == 0}
    assert not train_stems & test_stems


def test_nominal_split_seeded(folder_root):
    first = load_folder(folder_root, "parts", seed=3)
    again = load_folder(folder_root, "parts", seed=3)
    other = load_folder(folder_root, "parts", seed=4)
    assert [s.sample_id for s in first.test] == [s.sample_id for s in again.test]
    assert [s.sample_id for s in first.test] != [s.sample_id for s in other.test]


def test_masks_attached(folder_root):
    data = load_folder(folder_root, "parts")
    sample = next(s for s in data.test if s.sample_id == "test/scratch/002")
    assert [p.name for p in sample.mask_paths] == ["002_mask.png"]


def test_several_masks_per_image(folder_copy):
    masks = folder_copy / "parts" / "masks" / "blob"
    shutil.copy(masks / "001_mask.png", masks / "001_1.png")
    shutil.copy(masks / "001_mask.png", masks / "0011.png")
    data = load_folder(folder_copy, "parts")
    sample = next(s for s in data.test if s.sample_id == "test/blob/001")
    assert sorted(p.name for p in sample.mask_paths) == ["001_1.png", "001_mask.png"]


def test_no_masks_folder_loads_without_masks(folder_copy):
    shutil.rmtree(folder_copy / "parts" / "masks")
    data = load_folder(folder_copy, "parts")
    assert not data.has_pixel_masks
    assert all(s.mask_paths == () for s in data.test)


def test_missing_mask_folder_named(folder_copy):
    shutil.rmtree(folder_copy / "parts" / "masks" / "scratch")
    with pytest.raises(DatasetLayoutError, match=r"\['scratch'\]"):
        load_folder(folder_copy, "parts")


def test_missing_mask_file_named(folder_copy):
    (folder_copy / "parts" / "masks" / "blob" / "003_mask.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="blob/003.png"):
        load_folder(folder_copy, "parts")


@pytest.mark.parametrize("share", [0.0, 1.0, -0.5])
def test_invalid_test_share(folder_root, share):
    with pytest.raises(ValueError, match="test_share must be in"):
        load_folder(folder_root, "parts", test_share=share)


def test_no_defect_folder_rejected(folder_copy):
    for name in ("blob", "scratch", "masks"):
        shutil.rmtree(folder_copy / "parts" / name)
    with pytest.raises(DatasetLayoutError, match="no defect folder"):
        load_folder(folder_copy, "parts")


def test_dispatch_by_name(folder_root):
    data = load_category("folder", folder_root, "parts", test_share=0.5, seed=1)
    assert len(data.train) == 10
