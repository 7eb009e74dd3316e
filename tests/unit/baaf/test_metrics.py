"""Tests of the image-level, pixel-level and filter metrics."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from baaf.metrics import (
    _pro_curve,
    _region_weights,
    aupro,
    evaluate,
    filter_precision_recall,
    image_auroc,
    pixel_auroc,
    prepare_pixel_arrays,
)

# One 4x4 image whose 2x2 top-left square is the only anomalous region.
SQUARE_MASK = np.zeros((4, 4), dtype=bool)
SQUARE_MASK[:2, :2] = True


def square_case_map() -> np.ndarray:
    """Map of SQUARE_MASK with distinct scores, anomalous and nominal interleaved.

    Region pixels score 0.9, 0.8, 0.4 and 0.1. Nominal pixels score 0.85, 0.5,
    0.3 and nine values from 0.09 down to 0.01.
    """
    anomaly_map = np.zeros((4, 4))
    anomaly_map[:2, :2] = [[0.9, 0.8], [0.4, 0.1]]
    nominal_scores = [0.85, 0.5, 0.3] + [k / 100 for k in range(9, 0, -1)]
    anomaly_map[~SQUARE_MASK] = nominal_scores
    return anomaly_map


def reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """Compute AUPRO slowly, one threshold at a time, as a check on ``aupro``."""
    regions = []
    for index, mask in enumerate(masks):
        labeled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(index, labeled == k) for k in range(1, count + 1)]
    nominal = ~masks

    points = [(0.0, 0.0)]
    for threshold in np.unique(maps)[::-1]:
        positive = maps >= threshold
        fpr = np.count_nonzero(positive & nominal) / np.count_nonzero(nominal)
        overlaps = [
            np.count_nonzero(positive[index] & region) / np.count_nonzero(region)
            for index, region in regions
        ]
        points.append((fpr, float(np.mean(overlaps))))

    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def random_blob_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Draw irregular masks, the first of them all nominal."""
    masks = rng.random((n, size, size)) < 0.25
    masks[0] = False
    return masks


# image_auroc


def test_image_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=50)
    scores = rng.normal(size=50) + labels

    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_image_auroc_accepts_bool_labels():
    labels = np.array([False, True, False, True])
    scores = np.array([0.1, 0.9, 0.2, 0.3])

    assert image_auroc(labels, scores) == 1.0


def test_image_auroc_one_class_is_nan():
    with pytest.warns(UndefinedMetricWarning, match="no image is anomalous"):
        value = image_auroc([0, 0, 0], [0.1, 0.2, 0.3])

    assert np.isnan(value)


def test_image_auroc_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"only 0 .* and 1"):
        image_auroc([0, 2, 1], [0.1, 0.2, 0.3])


def test_image_auroc_rejects_length_mismatch():
    with pytest.raises(ValueError, match="one score per label"):
        image_auroc([0, 1, 1], [0.1, 0.2])


def test_image_auroc_rejects_nan_scores():
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([0, 1], [0.1, np.nan])


# pixel_auroc


def test_pixel_auroc_matches_sklearn_over_all_pixels():
    rng = np.random.default_rng(1)
    masks = random_blob_masks(rng, 3, 16)
    maps = rng.random((3, 16, 16)) + masks

    expected = roc_auc_score(masks.ravel(), maps.ravel())

    assert pixel_auroc(maps, masks) == pytest.approx(expected)


def test_pixel_auroc_without_anomalous_pixel_is_nan():
    masks = np.zeros((2, 8, 8), dtype=bool)

    with pytest.warns(UndefinedMetricWarning, match="no pixel is anomalous"):
        value = pixel_auroc(np.ones((2, 8, 8)), masks)

    assert np.isnan(value)


def test_pixel_auroc_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="prepare_pixel_arrays"):
        pixel_auroc(np.ones((2, 8, 8)), np.ones((2, 8, 9), dtype=bool))


# aupro: hand-computed cases


