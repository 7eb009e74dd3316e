"""Writing of generated or converted folder trees that are reused when unchanged.

A tree carries a JSON stamp of the parameters that produced it. A later call with
the same parameters reuses the tree, and a call with other parameters replaces
it. Trees without a stamp are never deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from datasets.errors import DatasetLayoutError

logger = logging.getLogger(__name__)


def write_tree_once(
    target: Path, stamp: dict, write: Callable[[Path], None], stamp_name: str
) -> Path:
    """Write a tree to ``target`` unless a tree with the same stamp is there.

    ``write`` fills an empty staging folder next to ``target``. The stamp is
    written last and the staging folder then replaces any earlier stamped tree,
    so an interrupted run never leaves a stamped but incomplete tree.

    Parameters
    ----------
    target : Path
        Folder to create or replace.
    stamp : dict
        JSON-serialisable parameters of the tree.
    write : callable
        Called with the staging folder; writes the whole tree into it.
    stamp_name : str
        File name of the stamp inside the tree; starts with a dot so that image
        listings skip it.

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    DatasetLayoutError
        If ``target`` exists, is not empty and has no stamp file.
    """
    target = Path(target)
    if read_stamp(target, stamp_name) == stamp:
        logger.info("Reusing %s", target)
        return target
    _check_replaceable(target, stamp_name)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / stamp_name).write_text(json.dumps(stamp, indent=2) + "\n")

    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        # Another process finished the same tree first, so keep its copy.
        shutil.rmtree(staging, ignore_errors=True)
        if read_stamp(target, stamp_name) != stamp:
            raise
    logger.info("Wrote %s", target)
    return target


def read_stamp(target: Path, stamp_name: str) -> dict | None:
    """Return the stamp of the tree at ``target``, or None when it has none."""
    try:
        return json.loads((Path(target) / stamp_name).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _check_replaceable(target: Path, stamp_name: str) -> None:
    """Raise unless ``target`` is absent, empty, or a stamped tree."""
    if not target.exists():
        return
    is_empty = target.is_dir() and not any(target.iterdir())
    if not is_empty and not (target / stamp_name).is_file():
        raise DatasetLayoutError(
            f"{target} exists and was not written by this suite (no {stamp_name} "
            "file), so it is left untouched; choose another output folder"
        )
