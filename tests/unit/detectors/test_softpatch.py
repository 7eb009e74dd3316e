"""SoftPatch on real Lite0 ImageNet weights (small inputs keep the tests fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detector_helpers import labels_of, small_extractor
from sklearn.neighbors import LocalOutlierFactor

from baaf.metrics import image_auroc
from detectors.features import FeatureExtractor
from detectors.softpatch import SoftPatch, local_outlier_factors

LAYERS = (2, 3)


@pytest.fixture(scope="module")
def extractor():
    return small_extractor()


def test_local_outlier_factors_match_scikit_learn():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(3, 25, 6))
    points[:, 0] += 5.0
    ours = local_outlier_factors(torch.from_numpy(points), 4).numpy()
    for batch in range(3):
        reference = LocalOutlierFactor(n_neighbors=4).fit(points[batch])
        np.testing.assert_allclose(
            ours[batch], -reference.negative_outlier_factor_, rtol=1e-10
        )
    assert (ours[:, 0] > 2.0).all()


def test_softpatch_prediction_shapes_and_frame(extractor, tiny_category):
    model = SoftPatch(extractor, coreset_ratio=0.2).fit(tiny_category.train[:8])
    prediction = model.predict(tiny_category.test[:5])
    assert prediction.image_scores.shape == (5,)
    assert prediction.anomaly_maps.shape == (5, 112, 112)
    assert prediction.map_frame == "center_crop"
    assert prediction.crop_fraction == pytest.approx(112 / 128)
    assert model.memory_weights_.shape == (len(model.memory_bank_),)


def test_softpatch_removes_noise_share(extractor, tiny_category):
    train = tiny_category.train[:8]
    model = SoftPatch(extractor, noise_share=0.25, coreset_ratio=1.0).fit(train)
    n_patches = 8 * 14 * 14
    assert len(model.memory_bank_) == n_patches - int(0.25 * n_patches)


def test_softpatch_removes_injected_defect_patches(extractor, tiny_category):
    # The injected images' defect patches are outliers at their positions, so
    # they are removed first and the images score as anomalous afterwards.
    anomalies = [s for s in tiny_category.test if s.label == 1][:2]
    train = tiny_category.train + anomalies
    model = SoftPatch(extractor, noise_share=0.1).fit(train)
    nominal = tiny_category.test[:4]
    scores = model.predict(anomalies + nominal).image_scores
    assert scores[:2].min() > scores[2:].max()


def test_softpatch_same_seed_same_scores(extractor, tiny_category):
    train, test = tiny_category.train[:8], tiny_category.test
    first = SoftPatch(extractor, seed=1).fit(train).predict(test)
    second = SoftPatch(extractor, seed=1).fit(train).predict(test)
    np.testing.assert_array_equal(first.image_scores, second.image_scores)


def test_softpatch_anomalies_score_above_nominal(extractor, tiny_category):
    model = SoftPatch(extractor, coreset_ratio=0.25).fit(tiny_category.train)
    scores = model.predict(tiny_category.test).image_scores
    labels = labels_of(tiny_category.test)
    assert scores[labels == 1].min() > scores[labels == 0].max()


def test_softpatch_weighting_scales_distances(extractor, tiny_category):
    train, test = tiny_category.train[:8], tiny_category.test[:4]
    weighted = SoftPatch(extractor, coreset_ratio=1.0).fit(train)
    plain = SoftPatch(extractor, coreset_ratio=1.0, soft_weighting=False).fit(train)
    embeddings, _ = weighted.embed(test)
    queries = embeddings.reshape(-1, embeddings.shape[-1])
    distances, indices = weighted.index_.search(queries, 1)
    expected = distances[:, 0] * weighted.memory_weights_[indices[:, 0]]
    scores = weighted.predict(test).image_scores
    np.testing.assert_allclose(scores, expected.reshape(4, -1).max(axis=1), rtol=1e-6)
    plain_scores = plain.predict(test).image_scores
    np.testing.assert_allclose(
        plain_scores, distances[:, 0].reshape(4, -1).max(axis=1), rtol=1e-6
    )


def test_softpatch_refit_forgets_previous_training_set(extractor, tiny_category):
    first, second = tiny_category.train[:4], tiny_category.train[4:8]
    options = {"coreset_ratio": 1.0, "lof_neighbors": 3}
    model = SoftPatch(extractor, **options).fit(first).fit(second)
    fresh = SoftPatch(extractor, **options).fit(second)
    np.testing.assert_array_equal(model.memory_bank_, fresh.memory_bank_)
    np.testing.assert_array_equal(model.memory_weights_, fresh.memory_weights_)


def test_softpatch_cached_and_fresh_features_same_scores(extractor, tiny_category):
    train, test = tiny_category.train[:8], tiny_category.test
    cached = SoftPatch(extractor, coreset_ratio=0.2).fit(train).predict(test)
    fresh = SoftPatch(small_extractor(), coreset_ratio=0.2).fit(train).predict(test)
    np.testing.assert_allclose(cached.image_scores, fresh.image_scores, rtol=1e-5)
    np.testing.assert_allclose(cached.anomaly_maps, fresh.anomaly_maps, rtol=1e-4)


def test_softpatch_small_bag_clips_neighbours(extractor, tiny_category):
    with pytest.warns(UserWarning, match="lof_neighbors=6 needs 7 training images"):
        model = SoftPatch(extractor, lof_neighbors=6).fit(tiny_category.train[:3])
    assert np.isfinite(model.memory_weights_).all()


def test_softpatch_single_image_keeps_every_patch(extractor, tiny_category):
    with pytest.warns(UserWarning, match="single image"):
        model = SoftPatch(extractor, coreset_ratio=1.0).fit(tiny_category.train[:1])
    assert len(model.memory_bank_) == 14 * 14
    np.testing.assert_array_equal(model.memory_weights_, 1.0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"noise_share": 1.0}, "noise_share must be in \\[0, 1\\), got 1.0"),
        ({"lof_neighbors": 0}, "lof_neighbors must be at least 1, got 0"),
    ],
)
def test_softpatch_invalid_parameters_rejected(
    extractor, tiny_category, options, match
):
    with pytest.raises(ValueError, match=match):
        SoftPatch(extractor, **options).fit(tiny_category.train[:2])


@pytest.mark.slow
def test_softpatch_bottle_image_auroc(bottle_root):
    from datasets import load_category

    bottle = load_category("mvtec_ad", bottle_root, "bottle")
    extractor = FeatureExtractor("tf_efficientnet_lite0", LAYERS, "package")
    prediction = SoftPatch(extractor).fit(bottle.train).predict(bottle.test)
    assert image_auroc(labels_of(bottle.test), prediction.image_scores) >= 0.99
