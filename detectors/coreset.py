"""Approximate greedy coreset (k-centre) selection for memory banks.

Greedy k-centre picks, one at a time, the embedding farthest from everything
picked so far. With N embeddings and M picks that is M passes over an (N, d)
array. Two things keep it fast and small:

* distances are computed on a seeded random projection to ``projection_dim``
  dimensions (the Johnson-Lindenstrauss step of PatchCore's approximate greedy
  coreset), and
* every pass reuses two preallocated length-N buffers, so peak memory stays
  O(N * d) and no step allocates a new distance array.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

logger = logging.getLogger(__name__)


def random_projection(
    embeddings: torch.Tensor, projection_dim: int, seed: int
) -> torch.Tensor:
    """Project embeddings with a seeded Gaussian matrix.

    Parameters
    ----------
    embeddings : Tensor of shape (N, D)
    projection_dim : int
        Output dimension; no projection when ``projection_dim >= D`` or <= 0.
    seed : int

    Returns
    -------
    Tensor of shape (N, min(D, projection_dim))
    """
    n_features = embeddings.shape[1]
    if projection_dim <= 0 or projection_dim >= n_features:
        return embeddings
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(n_features, projection_dim, generator=generator)
    matrix /= projection_dim**0.5
    return embeddings @ matrix.to(embeddings.dtype)


def greedy_coreset_indices(
    embeddings: np.ndarray | torch.Tensor,
    ratio: float,
    projection_dim: int = 128,
    seed: int = 0,
) -> np.ndarray:
    """Select a coreset by approximate greedy k-centre.

    Parameters
    ----------
    embeddings : ndarray or Tensor of shape (N, D)
        Patch embeddings of the memory bank, float32.
    ratio : float
        Share of the N embeddings to keep, in (0, 1]. The coreset has
        ``max(1, round(ratio * N))`` rows; ratio 1 keeps everything.
    projection_dim : int
        Dimension of the random projection used for distances.
    seed : int
        Seeds the projection and the start index.

    Returns
    -------
    ndarray of shape (M,), int64
        Indices into ``embeddings`` in the order they were picked.
    """
    if not 0.0 < ratio <= 1.0:
        msg = f"coreset ratio must be in (0, 1], got {ratio}"
        raise ValueError(msg)
    features = torch.as_tensor(embeddings, dtype=torch.float32)
    n_rows = features.shape[0]
    n_picks = max(1, int(round(ratio * n_rows)))
    if n_picks >= n_rows:
        return np.arange(n_rows, dtype=np.int64)

    start = time.perf_counter()
    projected = random_projection(features, projection_dim, seed).contiguous()
    squared_norms = (projected * projected).sum(dim=1)  # (N,)
    min_distances = torch.full((n_rows,), float("inf"))  # (N,)
    distances = torch.empty(n_rows)  # (N,), reused by every step
    picks = np.empty(n_picks, dtype=np.int64)
    current = int(torch.randint(n_rows, (1,), generator=torch.Generator().manual_seed(seed)))
    for step in range(n_picks):
        picks[step] = current
        # squared distance to the new centre: |x|^2 - 2 x.c + |c|^2
        torch.mv(projected, projected[current], out=distances)
        distances.mul_(-2.0).add_(squared_norms).add_(squared_norms[current])
        torch.minimum(min_distances, distances, out=min_distances)
        current = int(torch.argmax(min_distances))
    logger.info(
        "coreset: %d of %d embeddings (ratio %.3f, projection %d) in %.1f s",
        n_picks,
        n_rows,
        ratio,
        projected.shape[1],
        time.perf_counter() - start,
    )
    return picks