def test_aupro_single_square_by_hand():
    # Thresholds from high to low give the (FPR, PRO) points (0, 1/4),
    # (1/12, 1/4), (1/12, 1/2), (2/12, 1/2), (2/12, 3/4), (3/12, 3/4),
    # (3/12, 1), then (4/12, 1) and on to (1, 1).
    # Area up to FPR 0.3: (1/4 + 1/2 + 3/4) / 12 + (0.3 - 3/12) * 1 = 0.175.
    maps = square_case_map()[None]
    masks = SQUARE_MASK[None]

    assert aupro(maps, masks) == pytest.approx(0.175 / 0.3, abs=1e-12)


def test_aupro_single_square_lower_limit():
    # Up to FPR 1/8 the area is 1/4 * 1/12 + 1/2 * (1/8 - 1/12) = 1/24.
    maps = square_case_map()[None]
    masks = SQUARE_MASK[None]

    assert aupro(maps, masks, fpr_limit=0.125) == pytest.approx(1 / 3, abs=1e-12)


def tied_case() -> tuple[np.ndarray, np.ndarray]:
    """Square region with scores tied across region and nominal pixels.

    Region: 0.9, 0.6, 0.6, 0.2. Nominal: 0.6 twice, 0.2 three times, 0.0 seven
    times.
    """
    anomaly_map = np.zeros((4, 4))
    anomaly_map[:2, :2] = [[0.9, 0.6], [0.6, 0.2]]
    anomaly_map[~SQUARE_MASK] = [0.6, 0.6, 0.2, 0.2, 0.2] + [0.0] * 7
    return anomaly_map[None], SQUARE_MASK[None]


def test_aupro_ties_curve_has_one_point_per_score():
    maps, masks = tied_case()
    weights, _ = _region_weights(masks)

    fprs, pros = _pro_curve(maps.ravel(), ~masks.ravel(), weights)

    # One point per distinct score 0.9, 0.6, 0.2, 0.0, after the origin.
    np.testing.assert_allclose(fprs, [0, 0, 2 / 12, 5 / 12, 1], atol=1e-15)
    np.testing.assert_allclose(pros, [0, 1 / 4, 3 / 4, 1, 1], atol=1e-15)


def test_aupro_ties_by_hand():
    # Points (0, 1/4), (1/6, 3/4), (5/12, 1). The PRO at FPR 0.3 interpolates
    # to 3/4 + (1/4) * (0.3 - 1/6) / (1/4) = 53/60, so the area is
    # (1/6) * (1/4 + 3/4) / 2 + (0.3 - 1/6) * (3/4 + 53/60) / 2 = 173/900.
    maps, masks = tied_case()
    expected = Fraction(173, 900) / Fraction(3, 10)

    assert aupro(maps, masks) == pytest.approx(float(expected), abs=1e-12)


def test_aupro_ties_ignore_pixel_order():
    maps, masks = tied_case()
    flipped_maps = maps[:, ::-1, ::-1].copy()
    flipped_masks = masks[:, ::-1, ::-1].copy()

    assert aupro(flipped_maps, flipped_masks) == pytest.approx(aupro(maps, masks))


def test_aupro_diagonal_regions_are_one_region():
    # Pixel (0, 0) touches the 2x2 square at rows/columns 1-2 only at a corner.
    # 8-connected, they form one region of 5 pixels, so finding only the corner
    # pixel gives PRO 1/5. 4-connected they would be two regions with PRO
    # (1 + 0) / 2 = 1/2.
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True
    mask[1:3, 1:3] = True
    anomaly_map = np.full((4, 4), 0.1)
    anomaly_map[0, 0] = 0.9
    anomaly_map[1:3, 1:3] = 0.0
    # Points (0, 1/5), (1, 1/5), (1, 1).

    value = aupro(anomaly_map[None], mask[None])

    assert value == pytest.approx(0.2, abs=1e-12)
    assert value != pytest.approx(0.5)


