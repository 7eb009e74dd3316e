"""Greedy coreset against a brute-force reference, and faiss kNN against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.coreset import (
    block_pruned_greedy,
    greedy_coreset_indices,
    random_projection,
)
from detectors.knn import NearestNeighbourIndex


def brute_force_greedy(points: np.ndarray, n_picks: int, start: int) -> list[int]:
    """k-centre greedy with a full distance matrix, for small inputs."""
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    picks = [start]
    nearest = distances[start].copy()
    while len(picks) < n_picks:
        picks.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, distances[picks[-1]])
    return picks


def test_coreset_matches_brute_force_without_projection():
    points = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    picks = greedy_coreset_indices(points, ratio=0.1, projection_dim=0, seed=4)
    reference = brute_force_greedy(points.astype(np.float64), len(picks), int(picks[0]))
    assert picks.tolist() == reference


def test_coreset_size_and_uniqueness():
    points = np.random.default_rng(1).normal(size=(1000, 64)).astype(np.float32)
    picks = greedy_coreset_indices(points, ratio=0.05, projection_dim=8, seed=0)
    assert len(picks) == 50
    assert len(set(picks.tolist())) == 50


def test_coreset_is_seeded():
    points = np.random.default_rng(2).normal(size=(500, 32)).astype(np.float32)
    first = greedy_coreset_indices(points, 0.1, projection_dim=8, seed=1)
    again = greedy_coreset_indices(points, 0.1, projection_dim=8, seed=1)
    other = greedy_coreset_indices(points, 0.1, projection_dim=8, seed=2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_coreset_ratio_one_keeps_everything():
    points = np.zeros((7, 3), dtype=np.float32)
    assert greedy_coreset_indices(points, 1.0).tolist() == list(range(7))


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
def test_coreset_rejects_invalid_ratio(ratio):
    with pytest.raises(ValueError, match="coreset ratio"):
        greedy_coreset_indices(np.zeros((5, 2), dtype=np.float32), ratio)


def test_coreset_covers_isolated_outliers():
    # Greedy k-centre picks far-away points before points in a dense cluster.
    rng = np.random.default_rng(3)
    cluster = rng.normal(0, 0.1, size=(500, 4))
    outliers = np.eye(4) * 50
    points = np.vstack([cluster, outliers]).astype(np.float32)
    picks = set(greedy_coreset_indices(points, 0.02, projection_dim=0, seed=0).tolist())
    assert {500, 501, 502, 503} <= picks


def test_random_projection_shape_and_identity_when_small():
    import torch

    x = torch.randn(10, 6)
    assert random_projection(x, 3, seed=0).shape == (10, 3)
    assert random_projection(x, 6, seed=0) is x


def test_knn_matches_numpy_brute_force():
    rng = np.random.default_rng(4)
    bank = rng.normal(size=(200, 12)).astype(np.float32)
    queries = rng.normal(size=(50, 12)).astype(np.float32)
    index = NearestNeighbourIndex(chunk_size=7).fit(bank)
    distances, indices = index.search(queries, k=3)
    reference = np.linalg.norm(queries[:, None] - bank[None], axis=-1)
    expected = np.argsort(reference, axis=1)[:, :3]
    assert np.array_equal(indices, expected)
    # faiss computes squared distances in float32 via the norm expansion.
    np.testing.assert_allclose(
        distances, np.take_along_axis(reference, expected, 1), rtol=1e-4, atol=1e-4
    )


def test_knn_cuda_falls_back_once(monkeypatch):
    import warnings

    monkeypatch.setattr("detectors.knn._GPU_FALLBACK_WARNED", [])
    bank = np.zeros((3, 2), dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="faiss has no GPU support"):
        index = NearestNeighbourIndex(device="cuda").fit(bank)
    assert index.search(bank, 1)[0].shape == (3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        NearestNeighbourIndex(device="cuda").fit(bank)


def plain_greedy(points: np.ndarray, n_picks: int, start: int) -> list[int]:
    """k-centre greedy with one pass over all rows per pick, in float64."""
    nearest = np.full(len(points), np.inf)
    picks = [start]
    while len(picks) < n_picks:
        step = np.sum((points - points[picks[-1]]) ** 2, axis=1)
        nearest = np.minimum(nearest, step)
        picks.append(int(np.argmax(nearest)))
    return picks


@pytest.mark.parametrize("n_blocks", [1, 40, 400])
def test_block_pruning_gives_plain_greedy_picks(n_blocks):
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 5, size=(30, 16))
    points = centres[rng.integers(0, 30, 4000)] + rng.normal(0, 1, size=(4000, 16))
    points = points.astype(np.float32)
    pruned = block_pruned_greedy(points, 400, first=17, n_blocks=n_blocks, seed=0)
    assert pruned.tolist() == plain_greedy(points.astype(np.float64), 400, 17)


def test_large_bank_uses_pruning_and_keeps_outliers():
    rng = np.random.default_rng(6)
    cluster = rng.normal(0, 0.1, size=(25_000, 8))
    outliers = np.eye(8)[:3] * 50
    points = np.vstack([cluster, outliers]).astype(np.float32)
    picks = set(
        greedy_coreset_indices(points, 0.004, projection_dim=0, seed=0).tolist()
    )
    assert {25_000, 25_001, 25_002} <= picks


@pytest.mark.parametrize("k", [1, 3])
def test_largest_per_group_equals_full_search(k):
    rng = np.random.default_rng(7)
    modes = rng.normal(0, 3, size=(20, 24))
    bank = modes[rng.integers(0, 20, 3000)] + rng.normal(0, 1, size=(3000, 24))
    queries = modes[rng.integers(0, 20, (30, 200))] + rng.normal(size=(30, 200, 24))
    queries[5, 17] += 8.0  # one image with a single far patch
    queries[9] = bank[:200]  # one image of memory-bank rows only
    bank, queries = bank.astype(np.float32), queries.astype(np.float32)
    index = NearestNeighbourIndex().fit(bank)
    distances, _ = index.search(queries.reshape(-1, 24), k)
    expected = distances.mean(axis=1).reshape(30, 200).max(axis=1)
    largest = index.largest_per_group(queries, k)
    assert index.lists_ is not None  # the pruned path ran
    # Zero distances come out of faiss's norm expansion as up to about 0.01.
    np.testing.assert_allclose(largest, expected, rtol=1e-5, atol=0.01)


def test_largest_per_group_small_bank_searches_everything():
    rng = np.random.default_rng(8)
    bank = rng.normal(size=(50, 4)).astype(np.float32)
    queries = rng.normal(size=(3, 10, 4)).astype(np.float32)
    index = NearestNeighbourIndex().fit(bank)
    expected = index.search(queries.reshape(-1, 4))[0].reshape(3, 10).max(axis=1)
    np.testing.assert_array_equal(index.largest_per_group(queries), expected)
    assert index.lists_ is None


@pytest.mark.parametrize("n_rows", [300, 6000])
def test_coreset_stops_when_rows_covered(n_rows):
    distinct = np.random.default_rng(9).normal(size=(5, 16)).astype(np.float32)
    points = np.tile(distinct, (n_rows // 5, 1))
    picks = greedy_coreset_indices(points, ratio=0.1, projection_dim=0, seed=0)
    assert len(picks) == 5
    np.testing.assert_array_equal(
        np.unique(points[picks], axis=0), np.unique(distinct, axis=0)
    )


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, 1e19])
def test_coreset_rejects_non_finite_or_huge(bad_value):
    points = np.random.default_rng(10).normal(size=(3000, 8)).astype(np.float32)
    points[42, 3] = bad_value
    with pytest.raises(ValueError, match="coreset embeddings"):
        greedy_coreset_indices(points, ratio=0.1)


@pytest.mark.parametrize("bad_value", [np.nan, -np.inf, 1e19])
def test_knn_rejects_non_finite_or_huge(bad_value):
    rng = np.random.default_rng(11)
    bank = rng.normal(size=(2000, 8)).astype(np.float32)
    queries = rng.normal(size=(3, 50, 8)).astype(np.float32)
    index = NearestNeighbourIndex().fit(bank)
    queries[1, 7, 2] = bad_value
    with pytest.raises(ValueError, match="query embeddings"):
        index.largest_per_group(queries)
    with pytest.raises(ValueError, match="query embeddings"):
        index.search(queries.reshape(-1, 8))
    bank[5, 0] = bad_value
    with pytest.raises(ValueError, match="memory-bank embeddings"):
        NearestNeighbourIndex().fit(bank)


def test_largest_per_group_one_large_list():
    # Many identical memory-bank rows form one large k-means list.
    rng = np.random.default_rng(12)
    bank = np.vstack([np.ones((6000, 8)), rng.normal(size=(2000, 8))])
    queries = np.ones((10, 1000, 8)) + rng.normal(0, 0.01, size=(10, 1000, 8))
    bank, queries = bank.astype(np.float32), queries.astype(np.float32)
    index = NearestNeighbourIndex().fit(bank)
    expected = index.search(queries.reshape(-1, 8))[0].reshape(10, 1000).max(axis=1)
    np.testing.assert_allclose(
        index.largest_per_group(queries), expected, rtol=1e-5, atol=0.01
    )
