"""Time PatchCore, BAAF(1/4) and BAAF(3/4) side by side in one process.

Phases, each on the same corrupted training set and with a fresh feature cache
so that every phase pays its own feature extraction:

1. backbone forward over the training images (the floor),
2. plain PatchCore training,
3. BAAF(1/4) training (4 bag models, out-of-bag scoring, final model),
4. BAAF(3/4) training,
5. inference per test image for the plain and the BAAF(1/4) model (features
   extracted during the timed call), the median of ``--repeats`` runs taken in
   turns.

For each phase it prints the wall time, the ratio to plain PatchCore training
(inference: to plain PatchCore inference) and the peak resident memory of the
process during that phase (Linux ``VmHWM``, reset between phases).

Example::

    python scripts/benchmark.py --root ../shared/data/mvtec_ad --category bottle
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from baaf.filter import BaggingAnomalyFilter
from datasets import load_category
from datasets.corruption import corrupt
from detectors.backbones import create_backbone
from detectors.coreset import greedy_coreset_indices
from detectors.features import FeatureExtractor
from detectors.patchcore import PatchCore

logger = logging.getLogger("benchmark")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--root",
        default="../shared/data/mvtec_ad",
        help="dataset root folder; the default is the real MVTec AD data beside "
        "the repository, a run of a few minutes on 2 cores",
    )
    parser.add_argument("--category", default="bottle", help="category name")
    parser.add_argument("--dataset", default="mvtec_ad", help="dataset loader name")
    parser.add_argument(
        "--ratio",
        type=float,
        default=0.1,
        help="share of the corrupted training set that is injected anomalies, "
        "in [0, 1)",
    )
    parser.add_argument(
        "--coreset-ratio",
        type=float,
        default=0.1,
        help="share of patch embeddings kept in the memory bank, in (0, 1]",
    )
    parser.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm name")
    parser.add_argument(
        "--layers", default="2,3", help="timm out_indices, comma separated"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of bags and coreset")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="folder for the corruption manifest; a new temporary folder when unset",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="inference runs per model (median)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if not 0.0 <= args.ratio < 1.0:
        parser.error(f"--ratio must be in [0, 1), got {args.ratio}")
    if not 0.0 < args.coreset_ratio <= 1.0:
        parser.error(f"--coreset-ratio must be in (0, 1], got {args.coreset_ratio}")
    try:
        args.layers = tuple(int(layer) for layer in args.layers.split(","))
    except ValueError:
        parser.error(
            f"--layers must be integers separated by commas, got {args.layers!r}"
        )
    return args


def reset_peak_memory() -> None:
    """Reset the process's peak resident set size (Linux only)."""
    try:
        Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")
    except OSError:
        logger.warning("cannot reset peak memory; peaks are cumulative")


def peak_memory_mb() -> float:
    """Return the peak resident set size since the last reset, in MiB."""
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(label: str, action: Callable[[], object]) -> tuple[object, float, float]:
    """Run ``action`` and return its result, seconds and peak memory in MiB."""
    reset_peak_memory()
    start = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - start
    peak = peak_memory_mb()
    logger.info("%s: %.1f s, peak %.0f MiB", label, seconds, peak)
    return result, seconds, peak


def compile_coreset_loop() -> None:
    """Compile (or load from numba's cache) the coreset loop before any phase.

    Every process pays this once; without it the first timed phase would.
    """
    points = np.random.default_rng(0).normal(size=(2000, 8)).astype(np.float32)
    greedy_coreset_indices(points, ratio=0.01)


