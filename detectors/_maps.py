"""Helpers shared by the patch-level detectors: anomaly maps and their frame."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from detectors.base import Prediction


def upsample_patch_scores(
    patch_scores: np.ndarray, size: int, smoothing_sigma: float
) -> np.ndarray:
    """Upsample patch-score grids to the input size and Gaussian-smooth them.

    Parameters
    ----------
    patch_scores : ndarray of shape (N, h, w)
    size : int
        Side of the square network input, in pixels.
    smoothing_sigma : float
        Gaussian sigma in input pixels; 0 skips smoothing.

    Returns
    -------
    ndarray of shape (N, size, size), float32
    """
    tensor = torch.from_numpy(patch_scores[:, None].astype(np.float32))  # (N, 1, h, w)
    upsampled = F.interpolate(
        tensor, size=(size, size), mode="bilinear", align_corners=False
    )
    maps = upsampled[:, 0].numpy()  # (N, S, S)
    if smoothing_sigma > 0:
        maps = np.stack([gaussian_filter(m, smoothing_sigma) for m in maps])
    return maps.astype(np.float32)


def framed_prediction(
    image_scores: np.ndarray, anomaly_maps: np.ndarray | None, crop_fraction: float
) -> Prediction:
    """Wrap scores and maps in a ``Prediction`` whose frame matches the crop.

    Parameters
    ----------
    image_scores : ndarray of shape (N,)
    anomaly_maps : ndarray of shape (N, S, S) or None
    crop_fraction : float
        ``input_size / resize`` of the feature extractor; below 1 the maps cover
        the centre crop of the resized image.
    """
    return Prediction(
        image_scores=np.asarray(image_scores, dtype=np.float64),
        anomaly_maps=anomaly_maps,
        map_frame="full" if crop_fraction == 1.0 else "center_crop",
        crop_fraction=crop_fraction,
    )
