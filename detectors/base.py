"""The one-class detector interface that BAAF wraps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datasets.base import Sample


@dataclass
class Prediction:
    """Scores of a detector for a list of samples.

    Attributes
    ----------
    image_scores : ndarray of shape (n_samples,)
        Image-level anomaly score, higher means more anomalous.
    anomaly_maps : ndarray of shape (n_samples, H, W) or None
        Pixel-level anomaly maps, float32, or None for methods without maps.
    map_frame : str
        Which part of the image the maps cover. ``"full"``: the whole image.
        ``"center_crop"``: the centre crop of ``crop_fraction`` of the image after
        a square resize (PatchCore's resize 256, crop 224 gives 0.875).
    crop_fraction : float
        Side of the centre crop relative to the resized image, used only when
        ``map_frame == "center_crop"``.
    """

    image_scores: np.ndarray
    anomaly_maps: np.ndarray | None = None
    map_frame: str = "full"
    crop_fraction: float = 1.0


class AnomalyDetector(ABC):
    """One-class anomaly detector: fit on (assumed) nominal images, score others.

    BAAF only calls ``fit`` and ``predict``, so any method that implements these two
    can be wrapped. Each ``fit`` call must start from scratch: a detector fitted
    twice must not remember the first training set.
    """

    name: str = "detector"

    @abstractmethod
    def fit(self, samples: Sequence[Sample]) -> AnomalyDetector:
        """Train on ``samples`` and return self."""

    @abstractmethod
    def predict(self, samples: Sequence[Sample]) -> Prediction:
        """Score ``samples``; return image scores and, where available, maps."""

    def check_settings(self) -> None:  # noqa: B027 (a no-op for detectors without settings)
        """Raise ValueError when a setting is invalid, before any image is read.

        Detectors override it with their own checks; ``fit`` runs them too.
        """

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return image scores of shape (n_samples,) only.

        Equal to ``predict(samples).image_scores``; detectors may override it to
        skip building anomaly maps, which BAAF's out-of-bag scoring never reads.
        """
        return self.predict(samples).image_scores