def time_inference(
    models: dict[str, PatchCore], test: list, repeats: int
) -> dict[str, tuple[float, float]]:
    """Return the median seconds and largest peak MiB of ``predict`` per model.

    Models take turns, each with an empty feature cache every time, so both pay
    feature extraction and share whatever else the machine is doing.
    """
    seconds = {label: [] for label in models}
    peaks = {label: [] for label in models}
    for _ in range(repeats):
        for label, model in models.items():
            model.extractor = FeatureExtractor(
                model.extractor.backbone_name, model.extractor.layers, weights="auto"
            )
            _, elapsed, peak = timed(f"{label} inference", partial(model.predict, test))
            seconds[label].append(elapsed)
            peaks[label].append(peak)
    return {
        label: (float(np.median(seconds[label])), max(peaks[label])) for label in models
    }


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    layers = args.layers
    try:
        create_backbone(args.backbone, layers, weights="none")
        clean = load_category(args.dataset, Path(args.root), args.category)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    # Without --cache-dir the manifest goes to a folder removed after use.
    with tempfile.TemporaryDirectory(prefix="baaf-bench-") as scratch:
        cache_dir = Path(args.cache_dir or scratch)
        data, _ = corrupt(clean, args.ratio, args.seed, cache_dir)
    train, test = data.train, data.test

    def new_extractor() -> FeatureExtractor:
        return FeatureExtractor(args.backbone, layers, weights="auto")

    def patchcore(extractor: FeatureExtractor) -> PatchCore:
        return PatchCore(extractor, coreset_ratio=args.coreset_ratio, seed=args.seed)

    def baaf_training(votes: int) -> PatchCore:
        extractor = new_extractor()
        result = BaggingAnomalyFilter(
            lambda bag: patchcore(extractor), n_bags=4, n_votes=votes, seed=args.seed
        ).run(train)
        kept = [train[i] for i in result.kept_indices]
        return patchcore(extractor).fit(kept)

    rows = []
    _, seconds, _ = timed("coreset compilation", compile_coreset_loop)
    print(f"numba compilation or cache load of the coreset loop: {seconds:.1f} s")
    floor_extractor = new_extractor()
    _, seconds, peak = timed(
        "backbone forward", lambda: floor_extractor.layer_maps(train)
    )
    rows.append(("backbone forward over training images", seconds, peak, "train"))
    plain, seconds, peak = timed(
        "PatchCore", lambda: patchcore(new_extractor()).fit(train)
    )
    rows.append(("PatchCore training", seconds, peak, "train"))
    baaf14, seconds, peak = timed("BAAF(1/4)", lambda: baaf_training(1))
    rows.append(("BAAF(1/4) + PatchCore training", seconds, peak, "train"))
    _, seconds, peak = timed("BAAF(3/4)", lambda: baaf_training(3))
    rows.append(("BAAF(3/4) + PatchCore training", seconds, peak, "train"))
    models = {"PatchCore": plain, "BAAF(1/4) + PatchCore": baaf14}
    for label, (seconds, peak) in time_inference(models, test, args.repeats).items():
        rows.append(
            (f"{label} inference per test image", seconds / len(test), peak, "infer")
        )

    print_table(rows, args, len(train), len(test))
    return [dict(zip(("phase", "seconds", "peak_mib", "kind"), row)) for row in rows]


def print_table(
    rows: list[tuple], args: argparse.Namespace, n_train: int, n_test: int
) -> None:
    plain_train = next(r[1] for r in rows if r[0] == "PatchCore training")
    plain_infer = next(r[1] for r in rows if r[0].startswith("PatchCore inference"))
    print(
        f"{args.dataset}/{args.category}: {n_train} training images "
        f"({args.ratio:.0%} injected), {n_test} test images; {args.backbone} "
        f"layers {','.join(map(str, args.layers))}, coreset {args.coreset_ratio}; "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    print()
    print("| phase | time | ratio to plain PatchCore | peak memory (MiB) |")
    print("|---|---|---|---|")
    for phase, seconds, peak, kind in rows:
        reference = plain_train if kind == "train" else plain_infer
        unit = f"{seconds:.1f} s" if kind == "train" else f"{1000 * seconds:.1f} ms"
        print(f"| {phase} | {unit} | {seconds / reference:.2f}x | {peak:.0f} |")


if __name__ == "__main__":
    main()
