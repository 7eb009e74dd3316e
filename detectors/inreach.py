"""InReaCh: a memory bank of patches that recur across training images.

InReaCh (Inter-Realization Channels) assumes that a nominal patch has a close
counterpart in most other training images, while a defect is rare and has none.
This implementation embeds every patch like PatchCore (``patch_embeddings``).
For sampled pairs of training images it then finds the patches that are mutual
nearest neighbours. Patch a of image i and patch b of image j match when b is
a's nearest patch in j and a is b's nearest patch in i. A match counts when its
distance is at most the ``distance_quantile`` of all mutual-match distances of
the training set, and, with ``position_radius`` set, when the two grid positions
differ by at most that many cells in each direction. Patches with at least
``min_matches`` partner images are nominal. Their union, reduced by PatchCore's
greedy coreset, is the memory bank, and scoring is PatchCore's (nearest
memory-bank distance, maximum over patches, smoothed map).

Simplifications relative to the original method:

* The original links mutual nearest neighbours into channels that run through
  many images, drops channels that span too few images or spread too widely,
  and scores a test patch against the channels' statistics. Here each patch is
  judged alone by its number of mutual-match partners, and test patches are
  scored by nearest-neighbour distance to the kept patches.
* Each image is paired with a seeded random sample of ``partners_per_image``
  other images instead of all of them, which bounds the cost to about
  ``n_images * partners_per_image`` pairwise patch-distance matrices.
* The distance limit is a quantile of the observed match distances rather than
  an absolute value, so one setting works across backbones and layers.
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
from detectors.patchcore import PatchCore, check_memory_bank_size

logger = logging.getLogger(__name__)

# Image pairs per batched distance step. At 28 x 28 patches one step uses about
# 38 MiB for distances.
_PAIR_CHUNK = 16


def sample_image_pairs(n_images: int, partners_per_image: int, seed: int) -> np.ndarray:
    """Draw unordered image pairs so that each image has at least that many partners.

    Parameters
    ----------
    n_images : int
    partners_per_image : int
        Partners drawn per image; all pairs when it is at least ``n_images - 1``.
    seed : int

    Returns
    -------
    ndarray of shape (n_pairs, 2), int64
        Sorted, distinct pairs (i, j) with i < j.
    """
    if partners_per_image >= n_images - 1:
        first, second = np.triu_indices(n_images, k=1)
        return np.stack([first, second], axis=1).astype(np.int64)
    rng = np.random.default_rng(seed)
    pairs = set()
    for image in range(n_images):
        others = np.delete(np.arange(n_images), image)
        for partner in rng.choice(others, size=partners_per_image, replace=False):
            pairs.add((min(image, int(partner)), max(image, int(partner))))
    return np.array(sorted(pairs), dtype=np.int64)


def position_mask(grid: tuple[int, int], radius: int | None) -> torch.Tensor | None:
    """Return a (P, P) bool mask of grid positions farther apart than ``radius``.

    Distances are Chebyshev distances in grid cells. None means no constraint.
    """
    if radius is None:
        return None
    rows, cols = np.divmod(np.arange(grid[0] * grid[1]), grid[1])
    row_gap = np.abs(rows[:, None] - rows[None, :])
    col_gap = np.abs(cols[:, None] - cols[None, :])
    return torch.from_numpy(np.maximum(row_gap, col_gap) > radius)


def mutual_matches(
    first: torch.Tensor, second: torch.Tensor, forbidden: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Find mutual nearest-neighbour patches between paired images.

    Parameters
    ----------
    first, second : Tensor of shape (B, P, D)
        Patch embeddings of the two images of B pairs.
    forbidden : Tensor of shape (P, P), bool, or None
        Position pairs that may not match.

    Returns
    -------
    pair : Tensor of shape (M,), int64
        Pair index in the batch of each match.
    patch : Tensor of shape (M,), int64
        Patch index in ``first``.
    partner : Tensor of shape (M,), int64
        Matching patch index in ``second``.
    distance : Tensor of shape (M,)
        Euclidean distance of each match.
    """
    distances = torch.cdist(first, second)  # (B, P, P)
    if forbidden is not None:
        distances = distances.masked_fill(forbidden, float("inf"))
    forward = distances.argmin(dim=2)  # (B, P): nearest patch of second
    backward = distances.argmin(dim=1)  # (B, P): nearest patch of first
    round_trip = torch.gather(backward, 1, forward)  # (B, P)
    patches = torch.arange(first.shape[1])
    pair, patch = torch.nonzero(round_trip == patches, as_tuple=True)
    partner = forward[pair, patch]
    return pair, patch, partner, distances[pair, patch, partner]


