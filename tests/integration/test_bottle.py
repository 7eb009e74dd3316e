"""The main job on the real MVTec AD bottle images (slow: several minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from baaf.runner import run_experiment

REPO_ROOT = Path(__file__).resolve().parents[2]


def bottle_config(tmp_path, bottle_root, overrides):
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"dataset.root={bottle_root}",
                "dataset.category=bottle",
                "corruption.ratio=0.1",
                f"paths.cache_dir={tmp_path / 'cache'}",
                "logger=none",
                *overrides,
            ],
        )


@pytest.mark.slow
def test_bottle_baseline_collapses_and_baaf_recovers(tmp_path, bottle_root):
    baseline = run_experiment(
        bottle_config(tmp_path, bottle_root, ["baaf.enabled=false"]), tmp_path / "base"
    )
    filtered = run_experiment(
        bottle_config(tmp_path, bottle_root, ["baaf.bags=4", "baaf.votes=1"]),
        tmp_path / "baaf",
    )
    assert baseline["n_injected"] == filtered["n_injected"] == 23
    assert baseline["image_auroc"] < 0.8
    assert filtered["image_auroc"] >= 0.97
    assert filtered["filter_recall"] >= 0.9
    assert filtered["pixel_aupro"] > baseline["pixel_aupro"]
