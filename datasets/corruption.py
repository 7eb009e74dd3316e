"""Seeded injection of anomalous test images into the training set.

The chosen test sample ids are saved as a JSON manifest under the cache folder.
Every later call with the same settings reuses it, so all detectors of one
experiment train on the same corrupted set, even if this module's random draws
change.

Injected samples keep their test sample id (``"test/<defect_type>/<stem>"``).
Training ids start with ``"train/"``, so the ids stay unique inside the
training set, and ``CategoryData.injected_ids`` lists exactly the training ids
that are anomalies.

Grouped data (video clips, where samples share a ``group_id``) is corrupted by
whole groups: a test clip with at least one anomalous frame is injected with
all its frames, and the ratio counts clips.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from datasets.base import ANOMALOUS, CategoryData, Sample

logger = logging.getLogger(__name__)

RATIO_BASES = ("train_after", "train_before")
MODES = ("iid", "not_iid")
COMBINED_DEFECT_TYPE = "combined"
# Keys that apply_manifest and the consistency checks read.
_REQUIRED_KEYS = ("dataset", "category", "n_train_clean", "overlap", "injected_ids")


class ManifestError(ValueError):
    """A cached corruption manifest does not match the data it is applied to."""


def corrupt(
    data: CategoryData,
    ratio: float,
    seed: int,
    cache_dir: Path,
    ratio_base: str = "train_after",
    overlap: bool = True,
    mode: str = "iid",
) -> tuple[CategoryData, dict]:
    """Move a seeded share of anomalous test images into the training set.

    Parameters
    ----------
    data : CategoryData
        Clean category, as a loader returns it.
    ratio : float
        Requested share of anomalies, in [0, 1). Zero injects nothing.
    seed : int
        Non-negative seed of the draw.
    cache_dir : Path
        The manifest is read from, or written to,
        ``cache_dir/corruption/<dataset>/<category>/<key>.json``.
    ratio_base : {"train_after", "train_before"}, default "train_after"
        ``"train_after"``: ``ratio`` is the anomalous share of the resulting
        training set, so ``k = round(ratio * n_train / (1 - ratio))``.
        ``"train_before"``: ``ratio`` is relative to the clean training set
        (SoftPatch's meaning), so ``k = round(ratio * n_train)``. Counts are
        rounded half up.
    overlap : bool, default True
        True keeps the injected images in the test set; False removes them.
    mode : {"iid", "not_iid"}, default "iid"
        ``"not_iid"`` draws only from the defect type with the most anomalous
        test images (ties go to the name that sorts first) plus a type named
        ``"combined"`` where one exists.

    Returns
    -------
    corrupted : CategoryData
        Training set with the injected samples appended in draw order, and
        ``injected_ids`` set.
    manifest : dict
        The manifest as saved.

    Raises
    ------
    ValueError
        If ``ratio``, ``ratio_base``, ``mode`` or ``seed`` is invalid, or ``data``
        is already corrupted.
    ManifestError
        If a cached manifest lists ids that ``data`` lacks, or was drawn for a
        training set of another size.

    Warns
    -----
    UserWarning
        When there are too few candidates for the requested ratio; all of them
        are used and the manifest records the ratio reached.

    Notes
    -----
    The not-i.i.d. mode reads "largest defect type" as the type with the most
    images. NOTE: the BAAF paper calls it the "largest-anomaly category", which
    could instead mean the type with the largest defect area.
    """
    _validate_settings(data, ratio, seed, ratio_base, mode)
    path = manifest_path(cache_dir, data, ratio, seed, ratio_base, overlap, mode)

    if path.is_file():
        manifest = read_manifest(path, data)
        logger.info("Reusing corruption manifest %s", path)
        for message in manifest.get("warnings", []):
            warnings.warn(message, UserWarning, stacklevel=2)
    else:
        manifest = draw_manifest(data, ratio, seed, ratio_base, overlap, mode)
        _write_manifest(path, manifest)
        logger.info("Wrote corruption manifest %s", path)

    corrupted = apply_manifest(data, manifest)
    logger.info(
        "Injected %d test samples into %s/%s training (ratio reached %.4f, "
        "requested %.4f, base %s): %s",
        len(manifest["injected_ids"]),
        data.dataset,
        data.category,
        manifest["ratio_reached"],
        ratio,
        ratio_base,
        manifest.get("injected_groups", manifest["injected_ids"]),
    )
    return corrupted, manifest


def manifest_path(
    cache_dir: Path,
    data: CategoryData,
    ratio: float,
    seed: int,
    ratio_base: str,
    overlap: bool,
    mode: str,
) -> Path:
    """Return the manifest file for these settings under ``cache_dir``."""
    key = (
        f"ratio{float(ratio)!r}_{ratio_base}_{mode}_overlap{int(bool(overlap))}"
        f"_seed{seed}"
    )
    folder = Path(cache_dir) / "corruption" / data.dataset / data.category
    return folder / f"{key}.json"


def draw_manifest(
    data: CategoryData,
    ratio: float,
    seed: int,
    ratio_base: str,
    overlap: bool,
    mode: str,
) -> dict:
    """Draw the injected test samples and describe them as a manifest.

    The candidate groups are sorted by id and permuted once with
    ``numpy.random.default_rng(seed)``, and the first ``k`` are injected. A
    higher ratio with the same seed therefore injects a superset.
    """
    n_train = len(_group_ids(data.train))
    candidates, defect_types = _candidate_groups(data.test, mode)
    n_requested = _requested_count(ratio, n_train, ratio_base)

    order = np.random.default_rng(seed).permutation(len(candidates))
    drawn = [candidates[i] for i in order[:n_requested]]
    injected_ids = [s.sample_id for g in drawn for s in _members(data.test, g)]

    n_injected = len(drawn)
    reached = _reached_ratio(n_injected, n_train, ratio_base)
    messages = []
    if n_injected < n_requested:
        messages.append(_cap_message(data, ratio, n_requested, n_injected, reached))
        warnings.warn(messages[-1], UserWarning, stacklevel=3)

    return {
        "dataset": data.dataset,
        "category": data.category,
        "ratio_requested": float(ratio),
        "ratio_reached": reached,
        "ratio_base": ratio_base,
        "overlap": bool(overlap),
        "mode": mode,
        "seed": int(seed),
        "unit": "group" if _is_grouped(data) else "image",
        "n_train_clean": n_train,
        "n_candidates": len(candidates),
        "n_requested": n_requested,
        "candidate_defect_types": defect_types,
        "injected_groups": drawn,
        "injected_ids": injected_ids,
        "warnings": messages,
    }


def read_manifest(path: Path, data: CategoryData) -> dict:
    """Read a manifest and check that it fits ``data``.

    Raises
    ------
    ManifestError
        If the file is not valid JSON, lacks a key, names another dataset or
        category, was drawn for another training-set size, or lists an id twice
        or one that is missing from the test set of ``data``.
    """
    try:
        manifest = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ManifestError(_stale(path, f"it is not valid JSON ({error})")) from error

    missing_keys = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing_keys:
        raise ManifestError(_stale(path, f"it lacks the keys {missing_keys}"))
    if (manifest.get("dataset"), manifest.get("category")) != (
        data.dataset,
        data.category,
    ):
        raise ManifestError(_stale(path, "it names another dataset or category"))

    n_train = len(_group_ids(data.train))
    if manifest.get("n_train_clean") != n_train:
        reason = (
            f"it was drawn for {manifest.get('n_train_clean')} training units, "
            f"but the data has {n_train}"
        )
        raise ManifestError(_stale(path, reason))

    injected_ids = manifest["injected_ids"]
    test_ids = {s.sample_id for s in data.test}
    missing = [i for i in injected_ids if i not in test_ids]
    if missing:
        reason = f"its ids {missing[:5]} are not in the test set"
        raise ManifestError(_stale(path, reason))
    if len(set(injected_ids)) != len(injected_ids):
        raise ManifestError(_stale(path, "it lists an id more than once"))
    return manifest


def apply_manifest(data: CategoryData, manifest: dict) -> CategoryData:
    """Return ``data`` with the manifest's test samples appended to training."""
    test_by_id = {s.sample_id: s for s in data.test}
    injected = [test_by_id[i] for i in manifest["injected_ids"]]

    clashes = {s.sample_id for s in data.train} & set(manifest["injected_ids"])
    if clashes:
        raise ValueError(
            f"injected ids {sorted(clashes)[:5]} already exist in the training set "
            f"of {data.dataset}/{data.category}; the loader must give training and "
            "test samples distinct ids"
        )

    test = data.test
    if not manifest["overlap"]:
        removed = set(manifest["injected_ids"])
        test = [s for s in data.test if s.sample_id not in removed]
        _warn_emptied_defect_types(data.test, test)
    return data.with_split(data.train + injected, test, manifest["injected_ids"])


def _warn_emptied_defect_types(before: list[Sample], after: list[Sample]) -> None:
    """Warn when moving images out of the test set leaves a defect type empty."""
    remaining = {s.defect_type for s in after if s.label == ANOMALOUS}
    emptied = sorted(
        {s.defect_type for s in before if s.label == ANOMALOUS} - remaining
    )
    if emptied:
        message = (
            f"overlap=false moved every test image of defect type(s) {emptied} into "
            "training, so the test set has none of them; lower corruption.ratio or "
            "use corruption.overlap=true"
        )
        logger.warning(message)
        warnings.warn(message, UserWarning, stacklevel=3)


def _validate_settings(
    data: CategoryData, ratio: float, seed: int, ratio_base: str, mode: str
) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    if ratio_base not in RATIO_BASES:
        raise ValueError(f"ratio_base must be one of {RATIO_BASES}, got {ratio_base!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if data.injected_ids:
        raise ValueError(
            f"{data.dataset}/{data.category} is already corrupted "
            f"({len(data.injected_ids)} injected samples); corrupt the clean data "
            "from the loader instead"
        )


def _requested_count(ratio: float, n_train: int, ratio_base: str) -> int:
    if ratio_base == "train_after":
        exact = ratio * n_train / (1.0 - ratio)
    else:
        exact = ratio * n_train
    return math.floor(exact + 0.5)


def _reached_ratio(n_injected: int, n_train: int, ratio_base: str) -> float:
    if ratio_base == "train_after":
        total = n_train + n_injected
    else:
        total = n_train
    return n_injected / total if total else 0.0


def _candidate_groups(
    test: list[Sample], mode: str
) -> tuple[list[str], list[str] | None]:
    """Return the sorted candidate group ids and the defect types they may have.

    The defect type list is None in the i.i.d. mode, where every type counts.
    """
    anomalous = [s for s in test if s.label == ANOMALOUS]
    allowed = None
    if mode == "not_iid":
        allowed = _not_iid_defect_types(anomalous)
    groups = {
        s.group_id for s in anomalous if allowed is None or s.defect_type in allowed
    }
    return sorted(groups), allowed


def _not_iid_defect_types(anomalous: list[Sample]) -> list[str]:
    counts = Counter(s.defect_type for s in anomalous)
    counts.pop(COMBINED_DEFECT_TYPE, None)
    types = []
    if counts:
        largest = min(counts, key=lambda t: (-counts[t], t))
        types.append(largest)
    if any(s.defect_type == COMBINED_DEFECT_TYPE for s in anomalous):
        types.append(COMBINED_DEFECT_TYPE)
    return types


def _group_ids(samples: list[Sample]) -> list[str]:
    return list(dict.fromkeys(s.group_id for s in samples))


def _members(samples: list[Sample], group_id: str) -> list[Sample]:
    return [s for s in samples if s.group_id == group_id]


def _is_grouped(data: CategoryData) -> bool:
    samples = data.train + data.test
    return len(_group_ids(samples)) < len(samples)


def _cap_message(
    data: CategoryData, ratio: float, n_requested: int, n_injected: int, reached: float
) -> str:
    return (
        f"{data.dataset}/{data.category}: ratio {ratio} needs {n_requested} "
        f"anomalous test units but only {n_injected} are available; all of them "
        f"are injected and the ratio reached is {reached:.4f}"
    )


def _stale(path: Path, reason: str) -> str:
    return (
        f"corruption manifest {path} does not fit the loaded data: {reason}; "
        "delete the file to draw a new manifest"
    )


def _write_manifest(path: Path, manifest: dict) -> None:
    """Write the manifest atomically, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(staging, path)
