"""Bootstrap Aggregation Anomaly Filtering of a training set.

For each of ``n_votes`` votes the training groups are split into ``n_bags``
disjoint random bags. One detector is trained per bag and scores every sample
outside its bag (out-of-bag scores). The scores of a vote are min-max normalised
to [0, 1]. For each bag, a weighted two-Gaussian mixture fitted to the bag's
out-of-bag scores gives a threshold. A sample is flagged in the vote when a
strict majority of the ``n_bags - 1`` models that did not train on it score it
above its bag's threshold. A sample flagged in at least half of the votes is
removed, and the final detector is trained on the rest.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from baaf.bagging import removed_by_votes, split_into_bags, strict_majority
from baaf.gmm import FilterFallbackWarning, fit_weighted_gmm
from datasets.base import Sample
from detectors.base import AnomalyDetector

logger = logging.getLogger(__name__)

NORMALISATIONS = ("global", "per_model")


@dataclass
class FilterResult:
    """Decisions of one BAAF filtering pass.

    Attributes
    ----------
    removed : ndarray of shape (n_samples,), bool
        True for samples dropped from the training set.
    flag_counts : ndarray of shape (n_samples,), int
        Number of votes in which each sample was flagged.
    vote_seeds : list of int
        Seed of each vote's bag split, drawn once from the filter seed.
    bags : DataFrame
        One row per (vote, sample): ``vote, sample_id, bag``.
    decisions : DataFrame
        One row per (vote, sample, out-of-bag model): ``vote, sample_id, bag,
        model, raw_score, filter_score, threshold, above``.
    thresholds : DataFrame
        One row per (vote, bag): the mixture parameters, threshold and fallback.
    summary : DataFrame
        One row per sample: ``sample_id, flagged_votes, removed``.
    """

    removed: np.ndarray
    flag_counts: np.ndarray
    vote_seeds: list[int]
    bags: pd.DataFrame
    decisions: pd.DataFrame
    thresholds: pd.DataFrame
    summary: pd.DataFrame

    @property
    def kept_indices(self) -> np.ndarray:
        """Indices of the samples kept for the final model."""
        return np.flatnonzero(~self.removed)


class BaggingAnomalyFilter:
    """Filter anomalies out of a training set with out-of-bag detector votes.

    Parameters
    ----------
    detector_factory : callable
        ``detector_factory(bag)`` returns a new, unfitted detector for bag index
        ``bag``; the filter only calls its ``fit`` and ``predict``.
    n_bags : int
        Bags per vote, at least 2.
    n_votes : int
        Independent random splits, at least 1.
    seed : int
        Seeds the per-vote bag splits.
    normalisation : str
        ``"global"``: min-max over all out-of-bag scores of a vote.
        ``"per_model"``: min-max over each model's own out-of-bag scores.
    """

    def __init__(
        self,
        detector_factory: Callable[[int], AnomalyDetector],
        n_bags: int = 4,
        n_votes: int = 1,
        seed: int = 0,
        normalisation: str = "global",
    ):
        if n_bags < 2:
            msg = f"baaf.bags must be at least 2, got {n_bags}"
            raise ValueError(msg)
        if n_votes < 1:
            msg = f"baaf.votes must be at least 1, got {n_votes}"
            raise ValueError(msg)
        if normalisation not in NORMALISATIONS:
            msg = (
                f"baaf.normalisation must be one of {NORMALISATIONS}, "
                f"got {normalisation!r}"
            )
            raise ValueError(msg)
        self.detector_factory = detector_factory
        self.n_bags = n_bags
        self.n_votes = n_votes
        self.seed = seed
        self.normalisation = normalisation

    def run(self, samples: Sequence[Sample]) -> FilterResult:
        """Vote on every sample of ``samples`` and return the filter decisions."""
        samples = list(samples)
        seeds = self._vote_seeds()
        flag_counts = np.zeros(len(samples), dtype=np.int64)
        bag_rows, decision_rows, threshold_rows = [], [], []
        for vote, vote_seed in enumerate(seeds):
            start = time.perf_counter()
            bags = split_into_bags(
                [s.group_id for s in samples], self.n_bags, vote_seed
            )
            raw = self._out_of_bag_scores(samples, bags, vote)
            scores = normalise_scores(raw, self.normalisation)
            flagged, thresholds, above = self._flag(scores, bags)
            flag_counts += flagged
            bag_rows.append(_bag_frame(vote, samples, bags))
            decision_rows.append(
                _decision_frame(vote, samples, bags, raw, scores, thresholds, above)
            )
            threshold_rows.extend({"vote": vote, **row} for row in thresholds)
            logger.info(
                "vote %d (%d of %d): %d of %d samples flagged (%.1f s)",
                vote,
                vote + 1,
                self.n_votes,
                int(flagged.sum()),
                len(samples),
                time.perf_counter() - start,
            )

        removed = removed_by_votes(flag_counts, self.n_votes)
        summary = pd.DataFrame(
            {
                "sample_id": [s.sample_id for s in samples],
                "flagged_votes": flag_counts,
                "removed": removed,
            }
        )
        return FilterResult(
            removed=removed,
            flag_counts=flag_counts,
            vote_seeds=seeds,
            bags=pd.concat(bag_rows, ignore_index=True),
            decisions=pd.concat(decision_rows, ignore_index=True),
            thresholds=pd.DataFrame(threshold_rows),
            summary=summary,
        )

    def _vote_seeds(self) -> list[int]:
        sequence = np.random.SeedSequence(self.seed)
        return [
            int(child.generate_state(1)[0]) for child in sequence.spawn(self.n_votes)
        ]

    def _out_of_bag_scores(
        self, samples: list[Sample], bags: np.ndarray, vote: int
    ) -> np.ndarray:
        """Train one model per bag; return raw scores of shape (n_bags, n_samples).

        Entries of a model's own bag are NaN.
        """
        raw = np.full((self.n_bags, len(samples)), np.nan)
        for bag in range(self.n_bags):
            in_bag = np.flatnonzero(bags == bag)
            out_of_bag = np.flatnonzero(bags != bag)
            detector = self.detector_factory(bag)
            detector.fit([samples[i] for i in in_bag])
            raw[bag, out_of_bag] = detector.score([samples[i] for i in out_of_bag])
            # Vote and bag ids count from 0, as in bags.csv; the model count
            # shows progress.
            logger.info(
                "vote %d, bag %d (bag model %d of %d): trained on %d, scored %d "
                "out-of-bag",
                vote,
                bag,
                vote * self.n_bags + bag + 1,
                self.n_votes * self.n_bags,
                len(in_bag),
                len(out_of_bag),
            )
        return raw

    def _flag(
        self, scores: np.ndarray, bags: np.ndarray
    ) -> tuple[np.ndarray, list[dict], np.ndarray]:
        """Threshold each bag's out-of-bag scores and count the majority vote."""
        above = np.zeros_like(scores, dtype=bool)  # (n_bags, n_samples)
        thresholds = []
        for bag in range(self.n_bags):
            members = np.flatnonzero(bags == bag)
            others = [model for model in range(self.n_bags) if model != bag]
            values = scores[np.ix_(others, members)]  # (n_bags - 1, n_members)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", FilterFallbackWarning)
                fit = fit_weighted_gmm(values.ravel())
            for warning in caught:
                warnings.warn(
                    f"bag {bag}: {warning.message}", FilterFallbackWarning, stacklevel=2
                )
            above[np.ix_(others, members)] = values > fit.threshold
            thresholds.append(
                {
                    "bag": bag,
                    "threshold": fit.threshold,
                    "nominal_mean": fit.means[0],
                    "anomalous_mean": fit.means[1],
                    "nominal_std": float(np.sqrt(fit.variances[0])),
                    "anomalous_std": float(np.sqrt(fit.variances[1])),
                    "nominal_weight": fit.mixing[0],
                    "anomalous_weight": fit.mixing[1],
                    "fallback": fit.fallback or "",
                }
            )
        n_above = above.sum(axis=0)
        flagged = strict_majority(n_above, self.n_bags - 1)
        return flagged, thresholds, above


