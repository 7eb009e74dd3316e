"""Tests for the seeded synthetic data generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from datasets.errors import DatasetLayoutError
from datasets.image_io import read_image, read_mask
from datasets.synthetic import (
    STAMP_NAME,
    add_defect,
    draw_style,
    generate_synthetic_mvtec,
    make_rng,
    render_nominal,
)

SMALL = {
    "n_train": 3,
    "n_test_good": 2,
    "n_defects_per_type": 2,
    "defect_types": ("blob", "patch"),
    "image_size": 48,
}


def tree_bytes(folder):
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_files(tmp_path):
    first = generate_synthetic_mvtec(tmp_path / "a", seed=4, **SMALL)
    second = generate_synthetic_mvtec(tmp_path / "b", seed=4, **SMALL)
    assert tree_bytes(first) == tree_bytes(second)


def test_other_seed_other_images(tmp_path):
    first = generate_synthetic_mvtec(tmp_path / "a", seed=0, **SMALL)
    second = generate_synthetic_mvtec(tmp_path / "b", seed=1, **SMALL)
    path = "train/good/000.png"
    assert (first / path).read_bytes() != (second / path).read_bytes()


def test_layout_and_stamp(tmp_path):
    folder = generate_synthetic_mvtec(tmp_path, category="cat", **SMALL)
    assert folder == tmp_path / "cat"
    assert len(list((folder / "train" / "good").glob("*.png"))) == 3
    assert len(list((folder / "test" / "good").glob("*.png"))) == 2
    assert (folder / "test" / "patch" / "001.png").is_file()
    assert (folder / "ground_truth" / "blob" / "001_mask.png").is_file()
    stamp = json.loads((folder / STAMP_NAME).read_text())
    assert stamp["n_train"] == 3
    assert stamp["seed"] == 0


def test_reuse_keeps_files(tmp_path):
    folder = generate_synthetic_mvtec(tmp_path, **SMALL)
    image = folder / "train" / "good" / "000.png"
    mtime = image.stat().st_mtime_ns
    generate_synthetic_mvtec(tmp_path, **SMALL)
    assert image.stat().st_mtime_ns == mtime


def test_changed_parameters_regenerate(tmp_path):
    folder = generate_synthetic_mvtec(tmp_path, **SMALL)
    generate_synthetic_mvtec(tmp_path, **{**SMALL, "n_train": 5})
    assert len(list((folder / "train" / "good").glob("*.png"))) == 5
    assert json.loads((folder / STAMP_NAME).read_text())["n_train"] == 5


def test_foreign_folder_left_untouched(tmp_path):
    foreign = tmp_path / "synthetic"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetLayoutError, match="not written by this suite"):
        generate_synthetic_mvtec(tmp_path, **SMALL)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_masks_match_changed_pixels(tmp_path):
    folder = generate_synthetic_mvtec(tmp_path, **SMALL)
    for defect_type in ("blob", "patch"):
        image_path = folder / "test" / defect_type / "000.png"
        mask_path = folder / "ground_truth" / defect_type / "000_mask.png"
        values = np.unique(np.asarray(Image.open(mask_path)))
        assert set(values.tolist()) == {0, 255}
        mask = read_mask([mask_path], (48, 48))
        assert 0.005 < mask.mean() < 0.3
        assert read_image(image_path).shape == (48, 48, 3)


@pytest.mark.parametrize("defect_type", ["blob", "scratch", "patch", "combined"])
def test_defect_contrasts_with_texture(defect_type):
    style = draw_style(make_rng(0, "style"))
    rng = make_rng(0, defect_type)
    nominal = render_nominal(rng, style, 128)
    image, mask = add_defect(rng, nominal, defect_type)
    assert mask.any()
    np.testing.assert_array_equal(image[~mask], nominal[~mask])
    difference = np.abs(image[mask].astype(int) - nominal[mask].astype(int))
    assert difference.mean() > 60


def test_nominal_images_similar_not_identical():
    style = draw_style(make_rng(0, "style"))
    first = render_nominal(make_rng(0, "a"), style, 64).astype(int)
    second = render_nominal(make_rng(0, "b"), style, 64).astype(int)
    assert not np.array_equal(first, second)
    assert abs(first.mean() - second.mean()) < 15


def test_defects_differ_between_images():
    style = draw_style(make_rng(0, "style"))
    masks = [
        add_defect(make_rng(0, i), render_nominal(make_rng(0, i), style, 64), "blob")[1]
        for i in range(4)
    ]
    assert len({m.tobytes() for m in masks}) == 4


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("n_train", 0, "n_train must be at least 1"),
        ("image_size", 16, "image_size must be at least 32"),
        ("defect_types", ("blob", "dent"), "defect_types must be distinct"),
        ("seed", -1, "seed must be a non-negative"),
    ],
)
def test_invalid_parameters_rejected(tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic_mvtec(tmp_path, **{**SMALL, option: value})


def test_failed_write_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        generate_synthetic_mvtec(tmp_path, **{**SMALL, "seed": -1})
    assert list(tmp_path.iterdir()) == []
