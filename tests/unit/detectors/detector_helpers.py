"""Helpers shared by the detector tests."""

from __future__ import annotations

import numpy as np

from detectors.features import FeatureExtractor


def small_extractor(layers: tuple[int, ...] = (2, 3)) -> FeatureExtractor:
    """Return a Lite0 extractor with offline weights on 112 px crops."""
    return FeatureExtractor(
        "tf_efficientnet_lite0", layers, "package", resize=128, input_size=112
    )


def labels_of(samples) -> np.ndarray:
    """Return the 0/1 labels of ``samples`` as an array of shape (n_samples,)."""
    return np.array([sample.label for sample in samples])
