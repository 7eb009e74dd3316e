"""Weighted two-component 1-D Gaussian mixture and its crossing threshold.

BAAF fits a two-Gaussian mixture to a bag's normalised out-of-bag scores, each
score weighted by one minus its value, so that strongly anomalous scores pull the
fit less. scikit-learn's ``GaussianMixture`` takes no sample weights, hence this
small weighted EM.

The filter threshold is where the weighted component densities
``pi_k * N(x; mu_k, sigma_k)`` cross between the two means, which is where the
posterior of the upper (anomalous) component passes one half.

Degenerate inputs get a fallback threshold and a ``FilterFallbackWarning``:

* fewer than ``MIN_SCORES`` scores, all scores equal, or zero total weight:
  threshold ``+inf``, so nothing in that bag is flagged;
* no EM start gives a fit whose lower component carries at least half of the
  weight with a variance above the floor: ``+inf`` as well;
* the densities do not cross between the means: the first crossing above the
  upper mean, where the wider component takes over. When there is none and the
  nominal component dominates at the upper mean, ``+inf``, otherwise the
  midpoint of the means. This case arises when a bag contains no anomalies, so
  both components sit on the nominal mode with the wider one around the
  narrower.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

MIN_SCORES = 5
VARIANCE_FLOOR = 1e-6
# EM starts: the lower component starts with this weighted share of the scores.
INITIAL_SPLIT_QUANTILES = (0.5, 0.75, 0.9)


class FilterFallbackWarning(UserWarning):
    """The mixture threshold fell back to a rule for degenerate scores."""


@dataclass(frozen=True)
class MixtureFit:
    """Result of fitting two weighted Gaussians to 1-D scores.

    Attributes
    ----------
    means, variances, mixing : tuple of float
        Component parameters, the lower-mean (nominal) component first.
    threshold : float
        Score above which a value counts as anomalous.
    fallback : str or None
        Name of the fallback rule used, or None when the crossing was found.
    n_iter : int
        EM iterations run.
    """

    means: tuple[float, float]
    variances: tuple[float, float]
    mixing: tuple[float, float]
    threshold: float
    fallback: str | None
    n_iter: int


def fit_weighted_gmm(
    scores: np.ndarray,
    weights: np.ndarray | None = None,
    max_iter: int = 200,
    tol: float = 1e-8,
) -> MixtureFit:
    """Fit a two-component 1-D Gaussian mixture by weighted EM.

    Parameters
    ----------
    scores : ndarray of shape (n,)
        Normalised out-of-bag scores, usually in [0, 1].
    weights : ndarray of shape (n,) or None
        Non-negative sample weights; ``1 - scores`` when None.
    max_iter : int
        EM iteration limit.
    tol : float
        Stop when the weighted mean log-likelihood improves by less than this.

    Returns
    -------
    MixtureFit
        Components ordered by mean, and the crossing threshold or its fallback.
    """
    scores = np.asarray(scores, dtype=np.float64)
    weights = 1.0 - scores if weights is None else np.asarray(weights, np.float64)
    weights = np.clip(weights, 0.0, None)
    degenerate = _degenerate_reason(scores, weights)
    if degenerate is not None:
        _warn(f"{degenerate}; no score of this bag is flagged (threshold +inf)")
        mean = float(scores.mean()) if scores.size else math.nan
        return MixtureFit((mean, mean), (0.0, 0.0), (1.0, 0.0), math.inf, degenerate, 0)

    fit = _best_em_fit(scores, weights, max_iter, tol)
    if fit is None:
        _warn(
            "every mixture fit puts most weight on the upper component or collapses "
            "the lower one onto a single score; no score of this bag is flagged "
            "(threshold +inf)"
        )
        mean = float(np.average(scores, weights=weights))
        return MixtureFit(
            (mean, mean), (0.0, 0.0), (1.0, 0.0), math.inf, "nominal_minority", 0
        )
    means, variances, mixing, n_iter, _ = fit
    threshold = crossing_threshold(means, variances, mixing)
    fallback = None
    if threshold is None:
        threshold, fallback = _fallback_threshold(means, variances, mixing)
        _warn(
            "the two mixture densities do not cross between the means "
            f"{means[0]:.4f} and {means[1]:.4f}; threshold {threshold:.4f} "
            f"({fallback})"
        )
    return MixtureFit(means, variances, mixing, float(threshold), fallback, n_iter)


def _fallback_threshold(
    means: tuple[float, float],
    variances: tuple[float, float],
    mixing: tuple[float, float],
) -> tuple[float, str]:
    """Return the threshold and rule name used when no crossing lies between means."""
    above = [root for root in _crossings(means, variances, mixing) if root > means[1]]
    if above:
        return min(above), "crossing_above_means"
    nominal = math.log(mixing[0]) + _log_normal(means[1], means[0], variances[0])
    upper = math.log(mixing[1]) + _log_normal(means[1], means[1], variances[1])
    if nominal >= upper:
        return math.inf, "nominal_dominates"
    return 0.5 * (means[0] + means[1]), "midpoint"


def crossing_threshold(
    means: tuple[float, float],
    variances: tuple[float, float],
    mixing: tuple[float, float],
) -> float | None:
    """Return where ``pi_k N(x; mu_k, var_k)`` of the two components are equal.

    Only a crossing strictly between the two means counts; None when there is
    none. ``means`` must be ordered, lower first.
    """
    if mixing[0] <= 0.0 or mixing[1] <= 0.0 or means[0] == means[1]:
        return None
    between = [
        r for r in _crossings(means, variances, mixing) if means[0] < r < means[1]
    ]
    # The weighted log densities differ by a quadratic, so there are at most two
    # crossings; the first one between the means is the threshold.
    return float(between[0]) if between else None


def _crossings(
    means: tuple[float, float],
    variances: tuple[float, float],
    mixing: tuple[float, float],
) -> list[float]:
    """Return all x where the two weighted densities are equal."""
    (m1, m2), (v1, v2), (p1, p2) = means, variances, mixing
    if p1 <= 0.0 or p2 <= 0.0:
        return []
    # log p1 N1(x) = log p2 N2(x)  <=>  a x^2 + b x + c = 0
    a = 0.5 / v2 - 0.5 / v1
    b = m1 / v1 - m2 / v2
    c = (
        0.5 * m2**2 / v2
        - 0.5 * m1**2 / v1
        + math.log(p1 / p2)
        - 0.5 * math.log(v1 / v2)
    )
    if abs(a) < 1e-12:
        return [-c / b] if b != 0 else []
    discriminant = b * b - 4 * a * c
    if discriminant < 0:
        return []
    sqrt_d = math.sqrt(discriminant)
    return sorted([(-b - sqrt_d) / (2 * a), (-b + sqrt_d) / (2 * a)])


def _degenerate_reason(scores: np.ndarray, weights: np.ndarray) -> str | None:
    if scores.size < MIN_SCORES:
        return f"only {scores.size} scores (fewer than {MIN_SCORES})"
    if np.ptp(scores) <= 1e-12:
        return "all scores are equal"
    if weights.sum() <= 0.0:
        return "all sample weights are zero"
    if np.count_nonzero(weights) < 2:
        return "fewer than two scores have non-zero weight"
    return None


def _best_em_fit(
    scores: np.ndarray, weights: np.ndarray, max_iter: int, tol: float
) -> tuple | None:
    """Run EM from several starts; keep the most likely plausible fit.

    A fit is plausible when the lower (nominal) component carries at least half
    of the weight, since anomalies are the minority, and its variance is above
    the floor. A component collapsed onto one score (often the exact 0 that
    min-max normalisation creates) has a degenerate, unbounded likelihood.
    None when no start gives a plausible fit.
    """
    floor = max(VARIANCE_FLOOR, 1e-4 * np.var(scores))
    plausible = []
    for quantile in INITIAL_SPLIT_QUANTILES:
        fit = _weighted_em(scores, weights, max_iter, tol, quantile, floor)
        _, variances, mixing, _, _ = fit
        if mixing[0] >= 0.5 and variances[0] > 1.01 * floor:
            plausible.append(fit)
    if not plausible:
        return None
    return max(plausible, key=lambda fit: fit[4])


def _weighted_em(
    scores: np.ndarray,
    weights: np.ndarray,
    max_iter: int,
    tol: float,
    split_quantile: float,
    floor: float,
) -> tuple:
    """Run weighted EM from a split at a weighted quantile of the scores.

    Returns
    -------
    tuple
        ``(means, variances, mixing, n_iter, log_likelihood)``, components ordered
        by mean; the log-likelihood is the weighted mean per score.
    """
    total = weights.sum()
    low, high = _initial_split(scores, weights, split_quantile)
    means = np.array([_wmean(scores, weights * low), _wmean(scores, weights * high)])
    variances = np.array(
        [
            max(_wvar(scores, weights * low, means[0]), floor),
            max(_wvar(scores, weights * high, means[1]), floor),
        ]
    )
    mixing = np.array([(weights * low).sum(), (weights * high).sum()]) / total
    previous = -math.inf
    n_iter = 0
    for iteration in range(1, max_iter + 1):
        n_iter = iteration
        # E-step: responsibilities of each component, shape (n, 2)
        log_density = _log_normal(scores[:, None], means, variances) + np.log(
            np.maximum(mixing, 1e-300)
        )
        log_total = np.logaddexp(log_density[:, 0], log_density[:, 1])
        responsibilities = np.exp(log_density - log_total[:, None])
        likelihood = float((weights * log_total).sum() / total)

        # M-step with sample weights
        effective = responsibilities * weights[:, None]  # (n, 2)
        component_weight = effective.sum(axis=0) + 1e-300
        mixing = component_weight / component_weight.sum()
        means = (effective * scores[:, None]).sum(axis=0) / component_weight
        squared = (scores[:, None] - means) ** 2
        variances = np.maximum(
            (effective * squared).sum(axis=0) / component_weight, floor
        )
        if abs(likelihood - previous) < tol:
            break
        previous = likelihood

    order = np.argsort(means)
    return (
        (float(means[order[0]]), float(means[order[1]])),
        (float(variances[order[0]]), float(variances[order[1]])),
        (float(mixing[order[0]]), float(mixing[order[1]])),
        n_iter,
        likelihood,
    )


def _initial_split(
    scores: np.ndarray, weights: np.ndarray, quantile: float
) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(scores, kind="stable")
    cumulative = np.cumsum(weights[order])
    cut = scores[order[np.searchsorted(cumulative, quantile * cumulative[-1])]]
    high = (scores > cut).astype(np.float64)
    if high.sum() == 0:
        high = (scores >= cut).astype(np.float64)
    return 1.0 - high, high


def _wmean(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return (
        float((weights * values).sum() / total) if total > 0 else float(values.mean())
    )


def _wvar(values: np.ndarray, weights: np.ndarray, mean: float) -> float:
    total = weights.sum()
    if total <= 0:
        return float(values.var())
    return float((weights * (values - mean) ** 2).sum() / total)


def _log_normal(x: np.ndarray, mean: np.ndarray, variance: np.ndarray) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi * variance) + (x - mean) ** 2 / variance)


def _warn(message: str) -> None:
    warnings.warn(message, FilterFallbackWarning, stacklevel=3)
