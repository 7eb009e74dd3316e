"""BAAF around every Lite0 frozen-feature detector, built from its config."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from baaf.filter import BaggingAnomalyFilter
from detectors import build_detector_factory

REPO_ROOT = Path(__file__).resolve().parents[3]


def factory_config(name: str):
    config = OmegaConf.load(REPO_ROOT / "conf" / "detector" / f"{name}.yaml")
    config.backbone.weights = "package"
    config.resize = 128
    config.input_size = 112
    return config


@pytest.mark.parametrize("name", ["padim", "dfm", "softpatch", "inreach"])
def test_detector_baaf_filter(tiny_category, name):
    anomalies = [s for s in tiny_category.test if s.label == 1][:2]
    train = tiny_category.train + anomalies
    factory = build_detector_factory(factory_config(name), seed=0)
    assert factory(0).extractor is factory(1).extractor
    result = BaggingAnomalyFilter(factory, n_bags=2, n_votes=1, seed=0).run(train)
    assert result.removed.shape == (len(train),)
    assert result.removed[-2:].all()
    kept_samples = [train[i] for i in result.kept_indices]
    prediction = factory(-1).fit(kept_samples).predict(tiny_category.test)
    assert prediction.image_scores.shape == (len(tiny_category.test),)
