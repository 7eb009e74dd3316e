"""SoftPatch: PatchCore with patch-level denoising of the memory bank.

Training embeds every patch like PatchCore (``patch_embeddings``), then scores
each training patch with the local outlier factor (LOF) among the patches at
the same grid position in all training images. Noisy patches, such as defects
in a contaminated training set, sit apart from the patches of the same position
in other images and get a high LOF. The ``noise_share`` of all training patches
with the highest LOF (ranked over every position together, since LOF is a
scale-free ratio) is removed before PatchCore's greedy coreset. At inference a
test patch's score is the distance to its nearest memory-bank patch multiplied
by that memory patch's LOF (soft weighting), so a match to a doubtful memory
patch counts less as evidence of normality. The image score is the maximum patch
score and the anomaly map is the patch-score grid upsampled and smoothed.

LOF is computed exactly per position with batched distance matrices of shape
(positions, images, images), so no patch-by-patch matrix over all patches is
ever built.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from datasets.base import Sample
from detectors.coreset import greedy_coreset_indices
from detectors.features import FeatureExtractor
from detectors.knn import NearestNeighbourIndex
from detectors.patchcore import PatchCore

logger = logging.getLogger(__name__)

# Grid positions per batched LOF step. At 200 images one step uses about 40 MiB
# for pairwise distances.
_POSITION_CHUNK = 256


def local_outlier_factors(points: torch.Tensor, n_neighbors: int) -> torch.Tensor:
    """Compute the local outlier factor of every point within each batch entry.

    Follows the definition of Breunig et al. (2000) with exactly ``n_neighbors``
    neighbours per point, as ``sklearn.neighbors.LocalOutlierFactor`` does
    (which returns the negated values as ``negative_outlier_factor_``).

    Parameters
    ----------
    points : Tensor of shape (B, n, D)
        B independent sets of n points each.
    n_neighbors : int
        Neighbours per point, at most n - 1.

    Returns
    -------
    Tensor of shape (B, n)
        About 1 for inliers, larger for outliers.
    """
    distances = torch.cdist(points, points)  # (B, n, n)
    distances.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    knn_distances, knn_indices = distances.topk(n_neighbors, dim=2, largest=False)
    k_distance = knn_distances[..., -1]  # (B, n)
    neighbour_k_distance = torch.gather(
        k_distance[:, None, :].expand(-1, k_distance.shape[1], -1), 2, knn_indices
    )  # (B, n, k)
    reachability = torch.maximum(knn_distances, neighbour_k_distance)
    # The small constant keeps duplicated points finite, as in scikit-learn.
    density = 1.0 / (reachability.mean(dim=2) + 1e-10)  # (B, n)
    neighbour_density = torch.gather(
        density[:, None, :].expand(-1, density.shape[1], -1), 2, knn_indices
    )  # (B, n, k)
    return neighbour_density.mean(dim=2) / density


class SoftPatch(PatchCore):
    """SoftPatch anomaly detector on a shared, cached feature extractor.

    Parameters
    ----------
    extractor : FeatureExtractor
        Frozen backbone, shared like PatchCore's.
    noise_share : float
        Share of all training patches, in [0, 1), removed as noise: those with
        the highest LOF.
    lof_neighbors : int
        Neighbours of the LOF. Bags with fewer than ``lof_neighbors + 1``
        images use ``n_images - 1`` with a ``UserWarning``.
    soft_weighting : bool
        Multiply each nearest-neighbour distance by the LOF of the matched
        memory patch; False scores like PatchCore on the denoised bank.
    coreset_ratio, projection_dim, embedding_dim, aggregation_kernel,
    smoothing_sigma, faiss_device, seed
        As for ``PatchCore``.
    """

    name = "softpatch"

    def __init__(
        self,
        extractor: FeatureExtractor,
        noise_share: float = 0.15,
        lof_neighbors: int = 6,
        soft_weighting: bool = True,
        coreset_ratio: float = 0.1,
        projection_dim: int = 128,
        embedding_dim: int | None = None,
        aggregation_kernel: int = 3,
        smoothing_sigma: float = 4.0,
        faiss_device: str = "cpu",
        seed: int = 0,
    ):
        super().__init__(
            extractor,
            coreset_ratio=coreset_ratio,
            projection_dim=projection_dim,
            embedding_dim=embedding_dim,
            aggregation_kernel=aggregation_kernel,
            num_neighbors=1,
            smoothing_sigma=smoothing_sigma,
            faiss_device=faiss_device,
            seed=seed,
        )
        self.noise_share = noise_share
        self.lof_neighbors = lof_neighbors
        self.soft_weighting = soft_weighting

    def fit(self, samples: Sequence[Sample]) -> SoftPatch:
        """Denoise the patches of ``samples`` by LOF, then build the memory bank."""
        self._check_parameters(len(samples))
        embeddings, _ = self.embed(samples)  # (N, P, D)
        outlier_factors = self.patch_outlier_factors(embeddings)  # (N, P)
        bank = embeddings.reshape(-1, embeddings.shape[-1])  # (N*P, D)
        factors = outlier_factors.reshape(-1)
        n_removed = int(self.noise_share * len(bank)) if len(samples) > 1 else 0
        # A stable sort keeps the removal deterministic when factors tie.
        ranking = np.argsort(factors, kind="stable")
        inlier_indices = np.sort(ranking[: len(bank) - n_removed])
        inliers = bank[inlier_indices]
        picks = greedy_coreset_indices(
            inliers, self.coreset_ratio, self.projection_dim, self.seed
        )
        self.memory_bank_ = inliers[picks]
        self.memory_weights_ = factors[inlier_indices][picks].astype(np.float32)
        self.index_ = NearestNeighbourIndex(self.faiss_device).fit(self.memory_bank_)
        logger.info(
            "SoftPatch memory bank: %d images, %d patches, %d removed as noise, "
            "%d after coreset",
            len(samples),
            len(bank),
            n_removed,
            len(self.memory_bank_),
        )
        return self

    def patch_scores(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return nearest-neighbour distances, soft-weighted, of shape (N, h, w).

        PatchCore's ``predict`` builds image scores and maps from these.
        """
        embeddings, grid = self.embed(samples)
        n_images = embeddings.shape[0]
        queries = embeddings.reshape(-1, embeddings.shape[-1])  # (N*h*w, D)
        distances, indices = self.index_.search(queries, 1)
        patch_scores = distances[:, 0]
        if self.soft_weighting:
            patch_scores = patch_scores * self.memory_weights_[indices[:, 0]]
        return patch_scores.reshape(n_images, *grid)  # (N, h, w)

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return image scores (largest soft-weighted patch score) without maps."""
        patch_scores = self.patch_scores(samples)  # (N, h, w)
        return patch_scores.reshape(len(samples), -1).max(axis=1).astype(np.float64)

    def patch_outlier_factors(self, embeddings: np.ndarray) -> np.ndarray:
        """Return the LOF of each patch among the same position's patches.

        Parameters
        ----------
        embeddings : ndarray of shape (N, P, D)

        Returns
        -------
        ndarray of shape (N, P), float64
            All ones when there is a single image.
        """
        n_images = embeddings.shape[0]
        if n_images < 2:
            return np.ones(embeddings.shape[:2])
        n_neighbors = min(self.lof_neighbors, n_images - 1)
        positions = torch.from_numpy(embeddings).permute(1, 0, 2)  # (P, N, D)
        factors = [
            local_outlier_factors(
                positions[first : first + _POSITION_CHUNK], n_neighbors
            )
            for first in range(0, positions.shape[0], _POSITION_CHUNK)
        ]
        return torch.cat(factors).T.double().numpy()  # (N, P)

    def check_settings(self) -> None:
        """Raise ValueError for an invalid SoftPatch or PatchCore setting."""
        super().check_settings()
        if not 0.0 <= self.noise_share < 1.0:
            msg = (
                f"SoftPatch noise_share must be in [0, 1), got {self.noise_share}; "
                "0.15 removes the 15% most outlying training patches"
            )
            raise ValueError(msg)
        if self.lof_neighbors < 1:
            msg = (
                f"SoftPatch lof_neighbors must be at least 1, got {self.lof_neighbors}"
            )
            raise ValueError(msg)

    def _check_parameters(self, n_images: int) -> None:
        if n_images == 0:
            msg = "SoftPatch.fit needs at least one training image, got none"
            raise ValueError(msg)
        self.check_settings()
        if n_images == 1:
            warnings.warn(
                "SoftPatch fitted on a single image: LOF needs two or more images, "
                "so no patch is removed and every weight is 1",
                UserWarning,
                stacklevel=3,
            )
        elif n_images - 1 < self.lof_neighbors:
            warnings.warn(
                f"SoftPatch lof_neighbors={self.lof_neighbors} needs "
                f"{self.lof_neighbors + 1} training images but got {n_images}; "
                f"using {n_images - 1} neighbours",
                UserWarning,
                stacklevel=3,
            )