def test_aupro_nominal_image_adds_false_positives():
    # The extra all-nominal image has four pixels scored 0.95, above every
    # other pixel, and twelve scored 0. With 28 nominal pixels, PRO stays 0 up
    # to FPR 4/28, then steps through 1/4, 1/2, 3/4 over one nominal pixel
    # each and reaches 1 at FPR 7/28. The area up to 0.3 is
    # (1/4 + 1/2 + 3/4) / 28 + (0.3 - 7/28) = 29/280, and AUPRO = 29/84,
    # down from 7/12 by 5/21.
    extra_map = np.zeros((4, 4))
    extra_map[0] = 0.95
    maps = np.stack([square_case_map(), extra_map])
    masks = np.stack([SQUARE_MASK, np.zeros((4, 4), dtype=bool)])

    with_extra = aupro(maps, masks)
    without_extra = aupro(maps[:1], masks[:1])

    assert with_extra == pytest.approx(29 / 84, abs=1e-12)
    assert without_extra - with_extra == pytest.approx(5 / 21, abs=1e-12)


def test_aupro_low_scoring_nominal_image_counts_in_fpr():
    # Sixteen more nominal pixels scored below everything only enlarge the FPR
    # denominator: the curve reaches PRO 1 at FPR 3/28, so the area up to 0.3
    # is 0.3 - (3/4 + 1/2 + 1/4) / 28 and AUPRO = 23/28.
    maps = np.stack([square_case_map(), np.full((4, 4), -1.0)])
    masks = np.stack([SQUARE_MASK, np.zeros((4, 4), dtype=bool)])

    assert aupro(maps, masks) == pytest.approx(23 / 28, abs=1e-12)


def test_aupro_perfect_map_is_one():
    masks = random_blob_masks(np.random.default_rng(2), 4, 12)

    assert aupro(masks.astype(float), masks) == pytest.approx(1.0, abs=1e-12)


def test_aupro_inverted_map_is_zero():
    masks = random_blob_masks(np.random.default_rng(3), 4, 12)

    assert aupro(1.0 - masks, masks) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_aupro_matches_threshold_sweep(seed):
    rng = np.random.default_rng(seed)
    masks = random_blob_masks(rng, 3, 9)
    # Rounding to one decimal creates many ties, half of the cases keep none.
    maps = rng.random((3, 9, 9)) + 0.5 * masks
    if seed % 2 == 0:
        maps = np.round(maps, 1)
    fpr_limit = [0.3, 0.05, 1.0][seed % 3]

    expected = reference_aupro(maps, masks, fpr_limit)

    assert aupro(maps, masks, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-9)


def test_aupro_without_regions_is_nan():
    with pytest.warns(UndefinedMetricWarning, match="no anomalous region"):
        value = aupro(np.ones((2, 4, 4)), np.zeros((2, 4, 4), dtype=bool))

    assert np.isnan(value)


def test_aupro_without_nominal_pixels_is_nan():
    with pytest.warns(UndefinedMetricWarning, match="no nominal pixel"):
        value = aupro(np.ones((1, 4, 4)), np.ones((1, 4, 4), dtype=bool))

    assert np.isnan(value)


@pytest.mark.parametrize("fpr_limit", [0.0, -0.1, 1.5])
def test_aupro_rejects_bad_fpr_limit(fpr_limit):
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(np.ones((1, 4, 4)), SQUARE_MASK[None], fpr_limit=fpr_limit)


# prepare_pixel_arrays


def mask_area_after_resize(mask: np.ndarray, size: int) -> int:
    """Count anomalous pixels of ``mask`` after resizing it to (size, size)."""
    zero_map = np.zeros((8, 8), dtype=np.float32)
    _, resized = prepare_pixel_arrays(
        [zero_map], [mask], "full", 1.0, resize=size, crop=size
    )
    return int(resized.sum())


def truncated_bilinear_area(mask: np.ndarray, size: int) -> int:
    """Count anomalous pixels when bilinear values are truncated to integers."""
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear")
    return int(resized.floor().sum())


def test_mask_resize_preserves_disk_area():
    rows, cols = np.ogrid[:512, :512]
    disk = (rows - 255.3) ** 2 + (cols - 260.7) ** 2 <= 100.0**2

    area = mask_area_after_resize(disk, 256)

    assert area == pytest.approx(disk.sum() / 4, rel=0.01)


