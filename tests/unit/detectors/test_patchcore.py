"""PatchCore and the shared feature extractor on real Lite0 ImageNet weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detectors.backbones import (
    BackboneWeightsError,
    _package_state_dict,
    create_backbone,
    normalisation_stats,
)
from detectors.features import FeatureCache, FeatureExtractor
from detectors.patchcore import PatchCore, patch_embeddings


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor("tf_efficientnet_lite0", layers=(2, 3), weights="package")


def test_lite0_offline_weights_load_into_timm_model():
    model = create_backbone("tf_efficientnet_lite0", (2, 3), weights="package")
    source = _package_state_dict("tf_efficientnet_lite0")
    torch.testing.assert_close(model.conv_stem.weight, source["_conv_stem.weight"])
    assert model.feature_info.channels() == [40, 112]


def test_lite0_normalisation_uses_backbone_statistics():
    mean, std = normalisation_stats("tf_efficientnet_lite0")
    assert mean == (0.5, 0.5, 0.5)
    assert std == (0.5, 0.5, 0.5)


def test_package_weights_missing_for_other_backbone():
    with pytest.raises(BackboneWeightsError, match="no offline weight package"):
        create_backbone("resnet18", (2, 3), weights="package")


def test_unknown_backbone_name_rejected():
    with pytest.raises(ValueError, match="unknown timm backbone 'not_a_net'"):
        create_backbone("not_a_net", (2, 3))


def test_missing_checkpoint_named(tmp_path):
    path = tmp_path / "missing.pth"
    with pytest.raises(BackboneWeightsError, match="missing.pth not found"):
        create_backbone("resnet18", (2, 3), weights=str(path))


def test_layer_maps_shapes_and_cache_reuse(extractor, tiny_category):
    samples = tiny_category.train[:3]
    before = extractor.n_forward_images
    maps = extractor.layer_maps(samples)
    assert [m.shape for m in maps] == [(3, 40, 28, 28), (3, 112, 14, 14)]
    again = extractor.layer_maps(samples)
    assert extractor.n_forward_images - before <= 3
    for first, second in zip(maps, again):
        np.testing.assert_array_equal(first, second)
    extractor.layer_maps(samples)
    assert extractor.n_forward_images - before <= 3


def test_cache_key_changes_with_layers():
    first = FeatureExtractor(layers=(2, 3), weights="none")
    other = FeatureExtractor(layers=(1, 2), weights="none")
    assert first.cache_key != other.cache_key


def test_spilled_cache_reads_back_equal(tmp_path):
    cache = FeatureCache(max_memory_mb=0.0, spill_dir=tmp_path)
    layers = [np.arange(12, dtype=np.float32).reshape(3, 4), np.ones((2, 2))]
    cache.put("image", layers)
    assert cache.memory_mb == 0.0
    assert len(list(tmp_path.glob("*.npz"))) == 1
    for stored, original in zip(cache.get("image"), layers):
        np.testing.assert_array_equal(stored, original)


def test_derived_features_cached_per_name(extractor, tiny_category):
    samples = tiny_category.train[:3]
    batch_sizes = []

    def doubled_first_layer(layer_maps):
        batch_sizes.append(len(layer_maps[0]))
        return 2 * layer_maps[0]

    first = extractor.derived_features(samples, "doubled", doubled_first_layer)
    reversed_order = extractor.derived_features(
        samples[::-1], "doubled", doubled_first_layer
    )
    extractor.derived_features(samples[:1], "doubled-again", doubled_first_layer)
    assert batch_sizes == [3, 1]
    # Cached rows are copies, so one row does not keep its whole batch in memory.
    assert all(
        extractor.cache.get(f"doubled:{extractor._key(s)}")[0].base is None
        for s in samples
    )
    np.testing.assert_array_equal(reversed_order, first[::-1])
    np.testing.assert_array_equal(first, 2 * extractor.layer_maps(samples)[0])


def test_patch_embeddings_upsample_and_pool():
    maps = [np.ones((2, 4, 8, 8), np.float32), np.ones((2, 6, 4, 4), np.float32)]
    embeddings, grid = patch_embeddings(maps)
    assert grid == (8, 8)
    assert embeddings.shape == (2, 64, 10)
    pooled, _ = patch_embeddings(maps, embedding_dim=5)
    assert pooled.shape == (2, 64, 5)


def test_cached_and_fresh_features_give_same_scores(extractor, tiny_category):
    train, test = tiny_category.train[:8], tiny_category.test
    cached = PatchCore(extractor, coreset_ratio=0.2).fit(train).predict(test)
    fresh_extractor = FeatureExtractor("tf_efficientnet_lite0", (2, 3), "package")
    fresh = PatchCore(fresh_extractor, coreset_ratio=0.2).fit(train).predict(test)
    np.testing.assert_allclose(cached.image_scores, fresh.image_scores, rtol=1e-5)
    np.testing.assert_allclose(cached.anomaly_maps, fresh.anomaly_maps, rtol=1e-4)


def test_prediction_shapes_and_frame(extractor, tiny_category):
    model = PatchCore(extractor, coreset_ratio=0.2).fit(tiny_category.train[:8])
    prediction = model.predict(tiny_category.test[:5])
    assert prediction.image_scores.shape == (5,)
    assert prediction.anomaly_maps.shape == (5, 224, 224)
    assert prediction.map_frame == "center_crop"
    assert prediction.crop_fraction == pytest.approx(224 / 256)


def test_training_images_score_below_held_out_images(extractor, tiny_category):
    # With the full bank every training patch is in memory, so only faiss's
    # float32 rounding separates its score from zero.
    train = tiny_category.train[:6]
    model = PatchCore(extractor, coreset_ratio=1.0).fit(train)
    held_out = model.predict(tiny_category.train[6:12]).image_scores
    assert model.predict(train).image_scores.max() < 0.1 * held_out.min()


def test_refit_forgets_previous_training_set(extractor, tiny_category):
    first, second = tiny_category.train[:4], tiny_category.train[4:8]
    model = PatchCore(extractor, coreset_ratio=1.0).fit(first)
    model.fit(second)
    fresh = PatchCore(extractor, coreset_ratio=1.0).fit(second)
    np.testing.assert_array_equal(model.memory_bank_, fresh.memory_bank_)


def test_anomalies_score_higher_than_nominal(extractor, tiny_category):
    model = PatchCore(extractor, coreset_ratio=0.25).fit(tiny_category.train)
    prediction = model.predict(tiny_category.test)
    labels = np.array([s.label for s in tiny_category.test])
    assert (
        prediction.image_scores[labels == 1].mean()
        > prediction.image_scores[labels == 0].max()
    )


def test_score_equals_predicted_image_scores(extractor, tiny_category):
    from detectors.softpatch import SoftPatch

    train, test = tiny_category.train[:8], tiny_category.test
    for model in (
        PatchCore(extractor, coreset_ratio=0.2),
        SoftPatch(extractor, coreset_ratio=0.2),
    ):
        model.fit(train)
        # Searches of different query batches round differently in float32.
        np.testing.assert_allclose(
            model.score(test), model.predict(test).image_scores, rtol=1e-5
        )


def test_num_neighbors_above_memory_bank_rejected(extractor, tiny_category):
    model = PatchCore(extractor, coreset_ratio=0.01, num_neighbors=100_000)
    with pytest.raises(ValueError, match="num_neighbors=100000 exceeds the"):
        model.fit(tiny_category.train[:2])