class InReaCh(PatchCore):
    """InReaCh anomaly detector on a shared, cached feature extractor.

    Parameters
    ----------
    extractor : FeatureExtractor
        Frozen backbone, shared like PatchCore's.
    partners_per_image : int
        Other training images each image is paired with (seeded sample).
    distance_quantile : float
        Quantile, in (0, 1], of all mutual-match distances that limits a
        counted match; 1 keeps every mutual match.
    position_radius : int or None
        Largest grid offset, in cells, between matched patches; None allows any.
    min_matches : int
        Partner images a patch needs to be kept as nominal.
    coreset_ratio, projection_dim, embedding_dim, aggregation_kernel,
    num_neighbors, smoothing_sigma, faiss_device, seed
        As for ``PatchCore``; ``seed`` also seeds the pair sample.
    """

    name = "inreach"

    def __init__(
        self,
        extractor: FeatureExtractor,
        partners_per_image: int = 10,
        distance_quantile: float = 0.95,
        position_radius: int | None = None,
        min_matches: int = 1,
        coreset_ratio: float = 0.1,
        projection_dim: int = 128,
        embedding_dim: int | None = None,
        aggregation_kernel: int = 3,
        num_neighbors: int = 1,
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
            num_neighbors=num_neighbors,
            smoothing_sigma=smoothing_sigma,
            faiss_device=faiss_device,
            seed=seed,
        )
        self.partners_per_image = partners_per_image
        self.distance_quantile = distance_quantile
        self.position_radius = position_radius
        self.min_matches = min_matches

    def fit(self, samples: Sequence[Sample]) -> InReaCh:
        """Keep the patches of ``samples`` with mutual matches, then build the bank."""
        self._check_parameters(len(samples))
        embeddings, grid = self.embed(samples)  # (N, P, D)
        bank = embeddings.reshape(-1, embeddings.shape[-1])  # (N*P, D)
        self.match_counts_ = self.count_partner_images(embeddings, grid)  # (N, P)
        nominal = self.match_counts_.reshape(-1) >= self.min_matches
        if not nominal.any():
            warnings.warn(
                f"InReaCh found no patch with {self.min_matches} or more mutual "
                f"matches among {len(samples)} images; keeping every patch",
                UserWarning,
                stacklevel=2,
            )
            nominal[:] = True
        nominal_bank = bank[nominal]
        picks = greedy_coreset_indices(
            nominal_bank, self.coreset_ratio, self.projection_dim, self.seed
        )
        self.memory_bank_ = nominal_bank[picks]
        check_memory_bank_size(len(self.memory_bank_), self.num_neighbors)
        self.index_ = NearestNeighbourIndex(self.faiss_device).fit(self.memory_bank_)
        logger.info(
            "InReaCh memory bank: %d images, %d of %d patches nominal, %d after "
            "coreset",
            len(samples),
            len(nominal_bank),
            len(bank),
            len(self.memory_bank_),
        )
        return self

    def count_partner_images(
        self, embeddings: np.ndarray, grid: tuple[int, int]
    ) -> np.ndarray:
        """Count, per patch, the partner images with a counted mutual match.

        Parameters
        ----------
        embeddings : ndarray of shape (N, P, D)
        grid : tuple of int
            The patch grid (h, w), with h * w = P.

        Returns
        -------
        ndarray of shape (N, P), int64
        """
        n_images, n_patches = embeddings.shape[:2]
        counts = np.zeros((n_images, n_patches), dtype=np.int64)
        if n_images < 2:
            return counts
        pairs = sample_image_pairs(n_images, self.partners_per_image, self.seed)
        records = self._match_records(torch.from_numpy(embeddings), pairs, grid)
        image, patch, partner_image, partner_patch, distance = records
        limit = np.quantile(distance, self.distance_quantile)
        counted = distance <= limit
        # A pair is visited once, so each counted match adds one partner image to
        # both of its patches.
        np.add.at(counts, (image[counted], patch[counted]), 1)
        np.add.at(counts, (partner_image[counted], partner_patch[counted]), 1)
        logger.info(
            "InReaCh: %d image pairs, %d mutual matches, %d within distance %.4g",
            len(pairs),
            len(distance),
            int(counted.sum()),
            limit,
        )
        return counts

    def _match_records(
        self, embeddings: torch.Tensor, pairs: np.ndarray, grid: tuple[int, int]
    ) -> tuple[np.ndarray, ...]:
        """Return (image, patch, partner image, partner patch, distance) arrays."""
        forbidden = position_mask(grid, self.position_radius)
        columns = [[] for _ in range(5)]
        for first in range(0, len(pairs), _PAIR_CHUNK):
            chunk = torch.from_numpy(pairs[first : first + _PAIR_CHUNK])
            pair, patch, partner, distance = mutual_matches(
                embeddings[chunk[:, 0]], embeddings[chunk[:, 1]], forbidden
            )
            for column, values in zip(
                columns, (chunk[pair, 0], patch, chunk[pair, 1], partner, distance)
            ):
                column.append(values.numpy())
        return tuple(np.concatenate(column) for column in columns)

    def _check_parameters(self, n_images: int) -> None:
        if n_images == 0:
            msg = "InReaCh.fit needs at least one training image, got none"
            raise ValueError(msg)
        self.check_settings()

    def check_settings(self) -> None:
        """Raise ValueError for an invalid InReaCh or PatchCore setting."""
        super().check_settings()
        if self.partners_per_image < 1:
            msg = (
                f"InReaCh partners_per_image must be at least 1, got "
                f"{self.partners_per_image}"
            )
            raise ValueError(msg)
        if not 0.0 < self.distance_quantile <= 1.0:
            msg = (
                f"InReaCh distance_quantile must be in (0, 1], got "
                f"{self.distance_quantile}; 1 counts every mutual match"
            )
            raise ValueError(msg)
        if self.position_radius is not None and self.position_radius < 0:
            msg = (
                f"InReaCh position_radius must be >= 0 or null, got "
                f"{self.position_radius}"
            )
            raise ValueError(msg)
        if self.min_matches < 1:
            msg = f"InReaCh min_matches must be at least 1, got {self.min_matches}"
            raise ValueError(msg)
