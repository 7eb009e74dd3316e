"""Score saved detector outputs with the BAAF metrics.

The command reads image scores, and optionally anomaly maps and ground-truth
masks, from files, so that results of other tools are scored by the same code
as BAAF runs. It needs the ``baaf`` package importable, for example after
``pip install -e .`` in the repository root::

    python scripts/evaluate.py --scores scores.csv --maps maps.npz \\
        --gt-csv gt.csv --map-frame center_crop --crop-fraction 0.875 --out m.json

Input files
-----------
``--scores`` (required)
    CSV with one row per test image and the columns ``sample_id`` and
    ``image_score`` (higher means more anomalous), plus an optional ``label``
    column (0 nominal, 1 anomalous). Its row order sets the image order.
``--maps``
    Anomaly maps as 2-D float arrays of shape (h, w), whose size may differ
    per image. Either a ``.npz`` archive keyed by sample id, as written by
    ``np.savez(path, **{sample_id: anomaly_map})``, or a folder holding one
    ``<sample_id>.npy`` file per image, where a ``/`` in an id is a subfolder.
    There must be exactly one map per row of the scores CSV.
``--gt-csv``
    CSV with the columns ``sample_id`` and ``label`` and an optional
    ``mask_path`` column, with one row per row of the scores CSV. A mask path
    is a PNG image at the original image size in which any non-zero pixel is
    anomalous. Relative paths start from the CSV's folder. Several paths
    joined by ``;`` are merged by union. An empty path means an image without
    anomalous pixels and is allowed only for label 0. Without a ``mask_path``
    column only the image AUROC is computed.
``--masks``
    Alternative to ``--gt-csv``: a folder with one ``<sample_id>.png`` mask
    per image that has anomalous pixels. A missing file means an all-nominal
    mask. Labels come from the ``label`` column of the scores CSV or, where
    that column is missing, from whether the mask has an anomalous pixel.
``--removed-ids`` and ``--injected-ids``
    Text files with one sample id per line: the training images that a
    filter removed and the anomalies injected into the training set. They
    give ``filter_precision`` and ``filter_recall``.

Where both the scores CSV and ``--gt-csv`` give labels, they must agree.

Output
------
A JSON object with the keys ``image_auroc``, ``pixel_auroc``, ``pixel_aupro``,
``filter_precision`` and ``filter_recall``, written to ``--out`` or stdout. A
metric is ``null`` when its inputs were not given or it is undefined for them
(for example, no anomalous pixel), because JSON has no NaN. Errors in the
input files are reported on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from baaf.metrics import MAP_FRAMES, evaluate, filter_precision_recall
from datasets.image_io import read_mask

logger = logging.getLogger(__name__)

MASK_PATH_SEPARATOR = ";"
_MAX_LISTED_IDS = 5


@dataclass
class GroundTruth:
    """Labels and masks of the test images, in the order of the scores CSV.

    Attributes
    ----------
    labels : ndarray of shape (n_images,), int
        ``1`` for anomalous images, ``0`` for nominal ones.
    masks : list of ndarray of shape (H_i, W_i), bool, or None
        Masks at the original image size, or None without pixel labels.
    """

    labels: np.ndarray
    masks: list[np.ndarray] | None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` and return the exit status."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.captureWarnings(True)
    try:
        metrics = _compute_metrics(args)
    except (ValueError, OSError) as error:
        logger.error("%s", error)
        return 2
    finally:
        logging.captureWarnings(False)

    text = json.dumps(metrics, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        logger.info("wrote metrics to %s", args.out)
    return 0


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compute I-AUROC, P-AUROC, AUPRO and filter precision/recall "
        "from saved scores, anomaly maps and masks.",
        epilog="See the module docstring for the file formats.",
    )
    parser.add_argument(
        "--scores",
        type=Path,
        required=True,
        help="CSV: sample_id, image_score[, label]",
    )
    parser.add_argument(
        "--maps", type=Path, help=".npz keyed by sample id, or a folder of <id>.npy"
    )

    ground_truth = parser.add_mutually_exclusive_group()
    ground_truth.add_argument(
        "--gt-csv", type=Path, help="CSV: sample_id, label[, mask_path]"
    )
    ground_truth.add_argument(
        "--masks",
        type=Path,
        help="folder of <sample_id>.png masks; non-zero pixels are anomalous",
    )

    parser.add_argument(
        "--map-frame",
        choices=MAP_FRAMES,
        default="full",
        help="part of the image that the maps cover (default: full)",
    )
    parser.add_argument(
        "--crop-fraction",
        type=float,
        help="side of the maps' centre crop relative to the resized image; "
        "default crop/resize for center_crop maps",
    )
    parser.add_argument(
        "--resize",
        type=int,
        default=256,
        help="maps and masks are resized to this square side in pixels before "
        "pixel metrics (default 256, the MVTec protocol)",
    )
    parser.add_argument(
        "--crop",
        type=int,
        default=224,
        help="then centre cropped to this side (default 224), so defects in the "
        "outer border are not scored; set --crop equal to --resize to keep the "
        "whole image",
    )
    parser.add_argument(
        "--fpr-limit", type=float, default=0.3, help="FPR limit of AUPRO"
    )

    parser.add_argument(
        "--removed-ids", type=Path, help="text file: ids removed by a filter"
    )
    parser.add_argument(
        "--injected-ids", type=Path, help="text file: ids of injected anomalies"
    )

    parser.add_argument("--out", type=Path, help="JSON file to write (default: stdout)")

    args = parser.parse_args(argv)
    if (args.removed_ids is None) != (args.injected_ids is None):
        parser.error("--removed-ids and --injected-ids must be given together")
    return args


def _compute_metrics(args: argparse.Namespace) -> dict[str, float | None]:
    scores = _read_scores(args.scores)
    sample_ids = scores["sample_id"].tolist()
    score_labels = scores["label"].to_numpy() if "label" in scores else None

    ground_truth = _load_ground_truth(args, sample_ids, score_labels)
    anomaly_maps = None
    if args.maps is not None:
        anomaly_maps = _load_maps(args.maps, sample_ids, args.scores)
    if anomaly_maps is not None and ground_truth.masks is None:
        logger.info("no pixel masks given, so pixel metrics are skipped")

    crop_fraction = args.crop_fraction
    if crop_fraction is None:
        crop_fraction = (
            args.crop / args.resize if args.map_frame == "center_crop" else 1.0
        )
    metrics = evaluate(
        ground_truth.labels,
        scores["image_score"].to_numpy(),
        anomaly_maps,
        ground_truth.masks,
        args.map_frame,
        crop_fraction,
        has_pixel_masks=ground_truth.masks is not None,
        resize=args.resize,
        crop=args.crop,
        fpr_limit=args.fpr_limit,
    )

    precision = recall = None
    if args.removed_ids is not None:
        precision, recall = filter_precision_recall(
            _read_ids(args.removed_ids), _read_ids(args.injected_ids)
        )
    metrics["filter_precision"] = precision
    metrics["filter_recall"] = recall
    return {key: _json_value(value) for key, value in metrics.items()}


def _json_value(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return float(value)


def _read_scores(path: Path) -> pd.DataFrame:
    table = _read_table(path, required=("sample_id", "image_score"))
    table["image_score"] = pd.to_numeric(table["image_score"], errors="coerce")
    non_finite = table.loc[~np.isfinite(table["image_score"]), "sample_id"]
    if len(non_finite):
        raise ValueError(
            f"{path}: image_score is missing, not a number or infinite for "
            f"{_list_ids(non_finite)}; give a finite score in every row"
        )
    if "label" in table:
        table["label"] = _parse_labels(table, path)
    return table


def _read_table(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"CSV file {path} not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in required if column not in table]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; found {list(table.columns)}, "
            "so add the missing ones"
        )
    duplicates = table.loc[table["sample_id"].duplicated(), "sample_id"]
    if len(duplicates):
        raise ValueError(
            f"{path}: duplicate sample_id {_list_ids(duplicates)}; "
            "keep one row per image"
        )
    return table


def _parse_labels(table: pd.DataFrame, path: Path) -> np.ndarray:
    labels = table["label"].str.strip()
    invalid = table.loc[~labels.isin(["0", "1"]), "sample_id"]
    if len(invalid):
        raise ValueError(
            f"{path}: label must be 0 or 1, but is not for {_list_ids(invalid)}"
        )
    return labels.astype(int).to_numpy()


def _list_ids(ids: Sequence[str] | pd.Series | set[str]) -> str:
    ordered = sorted(ids)
    listed = ", ".join(repr(sample_id) for sample_id in ordered[:_MAX_LISTED_IDS])
    if len(ordered) > _MAX_LISTED_IDS:
        listed += f" and {len(ordered) - _MAX_LISTED_IDS} more"
    return listed


def _check_same_ids(
    found: set[str], expected: set[str], source: Path, scores_path: Path
) -> None:
    missing = expected - found
    extra = found - expected
    if missing:
        raise ValueError(
            f"{source} has no entry for {_list_ids(missing)} listed in {scores_path}"
        )
    if extra:
        raise ValueError(
            f"{source} has entries for {_list_ids(extra)}, which are not in "
            f"{scores_path}; give exactly one entry per row of {scores_path}"
        )


def _load_ground_truth(
    args: argparse.Namespace, sample_ids: list[str], score_labels: np.ndarray | None
) -> GroundTruth:
    if args.gt_csv is not None:
        ground_truth = _load_gt_csv(args.gt_csv, sample_ids, args.scores)
    elif args.masks is not None:
        ground_truth = _load_mask_folder(args.masks, sample_ids, score_labels)
    elif score_labels is not None:
        ground_truth = GroundTruth(labels=score_labels, masks=None)
    else:
        raise ValueError(
            f"{args.scores} has no label column; add one (0 nominal, 1 anomalous) "
            "or pass --gt-csv or --masks"
        )
    if score_labels is not None:
        _check_labels_agree(ground_truth.labels, score_labels, sample_ids, args)
    return ground_truth


def _check_labels_agree(
    labels: np.ndarray,
    score_labels: np.ndarray,
    sample_ids: list[str],
    args: argparse.Namespace,
) -> None:
    disagree = [
        sample_id
        for sample_id, label, score_label in zip(
            sample_ids, labels, score_labels, strict=True
        )
        if label != score_label
    ]
    if disagree:
        source = args.gt_csv if args.gt_csv is not None else args.masks
        raise ValueError(
            f"labels in {args.scores} and {source} disagree for {_list_ids(disagree)}"
        )


def _load_gt_csv(path: Path, sample_ids: list[str], scores_path: Path) -> GroundTruth:
    table = _read_table(path, required=("sample_id", "label"))
    _check_same_ids(set(table["sample_id"]), set(sample_ids), path, scores_path)
    table = table.set_index("sample_id", drop=False).loc[sample_ids]
    labels = _parse_labels(table, path)
    if "mask_path" not in table:
        return GroundTruth(labels=labels, masks=None)

    masks = []
    for sample_id, label, mask_field in zip(
        sample_ids, labels, table["mask_path"], strict=True
    ):
        mask_paths = [
            path.parent / part.strip()
            for part in mask_field.split(MASK_PATH_SEPARATOR)
            if part.strip()
        ]
        if not mask_paths and label == 1:
            raise ValueError(
                f"{path}: anomalous sample {sample_id!r} has no mask_path; give its "
                "mask, or drop the mask_path column to compute image AUROC only"
            )
        masks.append(_merge_masks(mask_paths, sample_id))
    return GroundTruth(labels=labels, masks=masks)


def _load_mask_folder(
    folder: Path, sample_ids: list[str], score_labels: np.ndarray | None
) -> GroundTruth:
    if not folder.is_dir():
        raise FileNotFoundError(f"mask folder {folder} not found")
    masks = []
    for index, sample_id in enumerate(sample_ids):
        mask_path = folder / f"{sample_id}.png"
        if mask_path.is_file():
            masks.append(_merge_masks([mask_path], sample_id))
        elif score_labels is not None and score_labels[index] == 1:
            raise FileNotFoundError(
                f"mask {mask_path} of anomalous sample {sample_id!r} not found; "
                "add it, or drop --masks to compute image AUROC only"
            )
        else:
            masks.append(_merge_masks([], sample_id))

    if score_labels is None:
        labels = np.array([int(mask.any()) for mask in masks])
    else:
        labels = score_labels
    return GroundTruth(labels=labels, masks=masks)


def _merge_masks(paths: list[Path], sample_id: str) -> np.ndarray:
    """Return the union of the masks in ``paths``, all nominal when it is empty."""
    if not paths:
        # Resizing keeps an all-zero mask all zero, so its size does not matter.
        return np.zeros((1, 1), dtype=bool)
    for mask_path in paths:
        if not mask_path.is_file():
            raise FileNotFoundError(f"mask {mask_path} of {sample_id!r} not found")
    with Image.open(paths[0]) as image:
        width, height = image.size
    # read_mask also checks that every further mask has the first one's size.
    return read_mask(paths, (height, width))


def _load_maps(
    source: Path, sample_ids: list[str], scores_path: Path
) -> list[np.ndarray]:
    if source.is_dir():
        paths = {
            path.relative_to(source).with_suffix("").as_posix(): path
            for path in source.rglob("*.npy")
        }
        _check_same_ids(set(paths), set(sample_ids), source, scores_path)
        maps = [np.load(paths[sample_id]) for sample_id in sample_ids]
    elif source.suffix == ".npz" and source.is_file():
        with np.load(source) as archive:
            _check_same_ids(set(archive.files), set(sample_ids), source, scores_path)
            maps = [archive[sample_id] for sample_id in sample_ids]
    else:
        raise FileNotFoundError(
            f"maps {source} not found; pass a .npz file or a folder of .npy files"
        )
    for sample_id, anomaly_map in zip(sample_ids, maps, strict=True):
        if anomaly_map.ndim != 2 or anomaly_map.size == 0:
            raise ValueError(
                f"{source}: map of {sample_id!r} has shape {anomaly_map.shape}; "
                "save each map as a non-empty 2-D (height, width) array"
            )
    return maps


def _read_ids(path: Path) -> set[str]:
    if not path.is_file():
        raise FileNotFoundError(f"id list {path} not found")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


if __name__ == "__main__":
    sys.exit(main())
