"""BAAF filter on a feature-level nearest-neighbour detector with planted anomalies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from baaf.filter import BaggingAnomalyFilter, normalise_scores
from datasets.base import Sample
from detectors.base import AnomalyDetector, Prediction


class NearestNeighbourDetector(AnomalyDetector):
    """Distance to the nearest training vector, on vectors looked up by sample id."""

    def __init__(self, vectors: dict[str, np.ndarray], log: list | None = None):
        self.vectors = vectors
        self.log = log

    def fit(self, samples):
        self.bank_ = np.stack([self.vectors[s.sample_id] for s in samples])
        if self.log is not None:
            self.log.append({s.sample_id for s in samples})
        return self

    def predict(self, samples):
        queries = np.stack([self.vectors[s.sample_id] for s in samples])
        distances = np.linalg.norm(queries[:, None] - self.bank_[None], axis=-1)
        return Prediction(image_scores=distances.min(axis=1))


def planted_set(n_nominal=60, n_anomalous=6, seed=0):
    """Nominal vectors near the origin and distinct anomalies far from it."""
    rng = np.random.default_rng(seed)
    vectors, samples = {}, []
    for i in range(n_nominal):
        vectors[f"good{i}"] = rng.normal(0.0, 1.0, 8)
        samples.append(Sample(f"good{i}", Path(f"good{i}.png"), 0))
    for i in range(n_anomalous):
        direction = rng.normal(size=8)
        vectors[f"bad{i}"] = 12.0 * direction / np.linalg.norm(direction)
        samples.append(Sample(f"bad{i}", Path(f"bad{i}.png"), 1))
    return vectors, samples


def test_filter_removes_planted_anomalies():
    vectors, samples = planted_set()
    result = BaggingAnomalyFilter(
        lambda bag: NearestNeighbourDetector(vectors), n_bags=4, n_votes=1, seed=0
    ).run(samples)
    removed = {s.sample_id for s, r in zip(samples, result.removed) if r}
    assert {f"bad{i}" for i in range(6)} <= removed
    assert len(removed) < 20


def test_each_model_trains_on_its_bag_only():
    vectors, samples = planted_set(n_nominal=20, n_anomalous=0)
    log = []
    result = BaggingAnomalyFilter(
        lambda bag: NearestNeighbourDetector(vectors, log), n_bags=4, seed=3
    ).run(samples)
    bags = result.bags
    for bag, trained in enumerate(log):
        expected = set(bags.sample_id[bags.bag == bag])
        assert trained == expected


def test_decision_table_has_every_out_of_bag_score():
    vectors, samples = planted_set(n_nominal=30, n_anomalous=3)
    result = BaggingAnomalyFilter(
        lambda bag: NearestNeighbourDetector(vectors), n_bags=3, n_votes=2, seed=0
    ).run(samples)
    decisions = result.decisions
    # every sample is scored by n_bags - 1 models in each of the 2 votes
    assert len(decisions) == 2 * 2 * len(samples)
    assert (decisions.model != decisions.bag).all()
    assert decisions.filter_score.between(0, 1).all()
    assert len(result.thresholds) == 2 * 3
    assert len(result.vote_seeds) == 2
    assert result.summary.flagged_votes.max() <= 2


def test_votes_combine_with_at_least_half_rule():
    vectors, samples = planted_set()
    result = BaggingAnomalyFilter(
        lambda bag: NearestNeighbourDetector(vectors), n_bags=4, n_votes=3, seed=1
    ).run(samples)
    assert np.array_equal(result.removed, 2 * result.flag_counts >= 3)


def test_filter_is_reproducible_for_a_seed():
    vectors, samples = planted_set()

    def run(seed):
        return BaggingAnomalyFilter(
            lambda bag: NearestNeighbourDetector(vectors),
            n_bags=4,
            n_votes=2,
            seed=seed,
        ).run(samples)

    first, again, other = run(5), run(5), run(6)
    assert first.decisions.equals(again.decisions)
    assert not first.bags.bag.equals(other.bags.bag)


def test_global_normalisation_spans_unit_interval_and_keeps_nan():
    raw = np.array([[np.nan, 2.0, 4.0], [1.0, np.nan, 3.0]])
    scores = normalise_scores(raw, "global")
    assert np.isnan(scores[0, 0])
    assert np.nanmin(scores) == 0.0
    assert np.nanmax(scores) == 1.0
    assert scores[0, 1] == pytest.approx(1 / 3)


def test_per_model_normalisation_scales_each_row():
    raw = np.array([[np.nan, 2.0, 4.0], [1.0, np.nan, 3.0]])
    scores = normalise_scores(raw, "per_model")
    assert scores[0, 1] == 0.0
    assert scores[0, 2] == 1.0
    assert scores[1, 0] == 0.0
    assert scores[1, 2] == 1.0


def test_constant_scores_normalise_to_zero():
    scores = normalise_scores(np.array([[np.nan, 1.0], [1.0, np.nan]]))
    assert np.nanmax(scores) == 0.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_bags": 1}, "baaf.bags must be at least 2"),
        ({"n_votes": 0}, "baaf.votes must be at least 1"),
        ({"normalisation": "zscore"}, "baaf.normalisation"),
    ],
)
def test_invalid_settings_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        BaggingAnomalyFilter(lambda bag: None, **options)
