"""One experiment: load, corrupt, filter, train, evaluate, save.

``run_experiment`` is what ``run.py`` calls for every Hydra job. Each step is a
small function so tests can call them one by one. Every input check runs before
the first detector is trained, so a bad config or a broken file stops the run
before any time is spent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from baaf.filter import BaggingAnomalyFilter, FilterResult
from baaf.metrics import (
    aupro,
    filter_precision_recall,
    image_auroc,
    pixel_auroc,
    prepare_pixel_arrays,
)
from baaf.reporting import format_results_table, save_run_outputs
from baaf.settings import check_detector_config, check_run_settings
from baaf.tracking import ExperimentTracker
from datasets import load_category
from datasets.base import CategoryData, Sample
from datasets.corruption import corrupt
from datasets.image_io import check_readable, read_mask
from detectors import build_detector_factory
from detectors.backbones import BackboneWeightsError
from detectors.base import Prediction

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]


CONFIG_KEYS = {
    "baaf": {"enabled", "bags", "votes", "normalisation"},
    "corruption": {"ratio", "ratio_base", "overlap", "mode", "seed"},
}


# Errors caused by the settings or the data, whose messages name what to fix.
INPUT_ERRORS = (ValueError, FileNotFoundError, BackboneWeightsError)


def validate_config(cfg: DictConfig) -> None:
    """Reject missing, unknown and out-of-range settings before any data is read.

    Raises
    ------
    ValueError
        Naming the setting, the value received and the allowed range.
    """
    _check_dataset_given(cfg)
    check_run_settings(cfg)
    check_detector_config(cfg.detector)
    for group, allowed in CONFIG_KEYS.items():
        unknown = set(cfg[group]) - allowed
        if unknown:
            msg = (
                f"unknown setting {group}.{sorted(unknown)[0]}; "
                f"{group} accepts {', '.join(sorted(allowed))}"
            )
            raise ValueError(msg)
    ratio = _number(cfg, "corruption.ratio", float)
    if not 0.0 <= ratio < 1.0:
        msg = (
            f"corruption.ratio must be in [0, 1), got {ratio}; it is the share of "
            "the training set that is anomalous, e.g. corruption.ratio=0.1"
        )
        raise ValueError(msg)
    if cfg.baaf.enabled:
        bags = _number(cfg, "baaf.bags", int)
        if bags < 2:
            msg = f"baaf.bags must be at least 2, got {bags}; e.g. baaf.bags=4"
            raise ValueError(msg)
        votes = _number(cfg, "baaf.votes", int)
        if votes < 1:
            msg = f"baaf.votes must be at least 1, got {votes}; e.g. baaf.votes=1"
            raise ValueError(msg)


def _check_dataset_given(cfg: DictConfig) -> None:
    for key in ("root", "category"):
        missing = OmegaConf.is_missing(cfg.dataset, key)
        if missing or (key == "category" and cfg.dataset.category is None):
            msg = (
                f"dataset.{key} is required for dataset={cfg.dataset.name}; "
                f"set it on the command line, e.g. dataset.{key}=..."
            )
            raise ValueError(msg)


def _number(cfg: DictConfig, key: str, kind: type) -> int | float:
    value = OmegaConf.select(cfg, key)
    try:
        number = kind(value)
    except (TypeError, ValueError):
        msg = f"{key} must be a number, got {value!r}"
        raise ValueError(msg) from None
    if kind is int and number != float(value):
        msg = f"{key} must be a whole number, got {value!r}"
        raise ValueError(msg)
    return number


def data_cache_dir(cfg: DictConfig) -> Path:
    """Return the cache folder for this run's generated data and manifests.

    The embedded synthetic category gets one folder per generator setting
    (``<paths.cache_dir>/synthetic/<hash>``), so runs with other settings never
    overwrite its images or reuse a manifest drawn for other images.
    """
    cache_dir = _absolute(cfg.paths.cache_dir)
    if cfg.dataset.root is not None:
        return cache_dir
    settings = OmegaConf.to_container(cfg.dataset.synthetic, resolve=True)
    settings["category"] = str(cfg.dataset.category)
    text = json.dumps(settings, sort_keys=True)
    return cache_dir / "synthetic" / hashlib.sha1(text.encode()).hexdigest()[:12]


def load_data(cfg: DictConfig, cache_dir: Path) -> CategoryData:
    """Load the configured category.

    With ``dataset.root`` null, the embedded synthetic category (MVTec AD layout)
    is generated under ``cache_dir / "data"`` on first use and loaded; its
    generator settings come from ``dataset.synthetic``.
    """
    dataset = cfg.dataset
    if dataset.root is None:
        options = OmegaConf.to_container(dataset.synthetic, resolve=True)
        root = cache_dir / "data"
        return load_category("synthetic", root, str(dataset.category), **options)
    options = dataset.get("options")
    options = {} if options is None else OmegaConf.to_container(options, resolve=True)
    root = _absolute(dataset.root)
    return load_category(str(dataset.name), root, str(dataset.category), **options)


def check_detector_settings(cfg: DictConfig, factory) -> None:
    """Raise ValueError for an invalid detector setting, before any image is read."""
    try:
        factory(0).check_settings()
    except ValueError as error:
        name = cfg.detector.name
        msg = (
            f"{error} (detector={name}: each setting is detector.<name of the "
            f"setting> on the command line, defaults in conf/detector/{name}.yaml)"
        )
        raise ValueError(msg) from None


def check_bag_count(cfg: DictConfig, data: CategoryData) -> None:
    """Check that every bag can get at least one training group."""
    if cfg.baaf.enabled:
        n_groups = len({sample.group_id for sample in data.train})
        if int(cfg.baaf.bags) > n_groups:
            msg = (
                f"baaf.bags={cfg.baaf.bags} is more than the {n_groups} training "
                f"images of {data.dataset}/{data.category}; use at most {n_groups} "
                "bags (4 is the usual choice)"
            )
            raise ValueError(msg)


def run_filter(cfg: DictConfig, factory, train: list[Sample]) -> FilterResult:
    """Run BAAF on the training set."""
    baaf_filter = BaggingAnomalyFilter(
        factory,
        n_bags=int(cfg.baaf.bags),
        n_votes=int(cfg.baaf.votes),
        seed=int(cfg.seed),
        normalisation=str(cfg.baaf.normalisation),
    )
    result = baaf_filter.run(train)
    if result.removed.all():
        msg = (
            f"BAAF removed all {len(train)} training images; lower the share of "
            "anomalies or use fewer bags (baaf.bags)"
        )
        raise RuntimeError(msg)
    return result


def load_masks(samples: list[Sample]) -> list[np.ndarray]:
    """Read each sample's ground-truth mask at its image size, (H, W) bool."""
    masks = []
    for sample in samples:
        with Image.open(sample.image_path) as image:
            width, height = image.size
        masks.append(read_mask(sample.mask_paths, (height, width)))
    return masks


