"""Bag splits and vote rules."""

from __future__ import annotations

import numpy as np
import pytest

from baaf.bagging import removed_by_votes, split_into_bags, strict_majority


def test_bags_are_disjoint_covering_and_balanced():
    ids = [f"img{i}" for i in range(23)]
    bags = split_into_bags(ids, 4, seed=0)
    assert bags.shape == (23,)
    assert set(bags.tolist()) == {0, 1, 2, 3}
    sizes = np.bincount(bags)
    assert sizes.sum() == 23
    assert sizes.max() - sizes.min() <= 1


def test_bags_are_seeded():
    ids = [f"img{i}" for i in range(40)]
    first = split_into_bags(ids, 4, seed=7)
    again = split_into_bags(ids, 4, seed=7)
    other = split_into_bags(ids, 4, seed=8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_groups_stay_in_one_bag():
    groups = [f"clip{i // 10}" for i in range(60)]
    bags = split_into_bags(groups, 3, seed=0)
    for clip in set(groups):
        members = {bag for bag, group in zip(bags, groups) if group == clip}
        assert len(members) == 1
    assert np.bincount(bags).tolist() == [20, 20, 20]


@pytest.mark.parametrize("n_bags", [0, 1])
def test_fewer_than_two_bags_rejected(n_bags):
    with pytest.raises(ValueError, match="at least 2"):
        split_into_bags(["a", "b", "c"], n_bags, seed=0)


def test_more_bags_than_groups_rejected():
    with pytest.raises(ValueError, match="more than the 3 training groups"):
        split_into_bags(["a", "b", "c"], 4, seed=0)


def test_strict_majority_two_bags_one_voter():
    # n = 2: one out-of-bag model, so its single vote decides.
    assert strict_majority(np.array([0, 1]), 1).tolist() == [False, True]


def test_strict_majority_four_bags_three_voters():
    # n = 4: three out-of-bag models, two of them are a strict majority.
    flagged = strict_majority(np.array([0, 1, 2, 3]), 3)
    assert flagged.tolist() == [False, False, True, True]


def test_strict_majority_even_voters_needs_more_than_half():
    # n = 5: four voters, a 2-2 tie is not a majority.
    flagged = strict_majority(np.array([2, 3]), 4)
    assert flagged.tolist() == [False, True]


def test_removal_needs_at_least_half_of_votes():
    assert removed_by_votes(np.array([0, 1, 2, 3]), 3).tolist() == [
        False,
        False,
        True,
        True,
    ]


def test_removal_with_even_votes_counts_exact_half():
    assert removed_by_votes(np.array([0, 1, 2]), 2).tolist() == [False, True, True]
    assert removed_by_votes(np.array([1, 2]), 4).tolist() == [False, True]
