"""DFM: deep feature modelling with PCA on pooled backbone features.

Training global-average-pools one backbone layer of every image into a vector
and fits PCA to the vectors. An image's score is either its feature
reconstruction error (``score_type="fre"``: squared distance between the
vector and its projection onto the principal subspace) or its negative Gaussian
log-likelihood in the principal subspace (``score_type="nll"``: a diagonal
Gaussian with the component variances).

The anomaly map is a feature reconstruction map for both score types: the
un-pooled feature vector at each grid position is projected onto the same
principal subspace, and its squared residual is upsampled to the input size and
Gaussian-smoothed.
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.decomposition import PCA

from datasets.base import Sample
from detectors._maps import framed_prediction, upsample_patch_scores
from detectors.base import AnomalyDetector, Prediction
from detectors.features import FeatureExtractor

logger = logging.getLogger(__name__)

SCORE_TYPES = ("fre", "nll")

# Component variances below this share of the largest one are raised to it, so a
# direction that the bag barely spans cannot dominate the log-likelihood.
_VARIANCE_FLOOR = 1e-6
# Absolute floor for a bag of identical images, where every variance is 0.
_MIN_VARIANCE = 1e-12


class DFM(AnomalyDetector):
    """DFM anomaly detector on a shared, cached feature extractor.

    Parameters
    ----------
    extractor : FeatureExtractor
        Frozen backbone; one of its layers is pooled.
    layer : int or None
        timm ``out_indices`` entry of the pooled layer, one of
        ``extractor.layers``; None takes the deepest.
    n_components : int or float
        An int keeps that many principal components; a float in (0, 1) keeps the
        fewest components whose explained variance reaches that share. Both are
        capped at ``min(n_images - 1, n_features)``, the rank that a bag allows;
        an int above the cap is clipped with a ``UserWarning``.
    score_type : str
        ``"fre"`` (feature reconstruction error) or ``"nll"`` (negative Gaussian
        log-likelihood in the principal subspace).
    smoothing_sigma : float
        Gaussian sigma, in input pixels, applied to the upsampled anomaly map.
    """

    name = "dfm"

    def __init__(
        self,
        extractor: FeatureExtractor,
        layer: int | None = None,
        n_components: int | float = 0.97,
        score_type: str = "fre",
        smoothing_sigma: float = 4.0,
    ):
        self.extractor = extractor
        self.layer = layer
        self.n_components = n_components
        self.score_type = score_type
        self.smoothing_sigma = smoothing_sigma

    def fit(self, samples: Sequence[Sample]) -> DFM:
        """Fit PCA to the pooled features of ``samples``."""
        self._check_parameters(len(samples))
        maps = self._layer(samples)  # (N, C, h, w)
        pooled = maps.mean(axis=(2, 3)).astype(np.float64)  # (N, C)
        pca = PCA(svd_solver="full").fit(pooled)
        n_keep = self._n_kept_components(pca.explained_variance_ratio_, pooled.shape)
        self.mean_ = pca.mean_  # (C,)
        self.components_ = pca.components_[:n_keep]  # (k, C), orthonormal rows
        variances = pca.explained_variance_[:n_keep]
        floor = max(_VARIANCE_FLOOR * variances.max(), _MIN_VARIANCE)
        self.variances_ = np.maximum(variances, floor)
        logger.info(
            "DFM: %d images, %d pooled channels, %d components (%.3f of variance)",
            len(samples),
            pooled.shape[1],
            n_keep,
            pca.explained_variance_ratio_[:n_keep].sum(),
        )
        return self

    def predict(self, samples: Sequence[Sample]) -> Prediction:
        """Score ``samples``: image scores and feature reconstruction maps."""
        maps = self._layer(samples)  # (N, C, h, w)
        pooled = maps.mean(axis=(2, 3)).astype(np.float64)  # (N, C)
        if self.score_type == "fre":
            image_scores = self.reconstruction_error(pooled)
        else:
            image_scores = self.negative_log_likelihood(pooled)
        n_images, n_channels, height, width = maps.shape
        per_position = maps.transpose(0, 2, 3, 1).reshape(-1, n_channels)  # (N*h*w, C)
        residuals = self.reconstruction_error(per_position.astype(np.float64))
        anomaly_maps = upsample_patch_scores(
            residuals.reshape(n_images, height, width),
            self.extractor.input_size,
            self.smoothing_sigma,
        )
        return framed_prediction(
            image_scores, anomaly_maps, self.extractor.crop_fraction
        )

    def reconstruction_error(self, features: np.ndarray) -> np.ndarray:
        """Return the squared PCA reconstruction residual of each row, shape (M,).

        Parameters
        ----------
        features : ndarray of shape (M, C)
        """
        centered = features - self.mean_
        projected = centered @ self.components_.T  # (M, k)
        residual = centered - projected @ self.components_  # (M, C)
        return (residual**2).sum(axis=1)

    def negative_log_likelihood(self, features: np.ndarray) -> np.ndarray:
        """Return each row's negative log-likelihood in the principal subspace.

        Parameters
        ----------
        features : ndarray of shape (M, C)

        Returns
        -------
        ndarray of shape (M,)
        """
        projected = (features - self.mean_) @ self.components_.T  # (M, k)
        mahalanobis_sq = (projected**2 / self.variances_).sum(axis=1)
        log_det = np.log(self.variances_).sum()
        n_keep = len(self.variances_)
        return 0.5 * (mahalanobis_sq + log_det + n_keep * math.log(2.0 * math.pi))

    def _layer(self, samples: Sequence[Sample]) -> np.ndarray:
        layers = self.extractor.layers
        position = len(layers) - 1 if self.layer is None else layers.index(self.layer)
        return self.extractor.layer_maps(samples)[position]

    def _n_kept_components(
        self, variance_ratio: np.ndarray, shape: tuple[int, int]
    ) -> int:
        """Turn ``n_components`` into a component count that the bag allows."""
        n_images, n_features = shape
        limit = min(n_images - 1, n_features)
        if isinstance(self.n_components, numbers.Integral):
            if self.n_components > limit:
                warnings.warn(
                    f"DFM n_components={self.n_components} exceeds the "
                    f"{limit} components that {n_images} images of {n_features} "
                    f"pooled features allow; using {limit}",
                    UserWarning,
                    stacklevel=3,
                )
            return min(int(self.n_components), limit)
        reached = np.cumsum(variance_ratio) >= self.n_components - 1e-12
        n_reaching = (
            int(np.argmax(reached)) + 1 if reached.any() else len(variance_ratio)
        )
        return min(n_reaching, limit)

    def _check_parameters(self, n_images: int) -> None:
        if n_images < 2:
            msg = (
                f"DFM.fit needs at least 2 training images for PCA, got {n_images}; "
                "use fewer BAAF bags or a larger training set"
            )
            raise ValueError(msg)
        self.check_settings()

    def check_settings(self) -> None:
        """Raise ValueError for an invalid DFM setting."""
        if self.score_type not in SCORE_TYPES:
            msg = (
                f"DFM score_type must be one of {SCORE_TYPES}, got {self.score_type!r}"
            )
            raise ValueError(msg)
        if self.layer is not None and self.layer not in self.extractor.layers:
            msg = (
                f"DFM layer={self.layer} is not among the extractor's layers "
                f"{list(self.extractor.layers)}; pick one of them or null for the "
                "deepest"
            )
            raise ValueError(msg)
        self._check_n_components()

    def _check_n_components(self) -> None:
        value = self.n_components
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            valid = False
        elif isinstance(value, numbers.Integral):
            valid = value >= 1
        else:
            valid = 0.0 < value < 1.0
        if not valid:
            msg = (
                f"DFM n_components must be an int >= 1 or a variance share in "
                f"(0, 1), got {value!r}"
            )
            raise ValueError(msg)
