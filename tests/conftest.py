"""Shared fixtures: paths to the real data shipped beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def bottle_root() -> Path:
    """Root of the real MVTec AD folder holding the bottle category."""
    root = SHARED_DATA / "mvtec_ad"
    if not (root / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"real MVTec AD bottle images not found under {root}")
    return root
