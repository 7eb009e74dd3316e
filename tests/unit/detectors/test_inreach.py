"""InReaCh on real Lite0 ImageNet weights (small inputs keep the tests fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detector_helpers import labels_of, small_extractor

from baaf.metrics import image_auroc
from detectors.features import FeatureExtractor
from detectors.inreach import (
    InReaCh,
    mutual_matches,
    position_mask,
    sample_image_pairs,
)

LAYERS = (2, 3)


@pytest.fixture(scope="module")
def extractor():
    return small_extractor()


def test_sample_image_pairs_covers_each_image():
    pairs = sample_image_pairs(12, 3, seed=0)
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert len(np.unique(pairs, axis=0)) == len(pairs)
    partners = np.bincount(pairs.ravel(), minlength=12)
    assert (partners >= 3).all()
    np.testing.assert_array_equal(pairs, sample_image_pairs(12, 3, seed=0))


def test_sample_image_pairs_all_when_few_images():
    pairs = sample_image_pairs(4, 10, seed=0)
    assert pairs.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]


def test_mutual_matches_on_permuted_copy():
    rng = np.random.default_rng(0)
    first = torch.from_numpy(rng.normal(size=(1, 9, 4)))
    order = torch.from_numpy(rng.permutation(9))
    second = first[:, order] + 0.01
    pair, patch, partner, distance = mutual_matches(first, second, None)
    assert len(patch) == 9
    np.testing.assert_array_equal(order[partner].numpy(), patch.numpy())
    assert (pair == 0).all()
    assert float(distance.max()) < 0.05


def test_position_mask_radius():
    mask = position_mask((3, 3), 1)
    assert mask.shape == (9, 9)
    assert not mask[4].any()  # the centre reaches every cell
    assert mask[0, 8]  # opposite corners are 2 cells apart
    assert not mask[0, 4]
    assert position_mask((3, 3), None) is None


def test_inreach_prediction_shapes_and_frame(extractor, tiny_category):
    model = InReaCh(extractor, coreset_ratio=0.2).fit(tiny_category.train[:8])
    prediction = model.predict(tiny_category.test[:5])
    assert prediction.image_scores.shape == (5,)
    assert prediction.anomaly_maps.shape == (5, 112, 112)
    assert prediction.map_frame == "center_crop"
    assert prediction.crop_fraction == pytest.approx(112 / 128)
    assert model.match_counts_.shape == (8, 14 * 14)


def test_inreach_drops_unmatched_defect_patches(extractor, tiny_category):
    # An injected defect has no mutual match in the nominal images, so the
    # injected images still score as anomalous after training on them.
    anomalies = [s for s in tiny_category.test if s.label == 1][:2]
    train = tiny_category.train + anomalies
    model = InReaCh(extractor, coreset_ratio=1.0, min_matches=2).fit(train)
    counts = model.match_counts_
    assert counts[-2:].mean() < counts[:-2].mean()
    scores = model.predict(anomalies + tiny_category.test[:4]).image_scores
    assert scores[:2].min() > scores[2:].max()


def test_inreach_position_radius_zero_matches_in_place(extractor, tiny_category):
    model = InReaCh(extractor)
    embeddings, grid = model.embed(tiny_category.train[:2])
    tensors = torch.from_numpy(embeddings)
    forbidden = position_mask(grid, 0)
    _, patch, partner, _ = mutual_matches(tensors[:1], tensors[1:], forbidden)
    # With one allowed candidate per patch, every patch matches its own position.
    assert len(patch) == grid[0] * grid[1]
    np.testing.assert_array_equal(partner.numpy(), patch.numpy())


def test_inreach_position_radius_changes_counts(extractor, tiny_category):
    train = tiny_category.train[:6]
    options = {"partners_per_image": 5, "distance_quantile": 1.0}
    free = InReaCh(extractor, **options).fit(train)
    local = InReaCh(extractor, position_radius=0, **options).fit(train)
    np.testing.assert_array_equal(local.match_counts_, 5)
    assert (free.match_counts_ < 5).any()


def test_inreach_same_seed_same_scores(extractor, tiny_category):
    train, test = tiny_category.train, tiny_category.test
    first = InReaCh(extractor, partners_per_image=3, seed=2).fit(train)
    second = InReaCh(extractor, partners_per_image=3, seed=2).fit(train)
    np.testing.assert_array_equal(first.match_counts_, second.match_counts_)
    np.testing.assert_array_equal(
        first.predict(test).image_scores, second.predict(test).image_scores
    )


def test_inreach_anomalies_score_above_nominal(extractor, tiny_category):
    model = InReaCh(extractor, coreset_ratio=0.25).fit(tiny_category.train)
    scores = model.predict(tiny_category.test).image_scores
    labels = labels_of(tiny_category.test)
    assert scores[labels == 1].min() > scores[labels == 0].max()


def test_inreach_refit_forgets_previous_training_set(extractor, tiny_category):
    first, second = tiny_category.train[:4], tiny_category.train[4:8]
    model = InReaCh(extractor, coreset_ratio=1.0).fit(first).fit(second)
    fresh = InReaCh(extractor, coreset_ratio=1.0).fit(second)
    np.testing.assert_array_equal(model.memory_bank_, fresh.memory_bank_)
    np.testing.assert_array_equal(model.match_counts_, fresh.match_counts_)


def test_inreach_cached_and_fresh_features_same_scores(extractor, tiny_category):
    train, test = tiny_category.train[:8], tiny_category.test
    cached = InReaCh(extractor, coreset_ratio=0.2).fit(train).predict(test)
    fresh = InReaCh(small_extractor(), coreset_ratio=0.2).fit(train).predict(test)
    np.testing.assert_allclose(cached.image_scores, fresh.image_scores, rtol=1e-5)
    np.testing.assert_allclose(cached.anomaly_maps, fresh.anomaly_maps, rtol=1e-4)


def test_inreach_single_image_keeps_every_patch(extractor, tiny_category):
    with pytest.warns(UserWarning, match="found no patch with 1 or more mutual"):
        model = InReaCh(extractor, coreset_ratio=1.0).fit(tiny_category.train[:1])
    assert len(model.memory_bank_) == 14 * 14


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"partners_per_image": 0}, "partners_per_image must be at least 1, got 0"),
        ({"distance_quantile": 0.0}, "distance_quantile must be in \\(0, 1\\]"),
        ({"position_radius": -1}, "position_radius must be >= 0 or null, got -1"),
        ({"min_matches": 0}, "min_matches must be at least 1, got 0"),
    ],
)
def test_inreach_invalid_parameters_rejected(extractor, tiny_category, options, match):
    with pytest.raises(ValueError, match=match):
        InReaCh(extractor, **options).fit(tiny_category.train[:2])


@pytest.mark.slow
def test_inreach_bottle_image_auroc(bottle_root):
    from datasets import load_category

    bottle = load_category("mvtec_ad", bottle_root, "bottle")
    extractor = FeatureExtractor("tf_efficientnet_lite0", LAYERS, "package")
    prediction = InReaCh(extractor).fit(bottle.train).predict(bottle.test)
    assert image_auroc(labels_of(bottle.test), prediction.image_scores) >= 0.99
