"""Files every run folder holds, and the results table printed at the end.

A run folder contains:

``config.yaml``
    The resolved config.
``corruption_manifest.json``
    Which test images were injected into training, and the ratio reached.
``bags.csv``
    Bag of every training sample in every vote (BAAF runs only).
``filter_decisions.csv``
    Every out-of-bag score: raw, normalised, the bag's threshold, above or not.
``filter_thresholds.csv``
    Mixture parameters and threshold of every (vote, bag).
``filter_summary.csv``
    Per training sample: injected or not, votes flagged, removed or kept.
``test_scores.csv``
    Per test image: label, defect type, image score.
``metrics.json``
    The metrics and run sizes.
``run.log``
    The log (written by Hydra's job logging, or by ``run.py`` handlers).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from baaf.filter import FilterResult
from datasets.base import CategoryData
from detectors.base import Prediction

logger = logging.getLogger(__name__)

METRIC_LABELS = {
    "image_auroc": "I-AUROC",
    "pixel_auroc": "P-AUROC",
    "pixel_aupro": "AUPRO",
    "filter_precision": "filter precision",
    "filter_recall": "filter recall",
}


def save_run_outputs(
    run_dir: Path,
    config: dict,
    manifest: dict,
    data: CategoryData,
    prediction: Prediction,
    filter_result: FilterResult | None,
    metrics: dict[str, Any],
) -> None:
    """Write the config, manifest, filter decisions, test scores and metrics."""
    run_dir = Path(run_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _write_json(run_dir / "corruption_manifest.json", manifest)
    if filter_result is not None:
        _save_filter(run_dir, data, filter_result)
    test_scores = pd.DataFrame(
        {
            "sample_id": [s.sample_id for s in data.test],
            "label": [s.label for s in data.test],
            "defect_type": [s.defect_type for s in data.test],
            "injected_in_train": [
                s.sample_id in set(data.injected_ids) for s in data.test
            ],
            "image_score": prediction.image_scores,
        }
    )
    test_scores.to_csv(run_dir / "test_scores.csv", index=False)
    _write_json(run_dir / "metrics.json", metrics)
    logger.info("run outputs written to %s", run_dir)


def _save_filter(run_dir: Path, data: CategoryData, result: FilterResult) -> None:
    injected = set(data.injected_ids)
    labels = {s.sample_id: s.label for s in data.train}
    summary = result.summary.copy()
    summary.insert(1, "injected", summary.sample_id.isin(injected))
    summary.insert(2, "label", summary.sample_id.map(labels))
    summary.to_csv(run_dir / "filter_summary.csv", index=False)
    result.bags.to_csv(run_dir / "bags.csv", index=False)
    result.decisions.to_csv(run_dir / "filter_decisions.csv", index=False)
    result.thresholds.to_csv(run_dir / "filter_thresholds.csv", index=False)


def _write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    msg = f"cannot write {type(value).__name__} to JSON"
    raise TypeError(msg)


def format_results_table(
    method: str, detector: str, data: CategoryData, metrics: dict[str, Any]
) -> str:
    """Return a plain-text table of the run's metrics."""
    ratio = metrics.get("ratio_reached")
    ratio_text = "n/a" if ratio is None else f"{100 * ratio:.1f}%"
    if ratio is not None and metrics.get("ratio_base") == "train_before":
        ratio_text += " of the clean training set"
    lines = [
        f"{method} + {detector} on {data.dataset}/{data.category}",
        f"training images: {metrics['n_train']} ({metrics['n_injected']} injected "
        f"anomalies, {ratio_text}), kept for the final model: {metrics['n_kept']}",
        "",
        f"{'metric':<18}{'value':>8}",
        f"{'-' * 18}{'-' * 8}",
    ]
    for key, label in METRIC_LABELS.items():
        lines.append(f"{label:<18}{_format_value(metrics.get(key)):>8}")
    per_type = metrics.get("per_defect_type")
    if per_type:
        lines += ["", f"{'defect type':<24}{'I-AUROC':>9}{'P-AUROC':>9}{'AUPRO':>9}"]
        for defect_type, values in per_type.items():
            cells = [
                _format_value(values.get(key))
                for key in ("image_auroc", "pixel_auroc", "pixel_aupro")
            ]
            lines.append(f"{defect_type:<24}" + "".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)


def _format_value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