def compute_metrics(
    data: CategoryData, prediction: Prediction, filter_result: FilterResult | None
) -> dict[str, Any]:
    """Image and pixel metrics on the test set, plus filter precision and recall.

    With more than one defect type, ``per_defect_type`` contains the same image and
    pixel metrics for each type, computed on the nominal test images plus the
    images of that type (for example logical and structural anomalies of LOCO).
    """
    pixel_arrays = None
    if prediction.anomaly_maps is not None and data.has_pixel_masks:
        # Resized and cropped once, then reused for every defect-type subset.
        pixel_arrays = prepare_pixel_arrays(
            prediction.anomaly_maps,
            load_masks(data.test),
            prediction.map_frame,
            prediction.crop_fraction,
        )
    metrics = _test_metrics(data, prediction, pixel_arrays, np.arange(len(data.test)))
    defect_types = sorted({s.defect_type for s in data.test if s.label == 1})
    if len(defect_types) > 1:
        metrics["per_defect_type"] = {
            defect_type: _test_metrics(
                data, prediction, pixel_arrays, _type_subset(data.test, defect_type)
            )
            for defect_type in defect_types
        }
    metrics["filter_precision"] = None
    metrics["filter_recall"] = None
    if filter_result is not None:
        removed = set(filter_result.summary.sample_id[filter_result.removed])
        precision, recall = filter_precision_recall(removed, set(data.injected_ids))
        metrics["filter_precision"] = _finite_or_none(precision)
        metrics["filter_recall"] = _finite_or_none(recall)
    return metrics


def _type_subset(test: list[Sample], defect_type: str) -> np.ndarray:
    keep = [
        i for i, s in enumerate(test) if s.label == 0 or s.defect_type == defect_type
    ]
    return np.array(keep)


def _test_metrics(
    data: CategoryData,
    prediction: Prediction,
    pixel_arrays: tuple[np.ndarray, np.ndarray] | None,
    subset: np.ndarray,
) -> dict[str, Any]:
    """Metrics of the test images in ``subset``; pixel ones None without arrays."""
    labels = np.array([data.test[i].label for i in subset])
    values = {
        "image_auroc": image_auroc(labels, prediction.image_scores[subset]),
        "pixel_auroc": None,
        "pixel_aupro": None,
    }
    if pixel_arrays is not None:
        maps, masks = pixel_arrays[0][subset], pixel_arrays[1][subset]
        values["pixel_auroc"] = pixel_auroc(maps, masks)
        values["pixel_aupro"] = aupro(maps, masks)
    return {key: _finite_or_none(value) for key, value in values.items()}