def test_mask_resize_preserves_odd_rectangle_area():
    mask = np.zeros((512, 512), dtype=bool)
    # Odd edges are the worst case: each edge may move by half an output pixel.
    mask[33:334, 57:434] = True

    area = mask_area_after_resize(mask, 256)

    assert area == pytest.approx(mask.sum() / 4, rel=0.01)


@pytest.mark.parametrize("first_row", [100, 101])
def test_mask_resize_keeps_two_pixel_line(first_row):
    mask = np.zeros((512, 512), dtype=bool)
    mask[first_row : first_row + 2, :] = True

    area = mask_area_after_resize(mask, 256)

    assert area == 256
    if first_row % 2 == 1:
        assert truncated_bilinear_area(mask, 256) == 0


def test_mask_upsize_keeps_one_pixel_line():
    mask = np.zeros((100, 100), dtype=bool)
    mask[:, 40] = True

    area = mask_area_after_resize(mask, 256)

    assert area >= 256
    assert truncated_bilinear_area(mask, 256) == 0


def test_mask_resize_uint8_matches_bool():
    rng = np.random.default_rng(4)
    mask = rng.random((300, 200)) < 0.3
    zero_map = np.zeros((8, 8), dtype=np.float32)

    _, from_bool = prepare_pixel_arrays([zero_map], [mask], "full", 1.0)
    _, from_uint8 = prepare_pixel_arrays(
        [zero_map], [mask.astype(np.uint8) * 255], "full", 1.0
    )

    np.testing.assert_array_equal(from_bool, from_uint8)


@pytest.mark.parametrize(
    ("map_frame", "crop_fraction", "map_size"),
    [("full", 1.0, 64), ("center_crop", 0.875, 28)],
)
def test_prepare_pixel_arrays_shapes(map_frame, crop_fraction, map_size):
    maps = np.random.default_rng(5).random((3, map_size, map_size))
    masks = [np.zeros((300, 400), bool), np.ones((512, 512), bool), np.zeros((9, 9))]

    out_maps, out_masks = prepare_pixel_arrays(maps, masks, map_frame, crop_fraction)

    assert out_maps.shape == (3, 224, 224)
    assert out_maps.dtype == np.float32
    assert out_masks.shape == (3, 224, 224)
    assert out_masks.dtype == bool
    assert out_masks[1].all()
    assert not out_masks[0].any()


def test_prepare_pixel_arrays_frames_agree():
    # A full 256x256 map and its own 224x224 centre crop describe the same
    # pixels, so both frames must give the same arrays.
    full_map = np.random.default_rng(6).random((256, 256)).astype(np.float32)
    crop_map = full_map[16:240, 16:240]
    mask = np.zeros((512, 512), bool)

    from_full, _ = prepare_pixel_arrays([full_map], [mask], "full", 1.0)
    from_crop, _ = prepare_pixel_arrays([crop_map], [mask], "center_crop", 0.875)

    np.testing.assert_allclose(from_full, from_crop, atol=1e-6)


def test_prepare_pixel_arrays_aligns_full_map_with_mask():
    mask = np.zeros((512, 512), bool)
    mask[100:200, 300:400] = True
    full_map = mask[::4, ::4].astype(np.float32)

    maps, masks = prepare_pixel_arrays([full_map], [mask], "full", 1.0)

    assert np.mean((maps[0] > 0.5) == masks[0]) > 0.995


def test_prepare_pixel_arrays_rejects_crop_fraction_mismatch():
    with pytest.raises(ValueError, match="crop_fraction 0.9 .* 0.8750"):
        prepare_pixel_arrays(
            [np.zeros((28, 28))], [np.zeros((8, 8))], "center_crop", 0.9
        )


def test_prepare_pixel_arrays_rejects_unknown_frame():
    with pytest.raises(ValueError, match="map_frame"):
        prepare_pixel_arrays([np.zeros((28, 28))], [np.zeros((8, 8))], "crop", 1.0)


def test_prepare_pixel_arrays_rejects_count_mismatch():
    with pytest.raises(ValueError, match="2 anomaly maps but 1 masks"):
        prepare_pixel_arrays([np.zeros((8, 8))] * 2, [np.zeros((8, 8))], "full", 1.0)


