"""Random disjoint bags of training groups and the vote rules that combine them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_into_bags(group_ids: Sequence[str], n_bags: int, seed: int) -> np.ndarray:
    """Assign every sample to one of ``n_bags`` disjoint bags, without replacement.

    Groups (a video clip, or the image itself) are shuffled with ``seed`` and cut
    into ``n_bags`` parts whose group counts differ by at most one, so samples of
    one group always share a bag.

    Parameters
    ----------
    group_ids : sequence of str, length n_samples
    n_bags : int
        At least 2 and at most the number of distinct groups.
    seed : int

    Returns
    -------
    ndarray of shape (n_samples,), int64
        Bag index in ``[0, n_bags)`` of each sample.
    """
    groups = list(dict.fromkeys(group_ids))
    if n_bags < 2:
        msg = f"baaf.bags must be at least 2, got {n_bags}"
        raise ValueError(msg)
    if n_bags > len(groups):
        msg = (
            f"baaf.bags={n_bags} is more than the {len(groups)} training groups; "
            f"use at most {len(groups)} bags"
        )
        raise ValueError(msg)
    order = np.random.default_rng(seed).permutation(len(groups))
    bag_of_group = {}
    for bag, part in enumerate(np.array_split(order, n_bags)):
        for position in part:
            bag_of_group[groups[position]] = bag
    return np.array([bag_of_group[group] for group in group_ids], dtype=np.int64)


def strict_majority(n_above: np.ndarray, n_voters: int) -> np.ndarray:
    """Return True where more than half of ``n_voters`` models scored above."""
    return 2 * np.asarray(n_above) > n_voters


def removed_by_votes(flag_counts: np.ndarray, n_votes: int) -> np.ndarray:
    """Return True where a sample was flagged in at least half of ``n_votes`` votes."""
    return 2 * np.asarray(flag_counts) >= n_votes
