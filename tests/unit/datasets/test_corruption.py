"""Tests for seeded injection of anomalous test images into training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import datasets.corruption as corruption
from datasets.base import CategoryData, Sample
from datasets.corruption import ManifestError, apply_manifest, corrupt, manifest_path
from datasets.mvtec import load_mvtec_ad


def make_data(n_train: int = 20, defects: dict[str, int] | None = None) -> CategoryData:
    """Build a category in memory; no file is read by corruption."""
    defects = defects if defects is not None else {"crack": 6, "hole": 4}
    train = [
        Sample(f"train/good/{i:03d}", Path(f"train/good/{i:03d}.png"), 0)
        for i in range(n_train)
    ]
    test = [
        Sample(f"test/good/{i:03d}", Path(f"g{i}.png"), 0, split="test")
        for i in range(5)
    ]
    for defect_type, count in defects.items():
        for i in range(count):
            sample_id = f"test/{defect_type}/{i:03d}"
            test.append(
                Sample(
                    sample_id,
                    Path(f"{sample_id}.png"),
                    1,
                    (Path(f"{sample_id}_mask.png"),),
                    defect_type,
                    "test",
                )
            )
    return CategoryData("toy", "cat", train, test)


def make_video_data() -> CategoryData:
    """Four training clips of 5 frames and three test clips, two with anomalies."""
    train = [
        Sample(
            f"train/Train{c:03d}/{f:03d}", Path("x.tif"), 0, group_id=f"Train{c:03d}"
        )
        for c in range(1, 5)
        for f in range(1, 6)
    ]
    test = []
    for clip, anomalous_frames in (
        ("Test001", {3, 4}),
        ("Test002", set()),
        ("Test003", {1}),
    ):
        for f in range(1, 6):
            label = int(f in anomalous_frames)
            test.append(
                Sample(
                    f"test/{clip}/{f:03d}",
                    Path("x.tif"),
                    label,
                    defect_type="anomaly" if label else "good",
                    split="test",
                    group_id=clip,
                )
            )
    return CategoryData("video", "clips", train, test)


def test_ratio_zero_injects_nothing(tmp_path):
    data = make_data()
    corrupted, manifest = corrupt(data, 0.0, seed=0, cache_dir=tmp_path)
    assert corrupted.train == data.train
    assert corrupted.test == data.test
    assert corrupted.injected_ids == []
    assert manifest["injected_ids"] == []


def test_train_after_count_and_labels(tmp_path):
    data = make_data(n_train=20)
    corrupted, manifest = corrupt(data, 0.2, seed=0, cache_dir=tmp_path)
    # round(0.2 * 20 / 0.8) = 5
    assert len(corrupted.injected_ids) == 5
    assert len(corrupted.train) == 25
    assert manifest["ratio_reached"] == pytest.approx(0.2)
    injected = corrupted.train[20:]
    assert [s.sample_id for s in injected] == corrupted.injected_ids
    for sample in injected:
        assert sample.label == 1
        assert sample.split == "test"
        assert sample.mask_paths
        assert sample.defect_type in {"crack", "hole"}


def test_train_before_count(tmp_path):
    data = make_data(n_train=20)
    corrupted, manifest = corrupt(
        data, 0.2, seed=0, cache_dir=tmp_path, ratio_base="train_before"
    )
    # round(0.2 * 20) = 4
    assert len(corrupted.injected_ids) == 4
    assert manifest["ratio_reached"] == pytest.approx(0.2)
    assert manifest["ratio_base"] == "train_before"


def test_overlap_keeps_or_removes_test(tmp_path):
    data = make_data()
    kept, _ = corrupt(data, 0.2, seed=3, cache_dir=tmp_path, overlap=True)
    removed, _ = corrupt(data, 0.2, seed=3, cache_dir=tmp_path, overlap=False)
    assert kept.injected_ids == removed.injected_ids
    assert len(kept.test) == len(data.test)
    assert len(removed.test) == len(data.test) - 5
    remaining = {s.sample_id for s in removed.test}
    assert not remaining & set(removed.injected_ids)


def test_manifest_bytes_identical_for_same_seed(tmp_path):
    data = make_data()
    corrupt(data, 0.2, seed=7, cache_dir=tmp_path / "a")
    corrupt(data, 0.2, seed=7, cache_dir=tmp_path / "b")
    path_a = manifest_path(tmp_path / "a", data, 0.2, 7, "train_after", True, "iid")
    path_b = manifest_path(tmp_path / "b", data, 0.2, 7, "train_after", True, "iid")
    assert path_a.read_bytes() == path_b.read_bytes()


def test_manifest_differs_for_other_seed(tmp_path):
    data = make_data()
    _, first = corrupt(data, 0.2, seed=0, cache_dir=tmp_path)
    _, second = corrupt(data, 0.2, seed=1, cache_dir=tmp_path)
    assert first["injected_ids"] != second["injected_ids"]


def test_manifest_path_layout(tmp_path):
    data = make_data()
    corrupt(data, 0.1, seed=2, cache_dir=tmp_path, mode="not_iid", overlap=False)
    expected = (
        tmp_path / "corruption" / "toy" / "cat" / "ratio0.1_train_after_not_iid"
        "_overlap0_seed2.json"
    )
    assert expected.is_file()


def test_manifest_reused_without_drawing(tmp_path, monkeypatch):
    data = make_data()
    corrupted, _ = corrupt(data, 0.2, seed=0, cache_dir=tmp_path)
    path = manifest_path(tmp_path, data, 0.2, 0, "train_after", True, "iid")
    mtime = path.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the cached manifest should have been reused")

    monkeypatch.setattr(corruption, "draw_manifest", fail)
    again, _ = corrupt(data, 0.2, seed=0, cache_dir=tmp_path)
    assert again.injected_ids == corrupted.injected_ids
    assert path.stat().st_mtime_ns == mtime


def test_manifest_file_content_wins(tmp_path):
    data = make_data()
    corrupt(data, 0.2, seed=0, cache_dir=tmp_path)
    path = manifest_path(tmp_path, data, 0.2, 0, "train_after", True, "iid")
    manifest = json.loads(path.read_text())
    manifest["injected_ids"] = ["test/hole/003"]
    path.write_text(json.dumps(manifest))
    corrupted, _ = corrupt(data, 0.2, seed=0, cache_dir=tmp_path)
    assert corrupted.injected_ids == ["test/hole/003"]


def test_manifest_with_duplicate_id_rejected(tmp_path):
    data = make_data()
    corrupt(data, 0.2, seed=0, cache_dir=tmp_path)
    path = manifest_path(tmp_path, data, 0.2, 0, "train_after", True, "iid")
    manifest = json.loads(path.read_text())
    manifest["injected_ids"] = ["test/hole/003", "test/hole/003"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="more than once"):
        corrupt(data, 0.2, seed=0, cache_dir=tmp_path)


def test_manifest_with_unknown_id_rejected(tmp_path):
    data = make_data()
    corrupt(data, 0.2, seed=0, cache_dir=tmp_path)
    smaller = make_data(defects={"crack": 1, "hole": 1})
    smaller_path = manifest_path(tmp_path, smaller, 0.2, 0, "train_after", True, "iid")
    assert smaller_path.is_file()
    with pytest.raises(ManifestError, match="not in the test set.*delete the file"):
        corrupt(smaller, 0.2, seed=0, cache_dir=tmp_path)


def test_manifest_for_other_train_size_rejected(tmp_path):
    corrupt(make_data(n_train=20), 0.2, seed=0, cache_dir=tmp_path)
    with pytest.raises(ManifestError, match="drawn for 20 training units"):
        corrupt(make_data(n_train=21), 0.2, seed=0, cache_dir=tmp_path)


def test_cap_warns_and_records_reached_ratio(tmp_path):
    data = make_data(n_train=20, defects={"crack": 3})
    with pytest.warns(UserWarning, match="needs 13 anomalous.*only 3"):
        corrupted, manifest = corrupt(data, 0.4, seed=0, cache_dir=tmp_path)
    assert len(corrupted.injected_ids) == 3
    assert manifest["ratio_reached"] == pytest.approx(3 / 23)
    assert manifest["n_requested"] == 13
    assert len(manifest["warnings"]) == 1
    with pytest.warns(UserWarning, match="only 3"):
        corrupt(data, 0.4, seed=0, cache_dir=tmp_path)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
def test_invalid_ratio_rejected(tmp_path, ratio):
    with pytest.raises(ValueError, match="ratio must be in"):
        corrupt(make_data(), ratio, seed=0, cache_dir=tmp_path)


def test_invalid_settings_rejected(tmp_path):
    data = make_data()
    with pytest.raises(ValueError, match="ratio_base"):
        corrupt(data, 0.1, seed=0, cache_dir=tmp_path, ratio_base="clean")
    with pytest.raises(ValueError, match="mode"):
        corrupt(data, 0.1, seed=0, cache_dir=tmp_path, mode="random")
    with pytest.raises(ValueError, match="seed"):
        corrupt(data, 0.1, seed=-1, cache_dir=tmp_path)


def test_corrupting_twice_rejected(tmp_path):
    corrupted, _ = corrupt(make_data(), 0.1, seed=0, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="already corrupted"):
        corrupt(corrupted, 0.1, seed=0, cache_dir=tmp_path)


def test_not_iid_candidates(tmp_path):
    data = make_data(defects={"crack": 6, "hole": 4, "scratch": 6, "combined": 2})
    with pytest.warns(UserWarning):
        corrupted, manifest = corrupt(
            data, 0.9, seed=0, cache_dir=tmp_path, mode="not_iid"
        )
    # "crack" and "scratch" tie at 6 images; the name that sorts first wins.
    assert manifest["candidate_defect_types"] == ["crack", "combined"]
    injected_types = {s.defect_type for s in corrupted.train if s.label == 1}
    assert injected_types == {"crack", "combined"}
    assert len(corrupted.injected_ids) == 8


def test_higher_ratio_injects_superset(tmp_path):
    data = make_data(n_train=40)
    low, _ = corrupt(data, 0.1, seed=5, cache_dir=tmp_path)
    high, _ = corrupt(data, 0.2, seed=5, cache_dir=tmp_path)
    assert set(low.injected_ids) < set(high.injected_ids)


def test_grouped_data_injects_whole_clips(tmp_path):
    data = make_video_data()
    # round(0.34 * 4 / 0.66) = 2 clips
    corrupted, manifest = corrupt(data, 0.34, seed=0, cache_dir=tmp_path)
    assert manifest["unit"] == "group"
    assert sorted(manifest["injected_groups"]) == ["Test001", "Test003"]
    assert len(corrupted.injected_ids) == 10
    assert manifest["ratio_reached"] == pytest.approx(2 / 6)
    injected = [s for s in corrupted.train if s.split == "test"]
    assert {s.group_id for s in injected} == {"Test001", "Test003"}
    assert sum(s.label for s in injected) == 3


def test_grouped_overlap_false_removes_clips(tmp_path):
    data = make_video_data()
    corrupted, _ = corrupt(data, 0.2, seed=0, cache_dir=tmp_path, overlap=False)
    assert len(corrupted.injected_ids) == 5
    assert len(corrupted.test) == 10


def test_loaded_category_corrupts(synthetic_root, tmp_path):
    data = load_mvtec_ad(synthetic_root, "tiny")
    corrupted, manifest = corrupt(data, 0.25, seed=0, cache_dir=tmp_path)
    assert len(corrupted.injected_ids) == 4
    assert all(os.path.isfile(s.image_path) for s in corrupted.train)
    assert manifest["dataset"] == "mvtec_ad"


def test_no_overlap_warns_when_defect_type_emptied():
    train = [
        Sample(f"train/good/{i}", Path(f"{i}.png"), 0, split="train") for i in range(4)
    ]
    test = [
        Sample("test/good/0", Path("g.png"), 0, split="test"),
        Sample("test/rare/0", Path("r.png"), 1, defect_type="rare", split="test"),
        Sample("test/common/0", Path("c0.png"), 1, defect_type="common", split="test"),
        Sample("test/common/1", Path("c1.png"), 1, defect_type="common", split="test"),
    ]
    data = CategoryData("toy", "toy", train, test)
    manifest = {
        "dataset": "toy",
        "category": "toy",
        "n_train_clean": 4,
        "overlap": False,
        "injected_ids": ["test/rare/0"],
    }
    with pytest.warns(UserWarning, match=r"defect type\(s\) \['rare'\]"):
        corrupted = apply_manifest(data, manifest)
    assert [s.sample_id for s in corrupted.test if s.label == 1] == [
        "test/common/0",
        "test/common/1",
    ]
