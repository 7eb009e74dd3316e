"""Image- and pixel-level anomaly detection metrics.

Pixel metrics are computed on the frame that PatchCore-style pipelines evaluate: the
image is resized to a ``resize x resize`` square and centre cropped to
``crop x crop`` (256 and 224 by default). :func:`prepare_pixel_arrays` brings
anomaly maps and ground-truth masks to that frame. :func:`pixel_auroc` and
:func:`aupro` then pool all pixels of all test images.

Metrics that are undefined for the given input (one class only, no anomalous
region, empty id sets) return ``nan`` instead of raising, and emit
:class:`sklearn.exceptions.UndefinedMetricWarning` where noted.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.integrate import trapezoid
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

logger = logging.getLogger(__name__)

MAP_FRAMES = ("full", "center_crop")
CROP_FRACTION_TOLERANCE = 1e-3
# Bounds the float32 input of one interpolate call to 64 MiB.
_MAX_BATCH_PIXELS = 2**24
# 8-connectivity: pixels that touch only at a corner belong to one region.
_REGION_STRUCTURE = np.ones((3, 3), dtype=bool)


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Compute the area under the ROC curve of image-level scores.

    Parameters
    ----------
    labels : array_like of shape (n_images,)
        ``1`` (or True) for anomalous images, ``0`` (or False) for nominal ones.
    scores : array_like of shape (n_images,)
        Image anomaly scores, higher means more anomalous. Must be finite.

    Returns
    -------
    float
        I-AUROC, or ``nan`` with an ``UndefinedMetricWarning`` when ``labels``
        contains only one class.
    """
    labels = _as_binary_labels(labels, "labels")
    scores = _as_finite_scores(scores, "scores", expected_shape=labels.shape)
    return _binary_auroc(labels, scores, unit="image")


def prepare_pixel_arrays(
    anomaly_maps: Sequence[ArrayLike] | np.ndarray,
    masks: Sequence[ArrayLike] | np.ndarray,
    map_frame: str,
    crop_fraction: float,
    resize: int = 256,
    crop: int = 224,
) -> tuple[np.ndarray, np.ndarray]:
    """Bring anomaly maps and ground-truth masks to the centre-crop frame.

    Masks have the size of the original image and may differ in size between
    images. Each one is binarised (any non-zero pixel is anomalous), resized to
    ``resize x resize`` with nearest-neighbour interpolation and centre cropped to
    ``crop x crop``. Nearest-neighbour here is PyTorch's ``"nearest-exact"`` mode,
    which samples the source pixel under each output pixel centre. It keeps the
    region area in expectation and keeps any region at least one output pixel
    wide, where truncating interpolated values to integers would shrink regions
    and erase thin ones.

    Maps are resized with bilinear interpolation (``align_corners=False``, no
    antialiasing). A ``"full"`` map covers the whole image, so it is resized to
    ``resize x resize`` and then centre cropped. A ``"center_crop"`` map already
    covers the centre crop of the resized image, so it is resized straight to
    ``crop x crop``.

    Parameters
    ----------
    anomaly_maps : sequence of array_like of shape (h, w), or ndarray (n, h, w)
        Anomaly maps, higher means more anomalous. Sizes may differ per image.
    masks : sequence of array_like of shape (H_i, W_i), or ndarray (n, H, W)
        Ground-truth masks of the same images as bool, 0/1 or 0/255 values.
    map_frame : {"full", "center_crop"}
        Part of the image that the maps cover.
    crop_fraction : float
        Side of the centre crop relative to the resized image. Read only for
        ``"center_crop"`` maps, where it must equal ``crop / resize`` within
        1e-3.
    resize : int, default 256
        Side of the square that images are resized to.
    crop : int, default 224
        Side of the centre crop that the metrics are computed on.

    Returns
    -------
    maps : ndarray of shape (n, crop, crop), float32
        Anomaly maps on the centre-crop frame.
    masks : ndarray of shape (n, crop, crop), bool
        Binary masks on the same frame.

    Raises
    ------
    ValueError
        If the frame settings are inconsistent, the counts of maps and masks
        differ, an array is not 2-D, or a map contains non-finite values.
    """
    _check_frame(map_frame, crop_fraction, resize, crop)
    if len(anomaly_maps) != len(masks):
        raise ValueError(
            f"got {len(anomaly_maps)} anomaly maps but {len(masks)} masks; "
            "pass one mask per map, in the same order"
        )
    map_arrays = [
        _as_image_array(m, index, "anomaly map") for index, m in enumerate(anomaly_maps)
    ]
    for index, anomaly_map in enumerate(map_arrays):
        if not np.all(np.isfinite(anomaly_map)):
            raise ValueError(
                f"anomaly map {index} contains NaN or infinite values; "
                "replace them before evaluation"
            )
    mask_arrays = [
        _as_image_array(m, index, "mask") != 0 for index, m in enumerate(masks)
    ]

    map_size = resize if map_frame == "full" else crop
    maps = _resize_center_crop(map_arrays, map_size, crop, mode="bilinear")
    resized_masks = _resize_center_crop(mask_arrays, resize, crop, mode="nearest-exact")
    return maps, resized_masks > 0.5


