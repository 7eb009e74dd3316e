"""DFM on real Lite0 ImageNet weights (small inputs keep the tests fast)."""

from __future__ import annotations

import numpy as np
import pytest
from detector_helpers import labels_of, small_extractor

from baaf.metrics import image_auroc
from detectors.dfm import DFM
from detectors.features import FeatureExtractor


@pytest.fixture(scope="module")
def extractor():
    return small_extractor()


def test_dfm_prediction_shapes_and_frame(extractor, tiny_category):
    model = DFM(extractor).fit(tiny_category.train[:8])
    prediction = model.predict(tiny_category.test[:5])
    assert prediction.image_scores.shape == (5,)
    assert prediction.anomaly_maps.shape == (5, 112, 112)
    assert prediction.map_frame == "center_crop"
    assert prediction.crop_fraction == pytest.approx(112 / 128)
    assert model.mean_.shape == (112,)


def test_dfm_layer_defaults_to_deepest(extractor, tiny_category):
    deepest = DFM(extractor).fit(tiny_category.train[:6])
    shallow = DFM(extractor, layer=2).fit(tiny_category.train[:6])
    assert deepest.components_.shape[1] == 112
    assert shallow.components_.shape[1] == 40


def test_dfm_same_training_same_scores(extractor, tiny_category):
    train, test = tiny_category.train[:8], tiny_category.test
    first = DFM(extractor).fit(train).predict(test)
    second = DFM(extractor).fit(train).predict(test)
    np.testing.assert_array_equal(first.image_scores, second.image_scores)


def test_dfm_reconstruction_error_separates_anomalies(extractor, tiny_category):
    model = DFM(extractor, score_type="fre").fit(tiny_category.train)
    scores = model.predict(tiny_category.test).image_scores
    labels = labels_of(tiny_category.test)
    assert scores[labels == 1].min() > scores[labels == 0].max()


def test_dfm_likelihood_ranks_anomalies_higher_on_average(extractor, tiny_category):
    model = DFM(extractor, score_type="nll").fit(tiny_category.train)
    scores = model.predict(tiny_category.test).image_scores
    labels = labels_of(tiny_category.test)
    assert scores[labels == 1].mean() > scores[labels == 0].mean()


def test_dfm_refit_forgets_previous_training_set(extractor, tiny_category):
    first, second = tiny_category.train[:4], tiny_category.train[4:10]
    model = DFM(extractor).fit(first).fit(second)
    fresh = DFM(extractor).fit(second)
    np.testing.assert_array_equal(model.mean_, fresh.mean_)
    np.testing.assert_array_equal(model.components_, fresh.components_)


def test_dfm_cached_and_fresh_features_same_scores(extractor, tiny_category):
    train, test = tiny_category.train[:8], tiny_category.test
    cached = DFM(extractor).fit(train).predict(test)
    fresh = DFM(small_extractor()).fit(train).predict(test)
    np.testing.assert_allclose(cached.image_scores, fresh.image_scores, rtol=1e-4)
    np.testing.assert_allclose(
        cached.anomaly_maps, fresh.anomaly_maps, rtol=1e-4, atol=1e-6
    )


def test_dfm_component_count_clipped_with_warning(extractor, tiny_category):
    message = "n_components=50 exceeds the 3 components that 4 images of 112"
    with pytest.warns(UserWarning, match=message):
        model = DFM(extractor, n_components=50).fit(tiny_category.train[:4])
    assert model.components_.shape == (3, 112)
    assert np.isfinite(model.predict(tiny_category.test).image_scores).all()


def test_dfm_variance_share_keeps_fewest_components(extractor, tiny_category):
    train = tiny_category.train
    everything = DFM(extractor, n_components=15).fit(train)
    shares = everything.variances_ / everything.variances_.sum()
    model = DFM(extractor, n_components=0.8).fit(train)
    n_kept = len(model.variances_)
    # The 15 components of 16 images span all of the pooled variance.
    assert shares[:n_kept].sum() >= 0.8 - 1e-9
    assert shares[: n_kept - 1].sum() < 0.8


def test_dfm_small_bag_likelihood_finite(extractor, tiny_category):
    model = DFM(extractor, n_components=0.99, score_type="nll")
    scores = model.fit(tiny_category.train[:2]).predict(tiny_category.test).image_scores
    assert len(model.variances_) == 1
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("value", [0, 1.0, 1.5, -0.2, True, "half"])
def test_dfm_invalid_n_components_rejected(extractor, tiny_category, value):
    with pytest.raises(ValueError, match="n_components must be an int >= 1"):
        DFM(extractor, n_components=value).fit(tiny_category.train[:4])


def test_dfm_invalid_score_type_rejected(extractor, tiny_category):
    with pytest.raises(ValueError, match="score_type must be one of"):
        DFM(extractor, score_type="mahalanobis").fit(tiny_category.train[:4])


def test_dfm_layer_outside_extractor_rejected(extractor, tiny_category):
    with pytest.raises(ValueError, match="layer=4 is not among the extractor's"):
        DFM(extractor, layer=4).fit(tiny_category.train[:4])


def test_dfm_single_image_rejected(extractor, tiny_category):
    with pytest.raises(ValueError, match="at least 2 training images for PCA, got 1"):
        DFM(extractor).fit(tiny_category.train[:1])


@pytest.mark.slow
def test_dfm_bottle_image_auroc(bottle_root):
    from datasets import load_category

    bottle = load_category("mvtec_ad", bottle_root, "bottle")
    extractor = FeatureExtractor("tf_efficientnet_lite0", (4,), "package")
    prediction = DFM(extractor).fit(bottle.train).predict(bottle.test)
    assert image_auroc(labels_of(bottle.test), prediction.image_scores) >= 0.99
