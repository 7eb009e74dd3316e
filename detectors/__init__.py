"""One-class anomaly detectors behind one ``fit``/``predict`` interface.

``build_detector_factory`` turns a detector config into a callable that returns a
new, unfitted detector. Frozen-backbone detectors built by one factory share one
``FeatureExtractor``, so each image's backbone features are computed once per run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

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


def _patchcore_factory(config: Any, seed: int) -> DetectorFactory:
    from detectors.patchcore import PatchCore

    extractor = build_feature_extractor(config)

    def make(bag: int) -> AnomalyDetector:
        return PatchCore(
            extractor,
            coreset_ratio=float(config.coreset_ratio),
            projection_dim=int(config.projection_dim),
            embedding_dim=config.embedding_dim,
            aggregation_kernel=int(config.aggregation_kernel),
            num_neighbors=int(config.num_neighbors),
            smoothing_sigma=float(config.smoothing_sigma),
            faiss_device=str(config.faiss_device),
            seed=seed,
        )

    return make


def _padim_factory(config: Any, seed: int) -> DetectorFactory:
    from detectors.padim import PaDiM

    extractor = build_feature_extractor(config)

    def make(bag: int) -> AnomalyDetector:
        return PaDiM(
            extractor,
            n_features=int(config.n_features),
            covariance_ridge=float(config.covariance_ridge),
            smoothing_sigma=float(config.smoothing_sigma),
            seed=seed,
        )

    return make


def _dfm_factory(config: Any, seed: int) -> DetectorFactory:
    from detectors.dfm import DFM

    extractor = build_feature_extractor(config)
    layer = None if config.layer is None else int(config.layer)

    def make(bag: int) -> AnomalyDetector:
        return DFM(
            extractor,
            layer=layer,
            n_components=config.n_components,
            score_type=str(config.score_type),
            smoothing_sigma=float(config.smoothing_sigma),
        )

    return make


def _anomalydino_factory(config: Any, seed: int) -> DetectorFactory:
    from detectors.anomalydino import AnomalyDINO, ViTTokenExtractor

    extractor = ViTTokenExtractor(
        backbone=config.backbone.name,
        weights=str(config.backbone.weights),
        resize=int(config.resize),
        input_size=int(config.input_size),
        batch_size=int(config.batch_size),
        device=str(config.device),
        cache=FeatureCache(max_memory_mb=float(config.feature_cache_mb)),
    )

    def make(bag: int) -> AnomalyDetector:
        return AnomalyDINO(
            extractor,
            top_share=float(config.top_share),
            masking=bool(config.masking),
            mask_threshold=float(config.mask_threshold),
            smoothing_sigma=float(config.smoothing_sigma),
            faiss_device=str(config.faiss_device),
        )

    return make


def _softpatch_factory(config: Any, seed: int) -> DetectorFactory:
    from detectors.softpatch import SoftPatch

    extractor = build_feature_extractor(config)

    def make(bag: int) -> AnomalyDetector:
        return SoftPatch(
            extractor,
            noise_share=float(config.noise_share),
            lof_neighbors=int(config.lof_neighbors),
            soft_weighting=bool(config.soft_weighting),
            coreset_ratio=float(config.coreset_ratio),
            projection_dim=int(config.projection_dim),
            embedding_dim=config.embedding_dim,
            aggregation_kernel=int(config.aggregation_kernel),
            smoothing_sigma=float(config.smoothing_sigma),
            faiss_device=str(config.faiss_device),
            seed=seed,
        )

    return make


def _inreach_factory(config: Any, seed: int) -> DetectorFactory:
    from detectors.inreach import InReaCh

    extractor = build_feature_extractor(config)
    radius = config.position_radius

    def make(bag: int) -> AnomalyDetector:
        return InReaCh(
            extractor,
            partners_per_image=int(config.partners_per_image),
            distance_quantile=float(config.distance_quantile),
            position_radius=None if radius is None else int(radius),
            min_matches=int(config.min_matches),
            coreset_ratio=float(config.coreset_ratio),
            projection_dim=int(config.projection_dim),
            embedding_dim=config.embedding_dim,
            aggregation_kernel=int(config.aggregation_kernel),
            num_neighbors=int(config.num_neighbors),
            smoothing_sigma=float(config.smoothing_sigma),
            faiss_device=str(config.faiss_device),
            seed=seed,
        )

    return make


FACTORIES: dict[str, Callable[[Any, int], DetectorFactory]] = {
    "patchcore": _patchcore_factory,
    "padim": _padim_factory,
    "dfm": _dfm_factory,
    "anomalydino": _anomalydino_factory,
    "softpatch": _softpatch_factory,
    "inreach": _inreach_factory,
}


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
    if name not in FACTORIES:
        msg = f"unknown detector {name!r}; available: {', '.join(sorted(FACTORIES))}"
        raise ValueError(msg)
    return FACTORIES[name](config, seed)