def pixel_auroc(anomaly_maps: np.ndarray, masks: np.ndarray) -> float:
    """Compute the area under the ROC curve over all pixels of all images.

    Parameters
    ----------
    anomaly_maps : ndarray of shape (n, h, w)
        Anomaly maps, for example the first output of :func:`prepare_pixel_arrays`.
    masks : ndarray of shape (n, h, w), bool
        Ground-truth masks on the same frame.

    Returns
    -------
    float
        P-AUROC, or ``nan`` with an ``UndefinedMetricWarning`` when the masks
        contain no anomalous pixel or no nominal pixel.
    """
    maps, masks = _check_pixel_arrays(anomaly_maps, masks)
    return _binary_auroc(masks.ravel(), maps.ravel(), unit="pixel")


def aupro(anomaly_maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Compute the normalised area under the per-region-overlap (PRO) curve.

    Follows ``compute_pro`` and ``trapezoid`` of the MVTec AD evaluation
    scripts, except that the FPR comes from integer counts in float64 rather
    than float32. Anomalous regions are the
    8-connected components of each mask, and every region of every image
    weighs the same in the PRO, whatever its area. The false-positive rate
    (FPR) is taken over all nominal pixels of all images, so images without
    anomalies add false positives only. The curve has one point per distinct
    score, plus (0, 0). Its integral from FPR 0 to ``fpr_limit`` uses the
    trapezoid rule, with the PRO at ``fpr_limit`` interpolated linearly, and is
    divided by ``fpr_limit`` so that a perfect map scores 1.

    Parameters
    ----------
    anomaly_maps : ndarray of shape (n, h, w)
        Anomaly maps, higher means more anomalous.
    masks : ndarray of shape (n, h, w), bool
        Ground-truth masks on the same frame.
    fpr_limit : float, default 0.3
        Upper end of the FPR range, in (0, 1].

    Returns
    -------
    float
        AUPRO in [0, 1], or ``nan`` with an ``UndefinedMetricWarning`` when the
        masks contain no anomalous region or no nominal pixel.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    maps, masks = _check_pixel_arrays(anomaly_maps, masks)

    region_weights, n_regions = _region_weights(masks)
    if n_regions == 0:
        _warn_undefined(
            "AUPRO is undefined because the masks contain no anomalous region"
        )
        return float("nan")
    nominal = ~masks.ravel()
    if not nominal.any():
        _warn_undefined("AUPRO is undefined because the masks contain no nominal pixel")
        return float("nan")
    logger.debug("AUPRO over %d regions in %d images", n_regions, len(masks))

    fprs, pros = _pro_curve(maps.ravel(), nominal, region_weights)
    return _integrate_up_to(fprs, pros, fpr_limit) / fpr_limit


def filter_precision_recall(
    removed_ids: set[str], injected_ids: set[str]
) -> tuple[float, float]:
    """Compute how well a filter removed the injected anomalies from training data.

    Parameters
    ----------
    removed_ids : set of str
        Sample ids that the filter removed from the training set.
    injected_ids : set of str
        Sample ids of the anomalies injected into the training set.

    Returns
    -------
    precision : float
        ``|removed & injected| / |removed|``, or ``nan`` when nothing was removed.
    recall : float
        ``|removed & injected| / |injected|``, or ``nan`` when nothing was
        injected.
    """
    removed = set(removed_ids)
    injected = set(injected_ids)
    hits = len(removed & injected)
    precision = hits / len(removed) if removed else float("nan")
    recall = hits / len(injected) if injected else float("nan")
    return precision, recall


def evaluate(
    labels: ArrayLike,
    image_scores: ArrayLike,
    anomaly_maps: Sequence[ArrayLike] | np.ndarray | None,
    masks: Sequence[ArrayLike] | np.ndarray | None,
    map_frame: str,
    crop_fraction: float,
    has_pixel_masks: bool,
    *,
    resize: int = 256,
    crop: int = 224,
    fpr_limit: float = 0.3,
) -> dict[str, float | None]:
    """Compute the image- and pixel-level metrics of one test set.

    Parameters
    ----------
    labels : array_like of shape (n,)
        ``1`` for anomalous test images, ``0`` for nominal ones.
    image_scores : array_like of shape (n,)
        Image anomaly scores.
    anomaly_maps : sequence of array_like of shape (h, w), ndarray (n, h, w) or None
        Anomaly maps, or None for a detector without maps.
    masks : sequence of array_like of shape (H_i, W_i), ndarray (n, H, W) or None
        Ground-truth masks at the original image size. Read only when
        ``has_pixel_masks`` is True and maps are given.
    map_frame : {"full", "center_crop"}
        Part of the image that the maps cover.
    crop_fraction : float
        Side of the maps' centre crop relative to the resized image.
    has_pixel_masks : bool
        Whether the dataset has pixel-level ground truth. When False, the pixel
        metrics are None, because all-nominal placeholder masks would make them
        meaningless.
    resize, crop : int
        Frame of the pixel metrics, see :func:`prepare_pixel_arrays`.
    fpr_limit : float, default 0.3
        FPR limit of :func:`aupro`.

    Returns
    -------
    dict
        ``image_auroc``, ``pixel_auroc`` and ``pixel_aupro``. The pixel metrics
        are None when ``anomaly_maps`` is None or ``has_pixel_masks`` is False.
    """
    metrics: dict[str, float | None] = {
        "image_auroc": image_auroc(labels, image_scores),
        "pixel_auroc": None,
        "pixel_aupro": None,
    }
    if anomaly_maps is None or not has_pixel_masks:
        return metrics
    if masks is None:
        raise ValueError(
            "has_pixel_masks is True but masks is None; pass the ground-truth "
            "masks or set has_pixel_masks=False"
        )
    n_images = len(np.asarray(labels))
    if len(anomaly_maps) != n_images:
        raise ValueError(
            f"got {len(anomaly_maps)} anomaly maps for {n_images} labels; "
            "pass one map per test image"
        )
    maps, binary_masks = prepare_pixel_arrays(
        anomaly_maps, masks, map_frame, crop_fraction, resize=resize, crop=crop
    )
    metrics["pixel_auroc"] = pixel_auroc(maps, binary_masks)
    metrics["pixel_aupro"] = aupro(maps, binary_masks, fpr_limit=fpr_limit)
    return metrics


def _warn_undefined(message: str) -> None:
    warnings.warn(message, UndefinedMetricWarning, stacklevel=3)


def _binary_auroc(labels: np.ndarray, scores: np.ndarray, unit: str) -> float:
    n_positive = int(np.count_nonzero(labels))
    if n_positive == 0 or n_positive == labels.size:
        kind = "nominal" if n_positive == labels.size else "anomalous"
        _warn_undefined(f"{unit}-level AUROC is undefined because no {unit} is {kind}")
        return float("nan")
    return float(roc_auc_score(labels, scores))


def _as_binary_labels(labels: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    invalid = np.setdiff1d(np.unique(array), [0, 1])
    if invalid.size:
        raise ValueError(
            f"{name} must contain only 0 (nominal) and 1 (anomalous), "
            f"got {invalid[:5].tolist()}"
        )
    return array.astype(bool)


def _as_finite_scores(
    scores: ArrayLike, name: str, expected_shape: tuple[int, ...]
) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.shape != expected_shape:
        raise ValueError(
            f"{name} has shape {array.shape} but the labels have shape "
            f"{expected_shape}; pass one score per label"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; replace them first")
    return array


def _check_frame(map_frame: str, crop_fraction: float, resize: int, crop: int) -> None:
    if map_frame not in MAP_FRAMES:
        raise ValueError(f"map_frame must be one of {MAP_FRAMES}, got {map_frame!r}")
    if not 0 < crop <= resize:
        raise ValueError(
            f"invalid crop={crop} for resize={resize}; pass 0 < crop <= resize"
        )
    expected = crop / resize
    if (
        map_frame == "center_crop"
        and abs(crop_fraction - expected) > CROP_FRACTION_TOLERANCE
    ):
        raise ValueError(
            f"crop_fraction {crop_fraction} of the center_crop maps does not match "
            f"crop / resize = {crop}/{resize} = {expected:.4f}; evaluate with the "
            "resize and crop that the detector used"
        )


def _as_image_array(array: ArrayLike, index: int, kind: str) -> np.ndarray:
    image = np.asarray(array)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(
            f"{kind} {index} must be a non-empty 2-D (height, width) array, "
            f"got shape {image.shape}"
        )
    return image


def _resize_center_crop(
    images: list[np.ndarray], size: int, crop: int, mode: str
) -> np.ndarray:
    """Resize 2-D arrays to (size, size) and centre crop them to (crop, crop).

    Consecutive arrays of the same shape are interpolated in one batch.

    Returns
    -------
    ndarray of shape (len(images), crop, crop), float32
    """
    # The offset rounds like torchvision's CenterCrop (checked in 0.29).
    offset = int(round((size - crop) / 2.0))
    extra = {"align_corners": False} if mode == "bilinear" else {}
    output = np.empty((len(images), crop, crop), dtype=np.float32)
    for start, stop in _same_shape_batches(images):
        batch = np.stack(images[start:stop]).astype(np.float32)
        resized = F.interpolate(
            torch.from_numpy(batch)[:, None], size=(size, size), mode=mode, **extra
        )
        output[start:stop] = resized[
            :, 0, offset : offset + crop, offset : offset + crop
        ]
    return output


def _same_shape_batches(images: list[np.ndarray]) -> Iterator[tuple[int, int]]:
    """Yield (start, stop) index ranges of consecutive same-shape arrays."""
    start = 0
    while start < len(images):
        shape = images[start].shape
        per_batch = max(1, _MAX_BATCH_PIXELS // (shape[0] * shape[1]))
        stop = start + 1
        while (
            stop < len(images)
            and stop - start < per_batch
            and images[stop].shape == shape
        ):
            stop += 1
        yield start, stop
        start = stop


def _check_pixel_arrays(
    anomaly_maps: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(anomaly_maps)
    binary_masks = np.asarray(masks)
    if maps.ndim != 3 or maps.shape != binary_masks.shape:
        raise ValueError(
            f"anomaly maps and masks must both have shape (n, h, w), got "
            f"{maps.shape} and {binary_masks.shape}; bring them to one frame "
            "with prepare_pixel_arrays"
        )
    if not np.all(np.isfinite(maps)):
        raise ValueError(
            "anomaly maps contain NaN or infinite values; replace them first"
        )
    return maps, binary_masks != 0


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Weigh each anomalous pixel by 1 / (number of regions * area of its region).

    Returns
    -------
    weights : ndarray of shape (n * h * w,), float64
        Zero on nominal pixels. Summed over any one region, the weights give
        1 / (number of regions).
    n_regions : int
        Number of 8-connected regions over all masks.
    """
    region_ids = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for index, mask in enumerate(masks):
        labeled, n_in_mask = ndimage.label(mask, structure=_REGION_STRUCTURE)
        region_ids[index] = np.where(labeled > 0, labeled + n_regions, 0)
        n_regions += n_in_mask
    region_ids = region_ids.ravel()
    if n_regions == 0:
        return np.zeros(region_ids.shape), 0

    areas = np.bincount(region_ids, minlength=n_regions + 1)
    weight_per_region = np.zeros(n_regions + 1)
    weight_per_region[1:] = 1.0 / (n_regions * areas[1:])
    return weight_per_region[region_ids], n_regions


def _pro_curve(
    scores: np.ndarray, nominal: np.ndarray, region_weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Compute FPR and PRO at every distinct score, thresholds from high to low.

    Each threshold counts the pixels whose score is at least that threshold as
    positive. Both outputs start with the point (0, 0).

    Parameters
    ----------
    scores : ndarray of shape (n_pixels,)
    nominal : ndarray of shape (n_pixels,), bool
    region_weights : ndarray of shape (n_pixels,), float64

    Returns
    -------
    fprs, pros : ndarray of shape (n_distinct_scores + 1,), float64
        Non-decreasing, from 0 up to 1.
    """
    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores = scores[order]
    # Counting false positives in integers keeps the FPR exact.
    false_positives = np.cumsum(nominal[order], dtype=np.int64)
    fprs = false_positives / false_positives[-1]
    pros = np.cumsum(region_weights[order], dtype=np.float64)

    # Among tied scores only the last position has every tied pixel counted.
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    fprs = np.concatenate(([0.0], fprs[last_of_tie]))
    pros = np.concatenate(([0.0], np.minimum(pros[last_of_tie], 1.0)))
    return fprs, pros


def _integrate_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Integrate y over x from x[0] to x_max with the trapezoid rule.

    ``x`` must be non-decreasing with ``x[0] <= x_max <= x[-1]``. When x_max falls
    between two points, y is interpolated linearly at x_max.
    """
    n_inside = int(np.searchsorted(x, x_max, side="right"))
    area = float(trapezoid(y[:n_inside], x[:n_inside]))
    x_left, y_left = x[n_inside - 1], y[n_inside - 1]
    if x_left < x_max:
        x_right, y_right = x[n_inside], y[n_inside]
        y_at_max = y_left + (y_right - y_left) * (x_max - x_left) / (x_right - x_left)
        area += (x_max - x_left) * (y_left + y_at_max) / 2.0
    return area