def test_prepare_pixel_arrays_rejects_3d_mask():
    with pytest.raises(ValueError, match=r"mask 0 .* shape \(8, 8, 3\)"):
        prepare_pixel_arrays([np.zeros((8, 8))], [np.zeros((8, 8, 3))], "full", 1.0)


def test_prepare_pixel_arrays_rejects_nan_map():
    anomaly_map = np.zeros((8, 8))
    anomaly_map[2, 2] = np.nan

    with pytest.raises(ValueError, match="anomaly map 0 contains NaN"):
        prepare_pixel_arrays([anomaly_map], [np.zeros((8, 8))], "full", 1.0)


# filter_precision_recall


def test_filter_precision_recall_counts_overlap():
    precision, recall = filter_precision_recall({"a", "b", "c", "d"}, {"a", "b", "x"})

    assert precision == pytest.approx(2 / 4)
    assert recall == pytest.approx(2 / 3)


def test_filter_precision_nan_when_nothing_removed():
    precision, recall = filter_precision_recall(set(), {"a"})

    assert np.isnan(precision)
    assert recall == 0.0


def test_filter_recall_nan_when_nothing_injected():
    precision, recall = filter_precision_recall({"a"}, set())

    assert precision == 0.0
    assert np.isnan(recall)


def test_filter_precision_recall_both_empty():
    precision, recall = filter_precision_recall(set(), set())

    assert np.isnan(precision)
    assert np.isnan(recall)


# evaluate


def evaluation_inputs() -> tuple[np.ndarray, np.ndarray, list, list]:
    rng = np.random.default_rng(7)
    labels = np.array([0, 1, 1, 0])
    scores = np.array([0.1, 0.8, 0.7, 0.3])
    masks = [np.zeros((64, 64), bool) for _ in labels]
    masks[1][10:30, 10:30] = True
    masks[2][40:50, 5:60] = True
    maps = [rng.random((32, 32)).astype(np.float32) for _ in labels]
    return labels, scores, maps, masks


def test_evaluate_returns_all_metrics():
    labels, scores, maps, masks = evaluation_inputs()

    metrics = evaluate(labels, scores, maps, masks, "full", 1.0, True)

    assert set(metrics) == {"image_auroc", "pixel_auroc", "pixel_aupro"}
    assert metrics["image_auroc"] == 1.0
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0
    assert 0.0 <= metrics["pixel_aupro"] <= 1.0


def test_evaluate_pixel_metrics_match_functions():
    labels, scores, maps, masks = evaluation_inputs()
    prepared_maps, prepared_masks = prepare_pixel_arrays(maps, masks, "full", 1.0)

    metrics = evaluate(labels, scores, maps, masks, "full", 1.0, True)

    assert metrics["pixel_auroc"] == pixel_auroc(prepared_maps, prepared_masks)
    assert metrics["pixel_aupro"] == aupro(prepared_maps, prepared_masks)


def test_evaluate_without_pixel_masks_skips_pixel_metrics():
    labels, scores, maps, masks = evaluation_inputs()

    metrics = evaluate(labels, scores, maps, masks, "full", 1.0, False)

    assert metrics["image_auroc"] == 1.0
    assert metrics["pixel_auroc"] is None
    assert metrics["pixel_aupro"] is None


def test_evaluate_without_maps_skips_pixel_metrics():
    labels, scores, _, masks = evaluation_inputs()

    metrics = evaluate(labels, scores, None, masks, "full", 1.0, True)

    assert metrics["pixel_auroc"] is None
    assert metrics["pixel_aupro"] is None


def test_evaluate_requires_masks_when_promised():
    labels, scores, maps, _ = evaluation_inputs()

    with pytest.raises(ValueError, match="has_pixel_masks is True but masks is None"):
        evaluate(labels, scores, maps, None, "full", 1.0, True)


def test_evaluate_rejects_map_count_mismatch():
    labels, scores, maps, masks = evaluation_inputs()

    with pytest.raises(ValueError, match="3 anomaly maps for 4 labels"):
        evaluate(labels, scores, maps[:3], masks, "full", 1.0, True)
