"""Loader for the UCSD Ped2 video anomaly dataset, one sample per frame.

Layout of the extracted archive (``UCSD_Anomaly_Dataset.v1p2``)::

    <root>/UCSDped2/Train/Train001/001.tif ...       (16 clips, nominal only)
    <root>/UCSDped2/Test/Test001/001.tif ...         (12 clips)
    <root>/UCSDped2/Test/Test001_gt/001.bmp ...      (optional pixel masks)
    <root>/UCSDped2/Test/UCSDped2.m                  (frame-level labels)

``UCSDped2.m`` contains one ``gt_frame`` entry per test clip, in clip order, listing
the 1-based anomalous frames as MATLAB ranges such as ``[61:180]``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from datasets._layout import (
    list_subdirs,
    require_category,
    require_images,
    require_root,
)
from datasets.base import ANOMALOUS, NOMINAL, CategoryData, Sample
from datasets.errors import DatasetLayoutError, DatasetNotFoundError
from datasets.image_io import list_images

logger = logging.getLogger(__name__)

DATASET = "ucsd_ped2"
GT_SUFFIX = "_gt"
ANOMALY = "anomaly"

_ENTRY = re.compile(r"gt_frame\s*=\s*\[([^\]]*)\]")
_RANGE = re.compile(r"^(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_gt_frames(path: Path) -> list[set[int]]:
    """Read the anomalous frame numbers of each test clip from a UCSD ``.m`` file.

    Entries such as ``[61:180]``, ``[5:90, 140:200]``, ``[3 4 9]`` and MATLAB's
    ``start:step:stop`` are accepted. Lines starting with ``%`` are comments.

    Returns
    -------
    list of set of int
        1-based frame numbers, one set per ``gt_frame`` entry in file order.

    Raises
    ------
    DatasetNotFoundError
        If the file does not exist.
    DatasetLayoutError
        If it has no ``gt_frame`` entry or an entry is not a list of ranges.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(
            f"UCSD ground-truth file not found: {path}; it ships in the archive as "
            "UCSDped2/Test/UCSDped2.m, or pass its location as gt_file"
        )
    lines = path.read_text(errors="replace").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("%"))
    entries = _ENTRY.findall(text)
    if not entries:
        raise DatasetLayoutError(f"{path} contains no 'gt_frame = [...]' entry")
    return [_parse_ranges(path, entry) for entry in entries]


def load_ucsd_ped2(
    root: Path, category: str = "UCSDped2", gt_file: Path | None = None
) -> CategoryData:
    """Load UCSD Ped2 with one sample per frame and one group per clip.

    Sample ids are ``<split>/<clip>/<frame stem>``, for example
    ``"test/Test004/017"``; ``group_id`` is the clip name. Anomalous frames have
    defect type ``"anomaly"``. Pixel masks are attached where a ``TestNNN_gt``
    folder exists, and ``has_pixel_masks`` is True only when every test clip
    with anomalous frames has one.

    Parameters
    ----------
    root : Path
        Folder that contains ``category``, for example the extracted
        ``UCSD_Anomaly_Dataset.v1p2``.
    category : str, default "UCSDped2"
        Dataset folder name.
    gt_file : Path or None, default None
        Frame-label file; None uses ``<root>/<category>/Test/UCSDped2.m``.

    Raises
    ------
    DatasetNotFoundError
        If a folder, the label file or a mask frame is missing.
    DatasetLayoutError
        If the label file lists another number of clips than ``Test`` holds, or
        frames beyond a clip's length.
    """
    folder = require_category(require_root(root, DATASET), category, DATASET)
    gt_path = Path(gt_file) if gt_file is not None else folder / "Test" / "UCSDped2.m"

    train = _load_clips(folder / "Train", "train", labels=None)
    test_clips = _list_clips(folder / "Test")
    labels = dict(zip(test_clips, _match_labels(gt_path, test_clips), strict=True))
    test = _load_clips(folder / "Test", "test", labels)
    has_masks = _has_all_masks(folder / "Test", test)

    logger.info(
        "Loaded %s: %d train frames, %d test frames (%d anomalous), pixel masks %s",
        DATASET,
        len(train),
        len(test),
        sum(s.label for s in test),
        has_masks,
    )
    return CategoryData(DATASET, category, train, test, has_pixel_masks=has_masks)


