"""Weighted two-Gaussian mixture: fits, crossing threshold and fallbacks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm

from baaf.gmm import (
    FilterFallbackWarning,
    _fallback_threshold,
    crossing_threshold,
    fit_weighted_gmm,
)


def test_crossing_equal_variances_equal_weights_is_midpoint():
    threshold = crossing_threshold((0.2, 0.6), (0.01, 0.01), (0.5, 0.5))
    assert threshold == pytest.approx(0.4)


def test_crossing_solves_weighted_density_equation():
    means, variances, mixing = (0.1, 0.7), (0.002, 0.03), (0.85, 0.15)
    threshold = crossing_threshold(means, variances, mixing)
    low = mixing[0] * norm.pdf(threshold, means[0], math.sqrt(variances[0]))
    high = mixing[1] * norm.pdf(threshold, means[1], math.sqrt(variances[1]))
    assert means[0] < threshold < means[1]
    assert low == pytest.approx(high, rel=1e-9)


def test_crossing_none_when_one_component_dominates():
    # A tiny, wide upper component never exceeds the nominal one between means.
    assert crossing_threshold((0.0, 0.05), (0.04, 1.0), (0.999, 0.001)) is None


def test_fit_recovers_known_mixture_and_threshold():
    rng = np.random.default_rng(0)
    nominal = rng.normal(0.2, 0.04, 900)
    anomalous = rng.normal(0.75, 0.06, 100)
    scores = np.concatenate([nominal, anomalous])
    fit = fit_weighted_gmm(scores, weights=np.ones_like(scores))
    assert fit.means[0] == pytest.approx(0.2, abs=0.01)
    assert fit.means[1] == pytest.approx(0.75, abs=0.02)
    assert fit.mixing[1] == pytest.approx(0.1, abs=0.02)
    expected = crossing_threshold((0.2, 0.75), (0.04**2, 0.06**2), (0.9, 0.1))
    assert fit.threshold == pytest.approx(expected, abs=0.02)
    assert fit.fallback is None


def test_default_weights_pull_fit_towards_nominal():
    rng = np.random.default_rng(1)
    scores = np.clip(
        np.concatenate([rng.normal(0.2, 0.05, 300), rng.uniform(0.5, 1.0, 40)]), 0, 1
    )
    weighted = fit_weighted_gmm(scores)
    unweighted = fit_weighted_gmm(scores, weights=np.ones_like(scores))
    assert weighted.mixing[1] < unweighted.mixing[1]
    assert 0.2 < weighted.threshold < 0.5


def test_all_equal_scores_fall_back_to_no_flag():
    with pytest.warns(FilterFallbackWarning, match="all scores are equal"):
        fit = fit_weighted_gmm(np.full(20, 0.3))
    assert fit.threshold == math.inf
    assert fit.fallback == "all scores are equal"


def test_too_few_scores_fall_back_to_no_flag():
    with pytest.warns(FilterFallbackWarning, match="only 3 scores"):
        fit = fit_weighted_gmm(np.array([0.1, 0.5, 0.9]))
    assert fit.threshold == math.inf


def test_zero_weights_fall_back_to_no_flag():
    with pytest.warns(FilterFallbackWarning, match="weight"):
        fit = fit_weighted_gmm(np.linspace(0, 1, 10), weights=np.zeros(10))
    assert fit.threshold == math.inf


def test_unimodal_scores_use_crossing_above_means():
    # One bag without anomalies: both components sit on the nominal mode.
    means, variances, mixing = (0.2, 0.22), (0.001, 0.01), (0.7, 0.3)
    assert crossing_threshold(means, variances, mixing) is None
    threshold, rule = _fallback_threshold(means, variances, mixing)
    low = mixing[0] * norm.pdf(threshold, means[0], math.sqrt(variances[0]))
    high = mixing[1] * norm.pdf(threshold, means[1], math.sqrt(variances[1]))
    assert rule == "crossing_above_means"
    assert threshold > means[1]
    assert low == pytest.approx(high, rel=1e-9)


def test_narrow_rare_upper_component_flags_nothing():
    threshold, rule = _fallback_threshold((0.2, 0.3), (0.01, 0.0001), (0.999, 0.001))
    assert rule == "nominal_dominates"
    assert threshold == math.inf


def test_fit_on_unimodal_scores_warns_and_flags_few():
    rng = np.random.default_rng(3)
    scores = np.clip(rng.normal(0.3, 0.05, 400), 0, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FilterFallbackWarning)
        fit = fit_weighted_gmm(scores)
    assert np.mean(scores > fit.threshold) < 0.2


def test_fit_is_deterministic():
    rng = np.random.default_rng(2)
    scores = rng.uniform(size=200)
    assert fit_weighted_gmm(scores) == fit_weighted_gmm(scores.copy())


def test_single_zero_score_does_not_become_nominal_component():
    # Global min-max maps the lowest out-of-bag score to exactly 0; a component
    # collapsed onto that one score must not set the threshold.
    rng = np.random.default_rng(4)
    scores = np.concatenate([[0.0], rng.normal(0.4, 0.05, 30), [0.9, 0.95]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FilterFallbackWarning)
        fit = fit_weighted_gmm(scores)
    assert fit.mixing[0] >= 0.5
    assert fit.threshold > 0.5
    assert np.sum(scores > fit.threshold) <= 2


def test_fit_with_anomalous_majority_flags_nothing(monkeypatch):
    monkeypatch.setattr("baaf.gmm._best_em_fit", lambda *args: None)
    with pytest.warns(FilterFallbackWarning, match="no score of this bag is flagged"):
        fit = fit_weighted_gmm(np.linspace(0, 1, 20))
    assert fit.fallback == "nominal_minority"
    assert fit.threshold == math.inf
