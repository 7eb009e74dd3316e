"""PaDiM: one multivariate Gaussian per patch position.

Training reads several backbone layers, upsamples every layer to the first
layer's grid and concatenates the channels, then keeps a seeded random subset of
``n_features`` channels. At each grid position the embeddings of all training
images give a mean and a covariance. The covariance is the Ledoit-Wolf shrinkage
estimate (shrunk towards a scaled identity) plus a fixed ridge on the diagonal,
so it stays invertible when a BAAF bag contains fewer images than feature
dimensions. A test patch's score is its Mahalanobis distance to the Gaussian of
its position. The anomaly map is that grid upsampled to the input size and
Gaussian-smoothed, and the image score is the map's maximum.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datasets.base import Sample
from detectors._maps import framed_prediction, upsample_patch_scores
from detectors.base import AnomalyDetector, Prediction
from detectors.features import FeatureExtractor

logger = logging.getLogger(__name__)

# Grid positions per batched covariance step, which bounds the float64
# (chunk, d, d) temporaries to about 40 MiB each at d = 100.
_POSITION_CHUNK = 512
# Test images per Mahalanobis step. At 56 x 56 positions and d = 100 one step
# uses about 40 MiB per (P, d, chunk) temporary.
_IMAGE_CHUNK = 32


def select_channels(
    layer_maps: list[np.ndarray], channel_indices: np.ndarray
) -> np.ndarray:
    """Concatenate the chosen channels of all layers on the first layer's grid.

    Parameters
    ----------
    layer_maps : list of ndarray
        One array per layer, of shape (N, C_l, h_l, w_l), shallowest first.
    channel_indices : ndarray of shape (d,), int
        Sorted indices into the concatenated channel axis of all layers.

    Returns
    -------
    ndarray of shape (N, h * w, d), float32
        Embeddings per image and grid position, where (h, w) is the first
        layer's grid.
    """
    target = layer_maps[0].shape[-2:]
    offset = 0
    parts = []
    for maps in layer_maps:
        n_channels = maps.shape[1]
        in_layer = channel_indices[
            (channel_indices >= offset) & (channel_indices < offset + n_channels)
        ]
        local = in_layer - offset
        offset += n_channels
        if len(local) == 0:
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(maps[:, local]))
        if tensor.shape[-2:] != target:
            tensor = F.interpolate(
                tensor, size=target, mode="bilinear", align_corners=False
            )
        parts.append(tensor)
    stacked = torch.cat(parts, dim=1)  # (N, d, h, w)
    n_images, n_features = stacked.shape[:2]
    return stacked.permute(0, 2, 3, 1).reshape(n_images, -1, n_features).numpy()


def ledoit_wolf_covariances(centered: torch.Tensor) -> torch.Tensor:
    """Estimate one Ledoit-Wolf shrunk covariance per batch entry.

    The estimate is ``(1 - s) S + s mu I`` with the empirical covariance ``S``
    (divided by n), ``mu = trace(S) / d`` and the shrinkage ``s`` in [0, 1] that
    minimises the expected squared Frobenius error (Ledoit and Wolf, 2004). It
    matches ``sklearn.covariance.ledoit_wolf`` on centred data.

    Parameters
    ----------
    centered : Tensor of shape (P, n, d)
        n centred observations of d features for each of P independent batches.

    Returns
    -------
    Tensor of shape (P, d, d)
    """
    n_samples, n_features = centered.shape[1:]
    empirical = centered.transpose(1, 2) @ centered / n_samples  # (P, d, d)
    trace = torch.diagonal(empirical, dim1=1, dim2=2).sum(dim=1)  # (P,)
    mu = trace / n_features
    frobenius_sq = (empirical**2).sum(dim=(1, 2))  # (P,)
    # Sum over observations of |x_k|^4 estimates the variance of S's entries.
    fourth_moment = ((centered**2).sum(dim=2) ** 2).sum(dim=1)  # (P,)
    beta = (fourth_moment / n_samples - frobenius_sq) / (n_features * n_samples)
    delta = (frobenius_sq - 2.0 * mu * trace + n_features * mu**2) / n_features
    beta = torch.minimum(beta, delta)
    shrinkage = torch.where(delta > 0, beta / delta.clamp_min(1e-300), 0.0)
    shrinkage = shrinkage.clamp(0.0, 1.0)[:, None, None]
    identity = torch.eye(n_features, dtype=centered.dtype)
    return (1.0 - shrinkage) * empirical + shrinkage * mu[:, None, None] * identity


class PaDiM(AnomalyDetector):
    """PaDiM anomaly detector on a shared, cached feature extractor.

    Parameters
    ----------
    extractor : FeatureExtractor
        Frozen backbone; its layers (shallow to deep) are concatenated on the
        first layer's grid.
    n_features : int
        Size of the seeded random channel subset. Values above the number of
        concatenated channels are clipped to it with a ``UserWarning``.
    covariance_ridge : float
        Added to the diagonal of every Ledoit-Wolf covariance, so a bag of one
        image (zero empirical covariance) still gives an invertible matrix.
    smoothing_sigma : float
        Gaussian sigma, in input pixels, applied to the upsampled anomaly map.
    seed : int
        Seeds the channel subset.
    """

    name = "padim"

    def __init__(
        self,
        extractor: FeatureExtractor,
        n_features: int = 100,
        covariance_ridge: float = 0.01,
        smoothing_sigma: float = 4.0,
        seed: int = 0,
    ):
        self.extractor = extractor
        self.n_features = n_features
        self.covariance_ridge = covariance_ridge
        self.smoothing_sigma = smoothing_sigma
        self.seed = seed

    def fit(self, samples: Sequence[Sample]) -> PaDiM:
        """Fit one Gaussian per grid position to the patches of ``samples``."""
        self._check_parameters(len(samples))
        layer_maps = self.extractor.layer_maps(samples)
        self.channel_indices_ = self._draw_channels(
            sum(maps.shape[1] for maps in layer_maps)
        )
        self.grid_ = tuple(int(side) for side in layer_maps[0].shape[-2:])
        embeddings = torch.from_numpy(
            select_channels(layer_maps, self.channel_indices_)
        )
        positions = embeddings.permute(1, 0, 2)  # (P, N, d)
        means, whitening = [], []
        for first in range(0, positions.shape[0], _POSITION_CHUNK):
            chunk = positions[first : first + _POSITION_CHUNK].double()
            means.append(chunk.mean(dim=1).float())
            whitening.append(self._whitening_matrices(chunk))
        self.mean_ = torch.cat(means)  # (P, d)
        self.whitening_ = torch.cat(whitening)  # (P, d, d), lower triangular
        logger.info(
            "PaDiM: %d images, %d positions, %d of %d channels",
            len(samples),
            positions.shape[0],
            len(self.channel_indices_),
            sum(maps.shape[1] for maps in layer_maps),
        )
        return self

    def predict(self, samples: Sequence[Sample]) -> Prediction:
        """Score ``samples``: Mahalanobis maps and their maxima."""
        layer_maps = self.extractor.layer_maps(samples)
        embeddings = torch.from_numpy(
            select_channels(layer_maps, self.channel_indices_)
        )
        distances = torch.cat(
            [
                self.mahalanobis(embeddings[first : first + _IMAGE_CHUNK])
                for first in range(0, len(embeddings), _IMAGE_CHUNK)
            ]
        )  # (N, P)
        patch_scores = distances.reshape(len(samples), *self.grid_).numpy()
        anomaly_maps = upsample_patch_scores(
            patch_scores, self.extractor.input_size, self.smoothing_sigma
        )
        image_scores = anomaly_maps.reshape(len(samples), -1).max(axis=1)
        return framed_prediction(
            image_scores, anomaly_maps, self.extractor.crop_fraction
        )

    def mahalanobis(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Return the Mahalanobis distance of each patch to its position's Gaussian.

        Parameters
        ----------
        embeddings : Tensor of shape (N, P, d), float32

        Returns
        -------
        Tensor of shape (N, P), float32
        """
        diffs = (embeddings - self.mean_).permute(1, 2, 0)  # (P, d, N)
        whitened = self.whitening_ @ diffs  # (P, d, N)
        return whitened.pow(2).sum(dim=1).sqrt().T  # (N, P)

    def _whitening_matrices(self, positions: torch.Tensor) -> torch.Tensor:
        """Return the inverse Cholesky factors of the covariances of ``positions``.

        With covariance ``L L^T``, ``|L^-1 (x - mean)|`` is the Mahalanobis
        distance. Inverting L once here lets ``predict`` use one batched matrix
        product, which is far faster on CPU than a batched triangular solve per
        call.

        Parameters
        ----------
        positions : Tensor of shape (p, N, d), float64

        Returns
        -------
        Tensor of shape (p, d, d), float32, lower triangular
        """
        centered = positions - positions.mean(dim=1, keepdim=True)
        covariances = ledoit_wolf_covariances(centered)
        identity = torch.eye(covariances.shape[-1], dtype=covariances.dtype)
        covariances += self.covariance_ridge * identity
        cholesky = torch.linalg.cholesky(covariances)
        batch_identity = identity.expand_as(cholesky)
        inverse = torch.linalg.solve_triangular(cholesky, batch_identity, upper=False)
        return inverse.float()

    def _draw_channels(self, n_available: int) -> np.ndarray:
        if self.n_features > n_available:
            warnings.warn(
                f"PaDiM n_features={self.n_features} exceeds the {n_available} "
                f"channels of layers {list(self.extractor.layers)}; using all "
                f"{n_available}",
                UserWarning,
                stacklevel=3,
            )
            return np.arange(n_available)
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(n_available, size=self.n_features, replace=False))

    def check_settings(self) -> None:
        """Raise ValueError for an invalid PaDiM setting."""
        if self.n_features < 1:
            msg = f"PaDiM n_features must be at least 1, got {self.n_features}"
            raise ValueError(msg)
        if self.covariance_ridge <= 0:
            msg = (
                f"PaDiM covariance_ridge must be positive, got "
                f"{self.covariance_ridge}; 0.01 is the usual value"
            )
            raise ValueError(msg)

    def _check_parameters(self, n_images: int) -> None:
        if n_images == 0:
            msg = "PaDiM.fit needs at least one training image, got none"
            raise ValueError(msg)
        self.check_settings()
        if n_images == 1:
            warnings.warn(
                "PaDiM fitted on a single image: every covariance is the ridge "
                "alone, so distances are scaled Euclidean distances to that image",
                UserWarning,
                stacklevel=3,
            )
