"""PaDiM on real Lite0 ImageNet weights (small inputs keep the tests fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detector_helpers import labels_of, small_extractor
from sklearn.covariance import ledoit_wolf

from baaf.metrics import image_auroc
from detectors.features import FeatureExtractor
from detectors.padim import PaDiM, ledoit_wolf_covariances, select_channels

LAYERS = (1, 2, 3)


@pytest.fixture(scope="module")
def extractor():
    return small_extractor(LAYERS)


def test_ledoit_wolf_matches_scikit_learn():
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(3, 5, 12))  # 3 batches, 5 points, 12 dims
    centered = observations - observations.mean(axis=1, keepdims=True)
    ours = ledoit_wolf_covariances(torch.from_numpy(centered)).numpy()
    for batch in range(3):
        expected, _ = ledoit_wolf(observations[batch])
        np.testing.assert_allclose(ours[batch], expected, atol=1e-12)


def test_select_channels_upsamples_to_first_grid():
    maps = [
        np.zeros((2, 3, 4, 4), np.float32),
        np.ones((2, 2, 2, 2), np.float32),
    ]
    embeddings = select_channels(maps, np.array([1, 3, 4]))
    assert embeddings.shape == (2, 16, 3)
    np.testing.assert_array_equal(embeddings[..., 0], 0.0)
    np.testing.assert_allclose(embeddings[..., 1:], 1.0)


def test_padim_prediction_shapes_and_frame(extractor, tiny_category):
    model = PaDiM(extractor).fit(tiny_category.train[:8])
    prediction = model.predict(tiny_category.test[:5])
    assert prediction.image_scores.shape == (5,)
    assert prediction.anomaly_maps.shape == (5, 112, 112)
    assert prediction.map_frame == "center_crop"
    assert prediction.crop_fraction == pytest.approx(112 / 128)
    assert model.mean_.shape == (28 * 28, 100)
    assert model.whitening_.shape == (28 * 28, 100, 100)


def test_padim_image_score_is_map_maximum(extractor, tiny_category):
    prediction = (
        PaDiM(extractor).fit(tiny_category.train[:8]).predict(tiny_category.test[:3])
    )
    maxima = prediction.anomaly_maps.reshape(3, -1).max(axis=1)
    np.testing.assert_allclose(prediction.image_scores, maxima, rtol=1e-6)


def test_padim_same_seed_same_scores(extractor, tiny_category):
    train, test = tiny_category.train[:8], tiny_category.test
    first = PaDiM(extractor, seed=3).fit(train).predict(test)
    second = PaDiM(extractor, seed=3).fit(train).predict(test)
    np.testing.assert_array_equal(first.image_scores, second.image_scores)
    other = PaDiM(extractor, seed=4).fit(train)
    assert not np.array_equal(
        other.channel_indices_, PaDiM(extractor, seed=3).fit(train).channel_indices_
    )


def test_padim_anomalies_score_above_nominal(extractor, tiny_category):
    prediction = PaDiM(extractor).fit(tiny_category.train).predict(tiny_category.test)
    labels = labels_of(tiny_category.test)
    scores = prediction.image_scores
    assert scores[labels == 1].min() > scores[labels == 0].max()


def test_padim_refit_forgets_previous_training_set(extractor, tiny_category):
    first, second = tiny_category.train[:4], tiny_category.train[4:8]
    model = PaDiM(extractor).fit(first).fit(second)
    fresh = PaDiM(extractor).fit(second)
    torch.testing.assert_close(model.mean_, fresh.mean_, rtol=0, atol=0)
    torch.testing.assert_close(model.whitening_, fresh.whitening_, rtol=0, atol=0)


def test_padim_cached_and_fresh_features_same_scores(extractor, tiny_category):
    train, test = tiny_category.train[:8], tiny_category.test
    cached = PaDiM(extractor).fit(train).predict(test)
    fresh = PaDiM(small_extractor(LAYERS)).fit(train).predict(test)
    np.testing.assert_allclose(cached.image_scores, fresh.image_scores, rtol=1e-5)
    np.testing.assert_allclose(cached.anomaly_maps, fresh.anomaly_maps, rtol=1e-4)


def test_padim_three_images_hundred_dimensions(extractor, tiny_category):
    model = PaDiM(extractor, n_features=100).fit(tiny_category.train[:3])
    assert len(model.channel_indices_) == 100
    assert torch.isfinite(model.whitening_).all()
    prediction = model.predict(tiny_category.test)
    assert np.isfinite(prediction.image_scores).all()
    labels = labels_of(tiny_category.test)
    scores = prediction.image_scores
    assert scores[labels == 1].mean() > scores[labels == 0].mean()


def test_padim_n_features_clipped_with_warning(extractor, tiny_category):
    with pytest.warns(UserWarning, match="n_features=500 exceeds the 176 channels"):
        model = PaDiM(extractor, n_features=500).fit(tiny_category.train[:4])
    assert len(model.channel_indices_) == 176


def test_padim_single_image_warns(extractor, tiny_category):
    with pytest.warns(UserWarning, match="single image"):
        model = PaDiM(extractor).fit(tiny_category.train[:1])
    assert np.isfinite(model.predict(tiny_category.test[:2]).image_scores).all()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_features": 0}, "n_features must be at least 1, got 0"),
        ({"covariance_ridge": 0.0}, "covariance_ridge must be positive, got 0.0"),
    ],
)
def test_padim_invalid_parameters_rejected(extractor, tiny_category, options, match):
    with pytest.raises(ValueError, match=match):
        PaDiM(extractor, **options).fit(tiny_category.train[:2])


def test_padim_empty_training_set_rejected(extractor):
    with pytest.raises(ValueError, match="at least one training image"):
        PaDiM(extractor).fit([])


@pytest.mark.slow
def test_padim_bottle_image_auroc(bottle_root):
    from datasets import load_category

    bottle = load_category("mvtec_ad", bottle_root, "bottle")
    extractor = FeatureExtractor("tf_efficientnet_lite0", LAYERS, "package")
    prediction = PaDiM(extractor).fit(bottle.train).predict(bottle.test)
    assert image_auroc(labels_of(bottle.test), prediction.image_scores) >= 0.99
