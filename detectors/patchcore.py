"""PatchCore: a coreset memory bank of locally aggregated patch embeddings.

Training embeds every patch of every training image from two mid-level backbone
layers: a 3x3 local average per layer, the deeper layer upsampled to the
shallower one's grid, channels concatenated and optionally average-pooled to
``embedding_dim``. An approximate greedy coreset of these embeddings is the
memory bank. A test patch's score is the distance to its nearest memory-bank
embedding. The image score is the maximum patch score, and the anomaly map is
the patch-score grid upsampled to the input size and Gaussian-smoothed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datasets.base import Sample
from detectors._maps import framed_prediction, upsample_patch_scores
from detectors.base import AnomalyDetector, Prediction
from detectors.coreset import greedy_coreset_indices
from detectors.features import FeatureExtractor
from detectors.knn import NearestNeighbourIndex

logger = logging.getLogger(__name__)


def patch_embeddings(
    layer_maps: list[np.ndarray], kernel_size: int = 3, embedding_dim: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Turn backbone layer maps into one embedding per patch.

    Parameters
    ----------
    layer_maps : list of ndarray
        One array per layer, of shape (N, C_l, h_l, w_l), shallowest first.
    kernel_size : int
        Side of the local average (PatchCore's neighbourhood aggregation).
    embedding_dim : int or None
        When the concatenated channels C exceed it, average-pool the channel axis
        down to this size.

    Returns
    -------
    embeddings : ndarray of shape (N, h * w, D), float32
        Patch embeddings on the grid of the first layer.
    grid : tuple of int
        The patch grid (h, w).
    """
    target = layer_maps[0].shape[-2:]
    pooled = []
    for maps in layer_maps:
        tensor = torch.from_numpy(maps)
        tensor = F.avg_pool2d(tensor, kernel_size, stride=1, padding=kernel_size // 2)
        if tensor.shape[-2:] != target:
            tensor = F.interpolate(
                tensor, size=target, mode="bilinear", align_corners=False
            )
        pooled.append(tensor)
    stacked = torch.cat(pooled, dim=1)  # (N, C, h, w)
    n_images, n_channels = stacked.shape[:2]
    embeddings = stacked.permute(0, 2, 3, 1).reshape(
        n_images, -1, n_channels
    )  # (N, h*w, C)
    if embedding_dim is not None and n_channels > embedding_dim:
        flat = embeddings.reshape(-1, 1, n_channels)  # (N*h*w, 1, C)
        flat = F.adaptive_avg_pool1d(flat, embedding_dim)  # (N*h*w, 1, D)
        embeddings = flat.reshape(n_images, -1, embedding_dim)  # (N, h*w, D)
    return embeddings.contiguous().numpy(), (int(target[0]), int(target[1]))


def check_memory_bank_size(n_rows: int, num_neighbors: int) -> None:
    """Raise ValueError when the memory bank has fewer rows than ``num_neighbors``."""
    if num_neighbors > n_rows:
        msg = (
            f"num_neighbors={num_neighbors} exceeds the {n_rows} rows of the memory "
            "bank; lower num_neighbors, raise coreset_ratio or train on more images"
        )
        raise ValueError(msg)


class PatchCore(AnomalyDetector):
    """PatchCore anomaly detector on a shared, cached feature extractor.

    Parameters
    ----------
    extractor : FeatureExtractor
        Frozen backbone; several PatchCore instances may share one so features are
        computed once per image.
    coreset_ratio : float
        Share of training patch embeddings kept in the memory bank.
    projection_dim : int
        Random-projection dimension used by the coreset's distance computations.
    embedding_dim : int or None
        Channel dimension the embeddings are pooled to; None keeps all channels.
    aggregation_kernel : int
        Neighbourhood size of the local patch aggregation.
    num_neighbors : int
        Nearest memory-bank embeddings averaged into a patch score.
    smoothing_sigma : float
        Gaussian sigma, in input pixels, applied to the upsampled anomaly map.
    faiss_device : str
        ``"cpu"`` or ``"cuda"`` for the nearest-neighbour index.
    seed : int
        Seeds the coreset's projection and start index.
    """

    name = "patchcore"

    def __init__(
        self,
        extractor: FeatureExtractor,
        coreset_ratio: float = 0.1,
        projection_dim: int = 128,
        embedding_dim: int | None = None,
        aggregation_kernel: int = 3,
        num_neighbors: int = 1,
        smoothing_sigma: float = 4.0,
        faiss_device: str = "cpu",
        seed: int = 0,
    ):
        self.extractor = extractor
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.embedding_dim = embedding_dim
        self.aggregation_kernel = aggregation_kernel
        self.num_neighbors = num_neighbors
        self.smoothing_sigma = smoothing_sigma
        self.faiss_device = faiss_device
        self.seed = seed

    def embed(self, samples: Sequence[Sample]) -> tuple[np.ndarray, tuple[int, int]]:
        """Return patch embeddings (N, h * w, D) and the patch grid of ``samples``.

        Embeddings are cached per image in the extractor's feature cache, so bag
        models, out-of-bag scoring and the final model aggregate each image once.
        """

        def embedding_grids(layer_maps: list[np.ndarray]) -> np.ndarray:
            embeddings, (height, width) = patch_embeddings(
                layer_maps, self.aggregation_kernel, self.embedding_dim
            )
            return embeddings.reshape(len(embeddings), height, width, -1)

        name = f"patch-embeddings:k={self.aggregation_kernel}:d={self.embedding_dim}"
        grids = self.extractor.derived_features(samples, name, embedding_grids)
        n_images, height, width, dim = grids.shape  # (N, h, w, D)
        return grids.reshape(n_images, height * width, dim), (height, width)

    def check_settings(self) -> None:
        """Raise ValueError for an invalid PatchCore setting."""
        if not 0.0 < self.coreset_ratio <= 1.0:
            msg = (
                f"PatchCore coreset_ratio must be in (0, 1], got "
                f"{self.coreset_ratio}; 0.1 keeps 10% of the patch embeddings"
            )
            raise ValueError(msg)
        if self.projection_dim < 0:
            msg = (
                f"PatchCore projection_dim must be >= 0 (0 turns the projection "
                f"off), got {self.projection_dim}"
            )
            raise ValueError(msg)
        if self.embedding_dim is not None and self.embedding_dim < 1:
            msg = (
                f"PatchCore embedding_dim must be at least 1 or null (all "
                f"channels), got {self.embedding_dim}"
            )
            raise ValueError(msg)
        if self.aggregation_kernel < 1 or self.aggregation_kernel % 2 == 0:
            msg = (
                f"PatchCore aggregation_kernel must be an odd number >= 1, got "
                f"{self.aggregation_kernel}; an even kernel shifts the patch grid"
            )
            raise ValueError(msg)
        if self.num_neighbors < 1:
            msg = (
                f"PatchCore num_neighbors must be at least 1, got {self.num_neighbors}"
            )
            raise ValueError(msg)
        if self.smoothing_sigma < 0:
            msg = (
                f"PatchCore smoothing_sigma must be >= 0 (0 turns smoothing off), "
                f"got {self.smoothing_sigma}"
            )
            raise ValueError(msg)

    def fit(self, samples: Sequence[Sample]) -> PatchCore:
        """Build the memory bank from the patches of ``samples``."""
        if len(samples) == 0:
            msg = "PatchCore.fit needs at least one training image, got none"
            raise ValueError(msg)
        self.check_settings()
        embeddings, _ = self.embed(samples)
        bank = embeddings.reshape(-1, embeddings.shape[-1])  # (N*h*w, D)
        picks = greedy_coreset_indices(
            bank, self.coreset_ratio, self.projection_dim, self.seed
        )
        self.memory_bank_ = bank[picks]
        check_memory_bank_size(len(self.memory_bank_), self.num_neighbors)
        self.index_ = NearestNeighbourIndex(self.faiss_device).fit(self.memory_bank_)
        logger.info(
            "memory bank: %d images, %d patches -> %d after coreset",
            len(samples),
            len(bank),
            len(self.memory_bank_),
        )
        return self

    def patch_scores(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return nearest-neighbour patch distances of shape (N, h, w)."""
        embeddings, grid = self.embed(samples)
        n_images = embeddings.shape[0]
        queries = embeddings.reshape(-1, embeddings.shape[-1])  # (N*h*w, D)
        distances, _ = self.index_.search(queries, self.num_neighbors)
        return distances.mean(axis=1).reshape(n_images, *grid)  # (N, h, w)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return image scores (max patch distance) without building maps.

        Only patches that can hold an image's largest distance are searched
        exactly (``NearestNeighbourIndex.largest_per_group``).
        """
        embeddings, _ = self.embed(samples)  # (N, h*w, D)
        scores = self.index_.largest_per_group(embeddings, self.num_neighbors)
        return scores.astype(np.float64)

    def predict(self, samples: Sequence[Sample]) -> Prediction:
        """Score ``samples``: max patch distance and smoothed anomaly maps."""
        patch_scores = self.patch_scores(samples)
        image_scores = patch_scores.reshape(len(patch_scores), -1).max(axis=1)
        anomaly_maps = upsample_patch_scores(
            patch_scores, self.extractor.input_size, self.smoothing_sigma
        )
        return framed_prediction(
            image_scores, anomaly_maps, self.extractor.crop_fraction
        )
