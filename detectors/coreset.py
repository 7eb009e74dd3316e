"""Approximate greedy coreset (k-centre) selection for memory banks.

Greedy k-centre picks, one at a time, the embedding farthest from everything
picked so far. With N embeddings and M picks the plain method makes M passes
over an (N, d) array. Three things keep it fast and small:

* distances are computed on a seeded random projection to ``projection_dim``
  dimensions (the Johnson-Lindenstrauss step of PatchCore's approximate greedy
  coreset);
* the embeddings are grouped into compact blocks by seeded k-means, and a step
  visits only the blocks, and inside them only the rows, that the new centre
  can move closer to a pick. The test is the triangle inequality: a row's
  distance to the new centre is at least the gap between the two distances to
  the row's block centre. When that gap is at least the row's current
  nearest-pick distance, the row cannot change, and a block is skipped when the
  same holds for its radius and its largest nearest-pick distance. The pruning
  is exact, so the picks equal the plain method's up to float rounding;
* the loop is compiled with numba and keeps O(N * d) memory: the sorted
  embeddings and a few arrays of length N.
"""

from __future__ import annotations

import logging
import time

import numba
import numpy as np
import torch

from detectors.knn import check_embeddings, kmeans_partition

logger = logging.getLogger(__name__)

# Embeddings per k-means block. Smaller blocks prune more rows per step but
# make the k-means partition slower. On the 45k and 182k patch embeddings of
# the bottle images, 160 to 400 rows per block gave the fastest selection.
ROWS_PER_BLOCK = 256
MAX_BLOCKS = 4096
# Relative and absolute slack on the triangle-inequality bounds, so that float
# rounding can only make pruning more cautious, never skip a row that changes.
BOUND_SLACK = 1e-4
BOUND_FLOOR = 1e-6


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
        ``max(1, round(ratio * N))`` rows, fewer when the embeddings have fewer
        distinct projected rows (selection stops once every row coincides with
        a pick). Ratio 1 keeps everything.
    projection_dim : int
        Dimension of the random projection used for distances.
    seed : int
        Seeds the projection, the start index and the k-means blocks.

    Returns
    -------
    ndarray of shape (M,), int64
        Indices into ``embeddings`` in the order they were picked.
    """
    if not 0.0 < ratio <= 1.0:
        msg = f"coreset ratio must be in (0, 1], got {ratio}"
        raise ValueError(msg)
    features = torch.as_tensor(embeddings, dtype=torch.float32)
    check_embeddings(features.numpy(), "coreset embeddings")
    n_rows = features.shape[0]
    n_picks = max(1, int(round(ratio * n_rows)))
    if n_picks >= n_rows:
        return np.arange(n_rows, dtype=np.int64)

    start = time.perf_counter()
    projected = random_projection(features, projection_dim, seed).contiguous()
    first = int(
        torch.randint(n_rows, (1,), generator=torch.Generator().manual_seed(seed))
    )
    n_blocks = min(MAX_BLOCKS, n_rows // ROWS_PER_BLOCK)
    picks = block_pruned_greedy(projected.numpy(), n_picks, first, n_blocks, seed)
    logger.info(
        "coreset: %d of %d embeddings (ratio %.3f, projection %d) in %.1f s",
        len(picks),
        n_rows,
        ratio,
        projected.shape[1],
        time.perf_counter() - start,
    )
    return picks


def block_pruned_greedy(
    points: np.ndarray, n_picks: int, first: int, n_blocks: int, seed: int
) -> np.ndarray:
    """Greedy k-centre on ``points`` that skips rows the new centre cannot affect.

    Parameters
    ----------
    points : ndarray of shape (N, d), float32
    n_picks : int
        Number of centres to pick, at most N. Fewer are returned when every row
        coincides with a pick before that.
    first : int
        Row of the first pick.
    n_blocks : int
        Number of k-means blocks; below 2, all rows form one block.
    seed : int
        Seeds the k-means.

    Returns
    -------
    ndarray of shape (n_picks,), int64
        Row indices into ``points`` in the order they were picked.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    if n_blocks >= 2:
        _, order, bounds = kmeans_partition(points, n_blocks, seed)
        bounds = np.unique(bounds)  # drop empty blocks
    else:
        order = np.arange(len(points))
        bounds = np.array([0, len(points)])
    sorted_points = points[order]  # (N, d)
    starts, sizes = bounds[:-1], np.diff(bounds)
    centres = np.add.reduceat(sorted_points, starts, axis=0, dtype=np.float64)
    centres = (centres / sizes[:, None]).astype(np.float32)  # (B, d)
    block_of_row = np.repeat(np.arange(len(sizes)), sizes)  # (N,)
    offsets = np.linalg.norm(sorted_points - centres[block_of_row], axis=1)  # (N,)
    radius = np.maximum.reduceat(offsets, starts)  # (B,)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    picks = _greedy_loop(
        sorted_points,
        bounds.astype(np.int64),
        centres,
        offsets.astype(np.float32),
        radius.astype(np.float32),
        int(position[first]),
        n_picks,
    )
    return order[picks]


# Reassociation lets LLVM vectorise the distance sums. The loop starts from and
# compares against inf, so the no-NaN and no-inf fast-math flags stay off.
@numba.njit(cache=True, fastmath={"reassoc", "contract", "arcp", "nsz"}, nogil=True)
def _greedy_loop(points, bounds, centres, offsets, radius, first, n_picks):
    """Pruned greedy k-centre over block-sorted rows; returns sorted-row picks.

    ``points`` (N, d) are sorted by block, block b holding rows
    ``bounds[b]:bounds[b + 1]`` with centre ``centres[b]``, radius ``radius[b]``
    and per-row distances ``offsets`` (N,) to their block centre.
    """
    n_rows, dim = points.shape
    n_blocks = bounds.shape[0] - 1
    nearest_squared = np.full(n_rows, np.inf, dtype=np.float32)
    nearest = np.full(n_rows, np.inf, dtype=np.float32)
    block_max = np.full(n_blocks, np.inf, dtype=np.float32)
    block_argmax = np.zeros(n_blocks, dtype=np.int64)
    picks = np.empty(n_picks, dtype=np.int64)
    current = first
    for step in range(n_picks):
        picks[step] = current
        centre = points[current]
        for block in range(n_blocks):
            squared = np.float32(0.0)
            for j in range(dim):
                diff = centre[j] - centres[block, j]
                squared += diff * diff
            to_block = np.sqrt(squared)
            limit = block_max[block] * (1 + BOUND_SLACK) + BOUND_FLOOR
            if to_block - radius[block] > limit:
                continue
            largest = np.float32(-1.0)
            largest_row = bounds[block]
            for row in range(bounds[block], bounds[block + 1]):
                distance = nearest[row]
                gap = abs(to_block - offsets[row])
                if gap <= distance * (1 + BOUND_SLACK) + BOUND_FLOOR:
                    squared = np.float32(0.0)
                    for j in range(dim):
                        diff = points[row, j] - centre[j]
                        squared += diff * diff
                    if squared < nearest_squared[row]:
                        nearest_squared[row] = squared
                        distance = np.sqrt(squared)
                        nearest[row] = distance
                if distance > largest:
                    largest = distance
                    largest_row = row
            block_max[block] = largest
            block_argmax[block] = largest_row
        farthest = np.argmax(block_max)
        if block_max[farthest] == 0.0:
            return picks[: step + 1]  # every row coincides with a pick
        current = block_argmax[farthest]
    return picks