def run_experiment(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run one experiment and write its outputs to ``run_dir``.

    Returns
    -------
    dict
        The metrics written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Warnings (mixture fallbacks, detector notes) go through logging, so each
    # is printed once and kept in run.log.
    logging.captureWarnings(True)
    started = time.perf_counter()
    try:
        validate_config(cfg)
    except ValueError as error:
        logger.error("invalid config, nothing was run: %s", error)
        raise
    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger.info("git commit %s", _git_commit())
    logger.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))

    tracker = ExperimentTracker(
        enabled=bool(cfg.logger.enabled),
        mode=str(cfg.logger.mode),
        project=str(cfg.logger.project),
        entity=cfg.logger.entity,
        name=f"{cfg.dataset.category}-{cfg.detector.name}-{_method_label(cfg)}",
        run_dir=run_dir,
        config=resolved,
    )
    try:
        metrics = _run_steps(cfg, run_dir, resolved, tracker)
        metrics["elapsed_s"] = round(time.perf_counter() - started, 1)
        tracker.log(metrics)
    except INPUT_ERRORS as error:
        # The message names the value to fix; a traceback would bury it.
        logger.error("run failed: %s", error)
        tracker.finish(exit_code=1)
        raise
    except BaseException:
        logger.exception("run failed")
        tracker.finish(exit_code=1)
        raise
    tracker.finish()
    return metrics


def _run_steps(
    cfg: DictConfig, run_dir: Path, resolved: dict, tracker: ExperimentTracker
) -> dict[str, Any]:
    factory = build_detector_factory(cfg.detector, seed=int(cfg.seed))
    check_detector_settings(cfg, factory)
    cache_dir = data_cache_dir(cfg)
    clean = load_data(cfg, cache_dir)
    # Check every file before the manifest is written, so that fixing a broken
    # image never meets a manifest drawn from the broken category.
    check_readable(clean.train + clean.test, check_masks=True)
    data, manifest = corrupt(
        clean,
        ratio=float(cfg.corruption.ratio),
        seed=int(cfg.corruption.seed),
        cache_dir=cache_dir,
        ratio_base=str(cfg.corruption.ratio_base),
        overlap=bool(cfg.corruption.overlap),
        mode=str(cfg.corruption.mode),
    )
    check_bag_count(cfg, data)
    logger.info(
        "%s/%s: %d training images (%d injected anomalies), %d test images",
        data.dataset,
        data.category,
        len(data.train),
        len(data.injected_ids),
        len(data.test),
    )

    filter_result = None
    kept = data.train
    if cfg.baaf.enabled:
        start = time.perf_counter()
        filter_result = run_filter(cfg, factory, data.train)
        kept = [data.train[i] for i in filter_result.kept_indices]
        logger.info(
            "BAAF kept %d of %d training images in %.1f s",
            len(kept),
            len(data.train),
            time.perf_counter() - start,
        )

    start = time.perf_counter()
    final = factory(-1).fit(kept)
    logger.info(
        "final %s trained on %d images in %.1f s",
        cfg.detector.name,
        len(kept),
        time.perf_counter() - start,
    )
    prediction = final.predict(data.test)

    metrics = compute_metrics(data, prediction, filter_result)
    metrics.update(
        {
            "n_train": len(data.train),
            "n_injected": len(data.injected_ids),
            "n_kept": len(kept),
            "ratio_reached": manifest.get("ratio_reached"),
            "ratio_base": manifest.get("ratio_base"),
        }
    )
    save_run_outputs(
        run_dir, resolved, manifest, data, prediction, filter_result, metrics
    )
    if filter_result is not None:
        tracker.save_table("filter_summary", filter_result.summary)
    table = format_results_table(_method_label(cfg), cfg.detector.name, data, metrics)
    (run_dir / "results.txt").write_text(table + "\n")
    logger.info(
        "metrics: %s",
        ", ".join(f"{key}={value}" for key, value in metrics.items()),
    )
    return metrics


def _method_label(cfg: DictConfig) -> str:
    if not cfg.baaf.enabled:
        return "baseline"
    return f"BAAF({cfg.baaf.votes}/{cfg.baaf.bags})"


def _absolute(path: str | Path) -> Path:
    path = Path(str(path)).expanduser()
    if path.is_absolute():
        return path
    try:
        from hydra.utils import get_original_cwd

        return Path(get_original_cwd()) / path
    except ValueError:
        return Path.cwd() / path


def _git_commit() -> str:
    try:
        output = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return output.stdout.strip() or "unknown"


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)