def normalise_scores(raw: np.ndarray, method: str = "global") -> np.ndarray:
    """Min-max normalise out-of-bag scores to [0, 1], keeping NaN entries.

    Parameters
    ----------
    raw : ndarray of shape (n_models, n_samples)
        Raw out-of-bag scores, NaN where a model trained on the sample.
    method : str
        ``"global"`` over all entries, ``"per_model"`` row by row.

    Returns
    -------
    ndarray of shape (n_models, n_samples)
        All scores equal (no spread) normalise to 0.
    """
    if method == "global":
        return _min_max(raw)
    return np.vstack([_min_max(row) for row in raw])


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = np.nanmin(values), np.nanmax(values)
    if not high > low:
        logger.warning(
            "out-of-bag scores have no spread (all %.6g); normalised to 0", low
        )
        return np.where(np.isnan(values), np.nan, 0.0)
    return (values - low) / (high - low)


def _bag_frame(vote: int, samples: list[Sample], bags: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {"vote": vote, "sample_id": [s.sample_id for s in samples], "bag": bags}
    )


def _decision_frame(
    vote: int,
    samples: list[Sample],
    bags: np.ndarray,
    raw: np.ndarray,
    scores: np.ndarray,
    thresholds: list[dict],
    above: np.ndarray,
) -> pd.DataFrame:
    models, columns = np.nonzero(~np.isnan(raw))
    bag_threshold = np.array([row["threshold"] for row in thresholds])
    return pd.DataFrame(
        {
            "vote": vote,
            "sample_id": [samples[i].sample_id for i in columns],
            "bag": bags[columns],
            "model": models,
            "raw_score": raw[models, columns],
            "filter_score": scores[models, columns],
            "threshold": bag_threshold[bags[columns]],
            "above": above[models, columns],
        }
    )
