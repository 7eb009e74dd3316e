"""Tests for image and mask reading across file variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from datasets.base import Sample
from datasets.image_io import (
    ImageReadError,
    check_readable,
    is_image_file,
    list_images,
    read_image,
    read_mask,
)

UINT16_VALUES = np.array([[0, 1, 128, 129, 257], [32767, 32768, 65279, 65534, 65535]])


def expected_from_uint16(values: np.ndarray) -> np.ndarray:
    return np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def write_truncated_png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def rgb_sample(tmp_path: Path, name: str, size: tuple[int, int] = (16, 12)) -> Path:
    path = tmp_path / name
    Image.fromarray(np.full((size[1], size[0], 3), 90, dtype=np.uint8)).save(path)
    return path


def test_grey_8bit_png_repeated_over_channels(tmp_path):
    values = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    Image.fromarray(values).save(tmp_path / "grey.png")
    image = read_image(tmp_path / "grey.png")
    assert image.shape == (6, 10, 3)
    assert image.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(image[:, :, channel], values)


def test_grey_16bit_png_rescaled_by_range(tmp_path):
    Image.fromarray(UINT16_VALUES.astype(np.uint16)).save(tmp_path / "grey16.png")
    image = read_image(tmp_path / "grey16.png")
    np.testing.assert_array_equal(image[:, :, 0], expected_from_uint16(UINT16_VALUES))


@pytest.mark.parametrize("name", ["grey16.tif", "GREY16.TIFF"])
def test_grey_16bit_tiff_rescaled_by_range(tmp_path, name):
    tifffile.imwrite(tmp_path / name, UINT16_VALUES.astype(np.uint16))
    image = read_image(tmp_path / name)
    assert image.shape == (2, 5, 3)
    np.testing.assert_array_equal(image[:, :, 2], expected_from_uint16(UINT16_VALUES))


def test_grey_8bit_tiff_kept(tmp_path):
    values = np.array([[0, 7, 255]], dtype=np.uint8)
    tifffile.imwrite(tmp_path / "grey8.tif", values)
    np.testing.assert_array_equal(read_image(tmp_path / "grey8.tif")[:, :, 1], values)


def test_rgba_png_alpha_dropped(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[..., 3] = np.array([0, 64, 128, 255], dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert image.shape == (4, 4, 3)
    np.testing.assert_array_equal(image, rgba[..., :3])


def test_palette_png_expanded_to_colours(tmp_path):
    indices = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette_image = Image.new("P", (2, 2))
    palette_image.putdata(indices.ravel().tolist())
    palette_image.putpalette([10, 20, 30, 200, 0, 0, 0, 255, 0] + [0] * (253 * 3))
    palette_image.save(tmp_path / "palette.png", transparency=0)
    image = read_image(tmp_path / "palette.png")
    np.testing.assert_array_equal(image[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(image[0, 1], [200, 0, 0])
    np.testing.assert_array_equal(image[1, 0], [0, 255, 0])


@pytest.mark.parametrize("name", ["upper.PNG", "upper.JPG", "upper.TIF", "upper.Bmp"])
def test_upper_case_extensions_read(tmp_path, name):
    path = rgb_sample(tmp_path, name)
    image = read_image(path)
    assert image.shape == (12, 16, 3)
    assert abs(int(image.mean()) - 90) <= 2


def test_one_bit_png_maps_to_0_and_255(tmp_path):
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "bits.png")
    np.testing.assert_array_equal(read_image(tmp_path / "bits.png")[0, :, 0], [255, 0])


def test_truncated_png_names_path(tmp_path):
    path = write_truncated_png(tmp_path / "cut.png")
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(path)


def test_non_image_file_names_path(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("not an image")
    with pytest.raises(ImageReadError, match="fake.png"):
        read_image(path)


def test_missing_image_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.png"):
        read_image(tmp_path / "absent.png")


def test_float_tiff_rejected_with_pixel_type(tmp_path):
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ImageReadError, match="float32"):
        read_image(tmp_path / "float.tif")


def test_mask_union_of_files(tmp_path):
    first = np.zeros((4, 6), dtype=np.uint8)
    first[0, 0] = 255
    second = np.zeros((4, 6), dtype=np.uint8)
    second[3, 5] = 1
    Image.fromarray(first).save(tmp_path / "a.png")
    Image.fromarray(second).save(tmp_path / "b.png")
    mask = read_mask([tmp_path / "a.png", tmp_path / "b.png"], (4, 6))
    assert mask.dtype == np.bool_
    assert mask.sum() == 2
    assert mask[0, 0]
    assert mask[3, 5]


def test_mask_16bit_value_one_is_anomalous(tmp_path):
    values = np.zeros((3, 3), dtype=np.uint16)
    values[1, 1] = 1
    Image.fromarray(values).save(tmp_path / "m16.png")
    mask = read_mask([tmp_path / "m16.png"], (3, 3))
    assert mask[1, 1]
    assert mask.sum() == 1


def test_mask_rgba_ignores_alpha(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, 1, 0] = 255
    Image.fromarray(rgba).save(tmp_path / "rgba_mask.png")
    mask = read_mask([tmp_path / "rgba_mask.png"], (2, 2))
    np.testing.assert_array_equal(mask, [[False, True], [False, False]])


def test_mask_empty_paths_all_false():
    mask = read_mask([], (5, 7))
    assert mask.shape == (5, 7)
    assert not mask.any()


def test_mask_size_mismatch_names_both_sizes(tmp_path):
    Image.fromarray(np.zeros((10, 20), dtype=np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ImageReadError) as error:
        read_mask([tmp_path / "m.png"], (12, 16))
    message = str(error.value)
    assert "m.png" in message
    assert "20x10" in message
    assert "16x12" in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", True),
        ("a.JPEG", True),
        ("a.Tiff", True),
        ("a.bmp", True),
        ("a.txt", False),
        (".DS_Store", False),
        ("._a.png", False),
        (".hidden.png", False),
        ("Thumbs.db", False),
    ],
)
def test_is_image_file_cases(name, expected):
    assert is_image_file(Path(name)) is expected


def test_list_images_sorted_and_filtered(tmp_path):
    for name in ["b.png", "a.PNG", "._a.png", ".DS_Store", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.png"]


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_check_readable_passes_good_files(tmp_path):
    image = rgb_sample(tmp_path, "ok.png")
    Image.fromarray(np.zeros((12, 16), dtype=np.uint8)).save(tmp_path / "ok_mask.png")
    sample = Sample("test/x/ok", image, 1, (tmp_path / "ok_mask.png",), "x", "test")
    check_readable([sample])


def test_check_readable_names_truncated_png(tmp_path):
    good = Sample("train/good/ok", rgb_sample(tmp_path, "ok.png"), 0)
    bad_path = write_truncated_png(tmp_path / "broken.png")
    bad = Sample("train/good/broken", bad_path, 0)
    with pytest.raises(ImageReadError, match=str(bad_path)) as error:
        check_readable([good, bad])
    assert "1 of 2" in str(error.value)


def test_check_readable_mask_size_mismatch(tmp_path):
    image = rgb_sample(tmp_path, "img.png", size=(16, 12))
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "small.png")
    sample = Sample("test/x/img", image, 1, (tmp_path / "small.png",), "x", "test")
    with pytest.raises(ImageReadError, match="small.png.*8x8.*16x12"):
        check_readable([sample])
    check_readable([sample], check_masks=False)


def test_check_readable_lists_first_failures_only(tmp_path):
    samples = [
        Sample(f"train/good/{i:02d}", tmp_path / f"missing_{i:02d}.png", 0)
        for i in range(13)
    ]
    with pytest.raises(ImageReadError) as error:
        check_readable(samples, workers=2)
    message = str(error.value)
    assert "13 of 13" in message
    assert "missing_00.png" in message
    assert "missing_12.png" not in message
    assert "and 3 more" in message
