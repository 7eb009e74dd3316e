"""Approximate greedy coreset (k-centre) selection for memory banks.

Greedy k-centre picks, one at a time, the embedding farthest from everything
picked so far. With N embeddings and M picks the plain method makes M passes
over an (N, d) array. Three things keep it fast and small:

* distances are computed on a seeded random projection to ``projection_dim``
  dimensions (the Johnson-Lindenstrauss step of PatchCore's approximate greedy
  coreset);
* every step updates preallocated buffers in place, so peak memory stays
  O(N * d) and no step allocates a distance array of length N;
* for large N the embeddings are grouped into blocks by seeded k-means, and a
  step only visits the blocks that the new centre can affect. By the triangle
  inequality, a block cannot change when its centre is farther from the new
  centre than its radius plus its largest current nearest-centre distance. The
  pruning is exact, so the picks equal the plain method's up to float rounding.
"""

from __future__ import annotations

import logging
import time

import faiss
import numpy as np
import torch

logger = logging.getLogger(__name__)

# Below this many embeddings the plain loop is as fast as block pruning.
MIN_ROWS_FOR_PRUNING = 5_000
# Embeddings per block; about 1000 blocks for the 160k patches of 200 images.
ROWS_PER_BLOCK = 160
MAX_BLOCKS = 1024


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
    first = int(
        torch.randint(n_rows, (1,), generator=torch.Generator().manual_seed(seed))
    )
    # Each step runs a dozen small ops on a few thousand rows, where waking
    # worker threads costs more than it saves, and costs far more when other
    # processes share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if n_rows >= MIN_ROWS_FOR_PRUNING:
            n_blocks = min(MAX_BLOCKS, n_rows // ROWS_PER_BLOCK)
            picks = _block_pruned_greedy(projected, n_picks, first, n_blocks, seed)
        else:
            picks = _plain_greedy(projected, n_picks, first)
    finally:
        torch.set_num_threads(threads)
    logger.info(
        "coreset: %d of %d embeddings (ratio %.3f, projection %d) in %.1f s",
        n_picks,
        n_rows,
        ratio,
        projected.shape[1],
        time.perf_counter() - start,
    )
    return picks


def _plain_greedy(points: torch.Tensor, n_picks: int, first: int) -> np.ndarray:
    """Greedy k-centre over all rows of ``points`` (N, d) at every step."""
    n_rows = points.shape[0]
    squared_norms = (points * points).sum(dim=1)  # (N,)
    min_distances = torch.full((n_rows,), float("inf"))  # (N,)
    distances = torch.empty(n_rows)  # (N,), reused by every step
    picks = np.empty(n_picks, dtype=np.int64)
    current = first
    for step in range(n_picks):
        picks[step] = current
        # squared distance to the new centre: |x|^2 - 2 x.c + |c|^2
        torch.addmv(squared_norms, points, points[current], alpha=-2.0, out=distances)
        distances.add_(squared_norms[current])
        torch.minimum(min_distances, distances, out=min_distances)
        current = int(torch.argmax(min_distances))
    return picks


def _block_pruned_greedy(
    points: torch.Tensor, n_picks: int, first: int, n_blocks: int, seed: int
) -> np.ndarray:
    """Greedy k-centre that skips blocks the new centre cannot affect."""
    order, bounds = _partition(points, n_blocks, seed)
    n_blocks = len(bounds) - 1
    sorted_points = points[torch.from_numpy(order)].contiguous()  # (N, d)
    block_of_row = torch.from_numpy(
        np.repeat(np.arange(n_blocks), np.diff(bounds))
    )  # (N,)
    sizes = torch.from_numpy(np.maximum(np.diff(bounds), 1)).float()
    centres = (
        torch.zeros(n_blocks, points.shape[1]).index_add_(
            0, block_of_row, sorted_points
        )
        / sizes[:, None]
    )  # (B, d)
    offsets = (sorted_points - centres[block_of_row]).norm(dim=1)  # (N,)
    radius = torch.zeros(n_blocks).scatter_reduce_(0, block_of_row, offsets, "amax")
    rows_of_block = [torch.arange(bounds[b], bounds[b + 1]) for b in range(n_blocks)]

    squared_norms = (sorted_points * sorted_points).sum(dim=1)  # (N,)
    min_distances = torch.full((len(order),), float("inf"))  # squared, (N,)
    block_max = torch.full((n_blocks,), float("inf"))  # not squared, (B,)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    current = int(position[first])
    picks = np.empty(n_picks, dtype=np.int64)
    for step in range(n_picks):
        picks[step] = order[current]
        centre = sorted_points[current]
        to_blocks = torch.cdist(centre[None], centres)[0]  # (B,)
        # A block can change only if some member may be nearer to the new centre
        # than to its current nearest pick. The margin absorbs float rounding.
        active = (to_blocks - radius) < block_max * (1 + 1e-4) + 1e-6
        blocks = active.nonzero().squeeze(1).tolist()
        # NOTE: gathering the active rows is the largest cost of a step (about
        # a third). Selection still takes longer than feature extraction: 33 s
        # against 7.5 s for 182k bottle patches on 2 cores (scripts/benchmark.py).
        rows = torch.cat([rows_of_block[b] for b in blocks])
        distances = torch.addmv(
            squared_norms[rows], sorted_points.index_select(0, rows), centre, alpha=-2.0
        ).add_(squared_norms[current])
        updated = torch.minimum(min_distances[rows], distances)
        min_distances.index_copy_(0, rows, updated)
        largest = torch.zeros(n_blocks).scatter_reduce_(
            0, block_of_row[rows], updated, "amax", include_self=False
        )
        block_max = torch.where(active, largest.clamp_min(0).sqrt(), block_max)
        farthest = int(torch.argmax(block_max))
        lo, hi = int(bounds[farthest]), int(bounds[farthest + 1])
        current = lo + int(torch.argmax(min_distances[lo:hi]))
    return picks


def _partition(
    points: torch.Tensor, n_blocks: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Group rows by seeded k-means.

    Returns
    -------
    order : ndarray of shape (N,)
        Row indices sorted by block.
    bounds : ndarray of shape (B + 1,)
        Block b holds ``order[bounds[b]:bounds[b + 1]]``; empty blocks removed.
    """
    array = np.ascontiguousarray(points.numpy(), dtype=np.float32)
    # Blocks only need to be compact, not converged: a few iterations on a sample
    # of 64 rows per block keep k-means a small part of the selection time.
    kmeans = faiss.Kmeans(
        array.shape[1],
        n_blocks,
        niter=5,
        seed=seed,
        max_points_per_centroid=64,
        verbose=False,
    )
    kmeans.train(array)
    _, assignment = kmeans.index.search(array, 1)
    assignment = assignment[:, 0]
    order = np.argsort(assignment, kind="stable")
    counts = np.bincount(assignment, minlength=n_blocks)
    counts = counts[counts > 0]
    return order, np.concatenate([[0], np.cumsum(counts)])
