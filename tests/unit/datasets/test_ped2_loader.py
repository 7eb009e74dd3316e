"""Tests for the UCSD Ped2 label parser and frame loader."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datasets import load_category
from datasets.corruption import corrupt
from datasets.errors import DatasetLayoutError, DatasetNotFoundError
from datasets.synthetic_layouts import generate_synthetic_ped2
from datasets.ucsd_ped2 import load_ucsd_ped2, parse_gt_frames

REPO_ROOT = Path(__file__).resolve().parents[3]
REAL_GT = REPO_ROOT.parent / "shared" / "data" / "ucsd_ped2" / "UCSDped2.m"


@pytest.fixture(scope="module")
def ped2_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ped2")
    generate_synthetic_ped2(root)
    return root


@pytest.fixture
def ped2_copy(ped2_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(ped2_root / "UCSDped2", tmp_path / "UCSDped2")
    return tmp_path


def write_gt(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gt.m"
    path.write_text(body)
    return path


def test_real_gt_file_ranges():
    if not REAL_GT.is_file():
        pytest.skip(f"UCSD Ped2 label file not found at {REAL_GT}")
    entries = parse_gt_frames(REAL_GT)
    assert len(entries) == 12
    assert entries[0] == set(range(61, 181))
    assert entries[2] == set(range(1, 147))
    assert entries[11] == set(range(88, 181))


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("[61:180]", set(range(61, 181))),
        ("[5:9, 14:15]", {5, 6, 7, 8, 9, 14, 15}),
        ("[3 4 9]", {3, 4, 9}),
        ("[1:2:7]", {1, 3, 5, 7}),
        ("[]", set()),
    ],
)
def test_parse_range_forms(tmp_path, entry, expected):
    path = write_gt(tmp_path, f"TestVideoFile{{end+1}}.gt_frame = {entry};\n")
    assert parse_gt_frames(path) == [expected]


def test_parse_skips_comment_lines(tmp_path):
    body = (
        "% TestVideoFile{end+1}.gt_frame = [1:2];\nTestVideoFile{1}.gt_frame = [4:5];\n"
    )
    assert parse_gt_frames(write_gt(tmp_path, body)) == [{4, 5}]


def test_parse_rejects_bad_token(tmp_path):
    path = write_gt(tmp_path, "TestVideoFile{end+1}.gt_frame = [1:end];\n")
    with pytest.raises(DatasetLayoutError, match="'1:end'"):
        parse_gt_frames(path)


def test_parse_rejects_file_without_entries(tmp_path):
    with pytest.raises(DatasetLayoutError, match="no 'gt_frame"):
        parse_gt_frames(write_gt(tmp_path, "x = 1;\n"))


def test_frames_grouped_by_clip(ped2_root):
    data = load_ucsd_ped2(ped2_root)
    assert data.dataset == "ucsd_ped2"
    assert len(data.train) == 3 * 12
    assert len(data.test) == 3 * 12
    assert {s.group_id for s in data.train} == {"Train001", "Train002", "Train003"}
    assert data.test[0].sample_id == "test/Test001/001"
    assert all(s.label == 0 for s in data.train)


def test_frame_labels_follow_ranges(ped2_root):
    data = load_ucsd_ped2(ped2_root)
    gt = parse_gt_frames(ped2_root / "UCSDped2" / "Test" / "UCSDped2.m")
    for index, clip in enumerate(["Test001", "Test002", "Test003"]):
        frames = [s for s in data.test if s.group_id == clip]
        labelled = {number for number, s in enumerate(frames, start=1) if s.label}
        assert labelled == gt[index]
    # The last clip has two ranges with a gap between them.
    assert len(gt[2]) < 12 - min(gt[2]) + 1


def test_masks_only_on_anomalous_frames(ped2_root):
    data = load_ucsd_ped2(ped2_root)
    assert data.has_pixel_masks
    for sample in data.test:
        if sample.label:
            assert sample.mask_paths[0].name == f"{sample.image_path.stem}.bmp"
            assert sample.defect_type == "anomaly"
        else:
            assert sample.mask_paths == ()


def test_missing_gt_folder_disables_pixel_masks(ped2_copy):
    shutil.rmtree(ped2_copy / "UCSDped2" / "Test" / "Test002_gt")
    data = load_ucsd_ped2(ped2_copy)
    assert not data.has_pixel_masks
    clip_one = [s for s in data.test if s.group_id == "Test001" and s.label]
    assert all(s.mask_paths for s in clip_one)


def test_clip_count_mismatch_rejected(ped2_copy):
    shutil.rmtree(ped2_copy / "UCSDped2" / "Test" / "Test003")
    with pytest.raises(DatasetLayoutError, match="lists 3 test clips but 2"):
        load_ucsd_ped2(ped2_copy)


def test_frames_beyond_clip_rejected(ped2_copy):
    gt = ped2_copy / "UCSDped2" / "Test" / "UCSDped2.m"
    gt.write_text(gt.read_text().replace("[3:12]", "[3:40]"))
    with pytest.raises(DatasetLayoutError, match="frames 1 to 12"):
        load_ucsd_ped2(ped2_copy)


def test_missing_gt_file_named(ped2_copy):
    (ped2_copy / "UCSDped2" / "Test" / "UCSDped2.m").unlink()
    with pytest.raises(DatasetNotFoundError, match="UCSDped2.m.*gt_file"):
        load_ucsd_ped2(ped2_copy)


def test_gt_file_option(ped2_copy, tmp_path):
    gt = ped2_copy / "UCSDped2" / "Test" / "UCSDped2.m"
    moved = gt.rename(tmp_path / "labels.m")
    data = load_category("ucsd_ped2", ped2_copy, "UCSDped2", gt_file=moved)
    assert sum(s.label for s in data.test) > 0


def test_corruption_injects_clips(ped2_root, tmp_path):
    data = load_ucsd_ped2(ped2_root)
    corrupted, manifest = corrupt(data, 0.25, seed=0, cache_dir=tmp_path)
    # round(0.25 * 3 / 0.75) = 1 clip of 12 frames
    assert manifest["unit"] == "group"
    assert len(manifest["injected_groups"]) == 1
    assert len(corrupted.injected_ids) == 12
    clip = manifest["injected_groups"][0]
    assert all(s.group_id == clip for s in corrupted.train[36:])
