"""One-class anomaly detectors behind one ``fit``/``predict`` interface.

``build_detector_factory`` turns a detector config into a callable that returns a
new, unfitted detector. Frozen-backbone detectors built by one factory share one
``FeatureExtractor``, so each image's backbone features are computed once per run.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from detectors.base import AnomalyDetector, Prediction
from detectors.features import FeatureCache, FeatureExtractor

logger = logging.getLogger(__name__)
# faiss logs each SIMD build it fails to import at INFO when first imported (by
# the detector modules below); keep only its warnings.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

DetectorFactory = Callable[[int], AnomalyDetector]

__all__ = [
    "AnomalyDetector",
    "DetectorFactory",
    "FeatureExtractor",
    "Prediction",
    "build_detector_factory",
    "build_feature_extractor",
]


def build_feature_extractor(config: Any) -> FeatureExtractor:
    """Create the shared backbone of a frozen-feature detector config."""
    backbone = config.backbone
    return FeatureExtractor(
        backbone=backbone.name,
        layers=list(backbone.layers),
        weights=str(backbone.weights),
        resize=int(config.resize),
        input_size=int(config.input_size),
        batch_size=int(config.batch_size),
        device=str(config.device),
        cache=FeatureCache(max_memory_mb=float(config.feature_cache_mb)),
    )


def build_token_extractor(config: Any):
    """Create the shared ViT token extractor of an AnomalyDINO config."""
    from detectors.anomalydino import ViTTokenExtractor

    return ViTTokenExtractor(
        backbone=config.backbone.name,
        weights=str(config.backbone.weights),
        resize=int(config.resize),
        input_size=int(config.input_size),
        batch_size=int(config.batch_size),
        device=str(config.device),
        cache=FeatureCache(max_memory_mb=float(config.feature_cache_mb)),
    )


# Detector name -> (module, class). Every key of conf/detector/<name>.yaml other
# than EXTRACTOR_KEYS is a constructor argument of the class, by the same name.
DETECTORS = {
    "patchcore": ("detectors.patchcore", "PatchCore"),
    "padim": ("detectors.padim", "PaDiM"),
    "dfm": ("detectors.dfm", "DFM"),
    "anomalydino": ("detectors.anomalydino", "AnomalyDINO"),
    "softpatch": ("detectors.softpatch", "SoftPatch"),
    "inreach": ("detectors.inreach", "InReaCh"),
}
EXTRACTOR_KEYS = frozenset(
    {
        "name",
        "backbone",
        "resize",
        "input_size",
        "batch_size",
        "device",
        "feature_cache_mb",
    }
)


def build_detector_factory(config: Any, seed: int) -> DetectorFactory:
    """Return ``make(bag) -> AnomalyDetector`` for the detector named in ``config``.

    Parameters
    ----------
    config : DictConfig
        A ``conf/detector/*.yaml`` group; ``config.name`` selects the detector.
    seed : int
        Seed for the detectors' own randomness (coreset, channel subsets).
    """
    name = config.name
    if name not in DETECTORS:
        msg = f"unknown detector {name!r}; available: {', '.join(sorted(DETECTORS))}"
        raise ValueError(msg)
    module, class_name = DETECTORS[name]
    detector_class = getattr(importlib.import_module(module), class_name)
    settings = {
        key: value
        for key, value in OmegaConf.to_container(config, resolve=True).items()
        if key not in EXTRACTOR_KEYS
    }
    if "seed" in inspect.signature(detector_class).parameters:
        settings["seed"] = seed
    if name == "anomalydino":
        extractor = build_token_extractor(config)
    else:
        extractor = build_feature_extractor(config)

    def make(bag: int) -> AnomalyDetector:
        return detector_class(extractor, **settings)

    return make
