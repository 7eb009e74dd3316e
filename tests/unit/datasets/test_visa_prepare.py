"""Tests for the VisA split-file conversion and the VisA loader."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datasets.errors import DatasetLayoutError, DatasetNotFoundError
from datasets.image_io import ImageReadError, read_mask
from datasets.synthetic_layouts import generate_synthetic_visa_raw
from datasets.visa import PREPARED_STAMP, load_visa, prepare_visa, read_split_csv

REPO_ROOT = Path(__file__).resolve().parents[3]
REAL_SPLIT = REPO_ROOT.parent / "shared" / "data" / "visa" / "split_csv" / "1cls.csv"


@pytest.fixture(scope="module")
def visa_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_visa_raw(tmp_path_factory.mktemp("visa") / "raw")


@pytest.fixture
def raw_copy(visa_raw: Path, tmp_path: Path) -> Path:
    shutil.copytree(visa_raw, tmp_path / "raw")
    return tmp_path / "raw"


def write_raw_images(raw_root: Path, rows: pd.DataFrame) -> None:
    """Write a 32x24 JPEG for each listed image and a class-valued raw mask."""
    image = Image.fromarray(np.full((24, 32, 3), 120, dtype=np.uint8))
    mask_values = np.zeros((24, 32), dtype=np.uint8)
    mask_values[5:10, 8:20] = 3
    raw_mask = Image.fromarray(mask_values)
    for row in rows.itertuples(index=False):
        path = raw_root / row.image
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="JPEG")
        if row.mask:
            mask_path = raw_root / row.mask
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            raw_mask.save(mask_path)


def edit_split(raw_root: Path, edit) -> Path:
    path = raw_root / "split_csv" / "1cls.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(table).to_csv(path, index=False)
    return path


def test_real_split_file_columns_and_size():
    if not REAL_SPLIT.is_file():
        pytest.skip(f"VisA split file not found at {REAL_SPLIT}")
    table = read_split_csv(REAL_SPLIT)
    assert len(table) == 10821
    assert sorted(table["object"].unique())[:2] == ["candle", "capsules"]
    assert (table.loc[table["label"] == "normal", "mask"] == "").all()


def test_real_split_file_pipe_fryum(tmp_path):
    if not REAL_SPLIT.is_file():
        pytest.skip(f"VisA split file not found at {REAL_SPLIT}")
    raw_root = tmp_path / "raw"
    table = read_split_csv(REAL_SPLIT)
    write_raw_images(raw_root, table[table["object"] == "pipe_fryum"])

    prepare_visa(
        raw_root, tmp_path / "visa", split_csv=REAL_SPLIT, objects=["pipe_fryum"]
    )
    data = load_visa(tmp_path / "visa", "pipe_fryum")

    assert len(data.train) == 450
    assert len(data.test) == 150
    assert sum(s.label for s in data.test) == 100
    assert {s.defect_type for s in data.test if s.label} == {"bad"}
    assert data.has_pixel_masks
    sample = next(s for s in data.test if s.label)
    values = np.unique(np.asarray(Image.open(sample.mask_paths[0])))
    assert values.tolist() == [0, 255]
    assert read_mask(sample.mask_paths, (24, 32)).sum() == 5 * 12


def test_synthetic_raw_prepared_and_loaded(visa_raw, tmp_path):
    folders = prepare_visa(visa_raw, tmp_path / "visa")
    assert [f.name for f in folders] == ["synth_a", "synth_b"]
    data = load_visa(tmp_path / "visa", "synth_b")
    assert data.dataset == "visa"
    assert len(data.train) == 8
    assert len(data.test) == 3 + 4
    assert data.train[0].sample_id == "train/good/0000"
    assert data.test[-1].sample_id == "test/bad/003"
    assert data.test[-1].image_path.suffix == ".JPG"
    assert data.test[-1].mask_paths[0].name == "003.png"


def test_raw_mask_values_become_255(visa_raw, tmp_path):
    prepare_visa(visa_raw, tmp_path / "visa", objects=["synth_a"])
    raw = np.asarray(Image.open(visa_raw / "synth_a/Data/Masks/Anomaly/001.png"))
    prepared = np.asarray(
        Image.open(tmp_path / "visa/synth_a/ground_truth/bad/001.png")
    )
    assert set(np.unique(raw).tolist()) == {0, 2}
    np.testing.assert_array_equal(prepared > 0, raw > 0)
    assert set(np.unique(prepared).tolist()) == {0, 255}


def test_prepared_object_reused(visa_raw, tmp_path):
    prepare_visa(visa_raw, tmp_path / "visa", objects=["synth_a"])
    stamp = tmp_path / "visa" / "synth_a" / PREPARED_STAMP
    mtime = stamp.stat().st_mtime_ns
    prepare_visa(visa_raw, tmp_path / "visa", objects=["synth_a"])
    assert stamp.stat().st_mtime_ns == mtime


def test_unknown_object_lists_available(visa_raw, tmp_path):
    with pytest.raises(DatasetLayoutError, match="'candle'.*synth_a"):
        prepare_visa(visa_raw, tmp_path / "visa", objects=["candle"])


def test_missing_column_rejected(raw_copy, tmp_path):
    edit_split(raw_copy, lambda t: t.drop(columns=["mask"]))
    with pytest.raises(DatasetLayoutError, match=r"columns \['mask'\] are missing"):
        prepare_visa(raw_copy, tmp_path / "visa")


def test_invalid_label_names_line(raw_copy, tmp_path):
    def edit(table):
        table.loc[2, "label"] = "defect"
        return table

    edit_split(raw_copy, edit)
    with pytest.raises(DatasetLayoutError, match="line 4: label 'defect'"):
        prepare_visa(raw_copy, tmp_path / "visa")


def test_anomaly_in_train_rejected(raw_copy, tmp_path):
    def edit(table):
        table.loc[table["label"] == "anomaly", "split"] = "train"
        return table

    edit_split(raw_copy, edit)
    with pytest.raises(DatasetLayoutError, match="training split.*1cls.csv"):
        prepare_visa(raw_copy, tmp_path / "visa")


def test_missing_raw_image_named(raw_copy, tmp_path):
    (raw_copy / "synth_a/Data/Images/Normal/0002.JPG").unlink()
    with pytest.raises(DatasetNotFoundError, match="Normal/0002.JPG"):
        prepare_visa(raw_copy, tmp_path / "visa", objects=["synth_a"])
    assert not (tmp_path / "visa" / "synth_a").exists()


def test_raw_mask_size_mismatch(raw_copy, tmp_path):
    mask = raw_copy / "synth_a/Data/Masks/Anomaly/000.png"
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(mask)
    with pytest.raises(ImageReadError, match="000.png.*10x10"):
        prepare_visa(raw_copy, tmp_path / "visa", objects=["synth_a"])


def test_script_prepares_objects(visa_raw, tmp_path):
    spec = importlib.util.spec_from_file_location(
        "prepare_visa_script", REPO_ROOT / "scripts" / "prepare_visa.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--raw-root", str(visa_raw), "--out-root", str(tmp_path / "out")]
    assert script.main([*argv, "--objects", "synth_b"]) == 0
    assert (tmp_path / "out" / "synth_b" / "test" / "bad" / "000.JPG").is_file()
    assert not (tmp_path / "out" / "synth_a").exists()