def _parse_ranges(path: Path, entry: str) -> set[int]:
    frames: set[int] = set()
    for token in re.split(r"[\s,;]+", entry.strip()):
        if not token:
            continue
        match = _RANGE.match(token)
        if match is None:
            raise DatasetLayoutError(
                f"{path}: cannot parse {token!r} in gt_frame [{entry}]; expected "
                "frame numbers or MATLAB ranges such as 61:180"
            )
        start, second, third = match.groups()
        if third is not None:
            frames.update(range(int(start), int(third) + 1, int(second)))
        else:
            frames.update(range(int(start), int(second or start) + 1))
    return frames


def _list_clips(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise DatasetNotFoundError(
            f"UCSD clip folder not found: {split_dir}; the root must contain "
            "Train and Test folders of clips"
        )
    clips = [name for name in list_subdirs(split_dir) if not name.endswith(GT_SUFFIX)]
    if not clips:
        raise DatasetNotFoundError(f"{split_dir} contains no clip folders")
    return clips


def _match_labels(gt_path: Path, clips: list[str]) -> list[set[int]]:
    entries = parse_gt_frames(gt_path)
    if len(entries) != len(clips):
        raise DatasetLayoutError(
            f"{gt_path} lists {len(entries)} test clips but {len(clips)} clip "
            "folders were found; restore the missing clips or use the matching "
            "label file"
        )
    return entries


def _sorted_frames(clip_dir: Path) -> list[Path]:
    """List frames in temporal order, numerically when the stems are numbers."""
    frames = require_images(clip_dir, "video frame")
    if all(f.stem.isdigit() for f in frames):
        return sorted(frames, key=lambda f: int(f.stem))
    return frames


def _load_clips(
    split_dir: Path, split: str, labels: dict[str, set[int]] | None
) -> list[Sample]:
    samples = []
    for clip in _list_clips(split_dir):
        frames = _sorted_frames(split_dir / clip)
        anomalous = (labels or {}).get(clip, set())
        _check_frame_numbers(split_dir / clip, anomalous, len(frames))
        masks = _index_masks(split_dir / f"{clip}{GT_SUFFIX}")
        for number, frame in enumerate(frames, start=1):
            label = ANOMALOUS if number in anomalous else NOMINAL
            samples.append(_frame_sample(split, clip, frame, label, masks))
    return samples


def _check_frame_numbers(clip_dir: Path, anomalous: set[int], n_frames: int) -> None:
    beyond = sorted(n for n in anomalous if n < 1 or n > n_frames)
    if beyond:
        raise DatasetLayoutError(
            f"frame labels of {clip_dir} name frames {beyond[:5]}, but the clip "
            f"has frames 1 to {n_frames}; check that the label file matches the clips"
        )


def _index_masks(gt_dir: Path) -> dict[str, Path] | None:
    """Map frame stems to mask files, or return None when the clip has no masks.

    NOTE: masks are matched to frames by file stem (001.bmp for 001.tif). This
    naming was not checked against the real archive.
    """
    if not gt_dir.is_dir():
        return None
    return {path.stem: path for path in list_images(gt_dir)}


def _frame_sample(
    split: str, clip: str, frame: Path, label: int, masks: dict[str, Path] | None
) -> Sample:
    mask_paths = ()
    if label == ANOMALOUS and masks is not None:
        mask_paths = (_frame_mask(masks, frame),)
    return Sample(
        sample_id=f"{split}/{clip}/{frame.stem}",
        image_path=frame,
        label=label,
        mask_paths=mask_paths,
        defect_type=ANOMALY if label == ANOMALOUS else "good",
        split=split,
        group_id=clip,
    )


def _frame_mask(masks: dict[str, Path], frame: Path) -> Path:
    if frame.stem in masks:
        return masks[frame.stem]
    gt_dir = frame.parent.with_name(f"{frame.parent.name}{GT_SUFFIX}")
    raise DatasetNotFoundError(
        f"mask of anomalous frame {frame} not found: expected {gt_dir}/"
        f"{frame.stem}.bmp (or another image extension)"
    )


def _has_all_masks(test_dir: Path, test: list[Sample]) -> bool:
    clips = sorted({s.group_id for s in test if s.label == ANOMALOUS})
    missing = [c for c in clips if not (test_dir / f"{c}{GT_SUFFIX}").is_dir()]
    if missing and len(missing) < len(clips):
        logger.warning(
            "Pixel masks missing for test clips %s: pixel metrics unavailable",
            missing,
        )
    return not missing
