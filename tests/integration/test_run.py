"""run.py through Hydra's compose API and as a script, on tiny synthetic data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from baaf.runner import run_experiment

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_SYNTHETIC = [
    "dataset.synthetic.n_train=16",
    "dataset.synthetic.n_test_good=4",
    "dataset.synthetic.n_defects_per_type=4",
    "dataset.synthetic.image_size=96",
    "logger=none",
    "detector.resize=128",
    "detector.input_size=112",
]


def compose_config(tmp_path: Path, overrides: list[str]):
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"paths.cache_dir={tmp_path / 'cache'}",
                *TINY_SYNTHETIC,
                *overrides,
            ],
        )


def test_baaf_run_writes_every_output(tmp_path):
    cfg = compose_config(tmp_path, ["baaf.bags=3", "baaf.votes=2"])
    run_dir = tmp_path / "run"
    metrics = run_experiment(cfg, run_dir)

    for name in [
        "config.yaml",
        "corruption_manifest.json",
        "bags.csv",
        "filter_decisions.csv",
        "filter_thresholds.csv",
        "filter_summary.csv",
        "test_scores.csv",
        "metrics.json",
        "results.txt",
    ]:
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["image_auroc"] == pytest.approx(metrics["image_auroc"])
    assert 0.0 <= saved["pixel_aupro"] <= 1.0
    assert saved["filter_recall"] is not None
    summary = pd.read_csv(run_dir / "filter_summary.csv")
    assert summary.injected.sum() == saved["n_injected"]
    assert len(summary) == saved["n_train"]
    assert saved["n_kept"] == int((~summary.removed).sum())
    bags = pd.read_csv(run_dir / "bags.csv")
    assert sorted(bags.vote.unique()) == [0, 1]
    scores = pd.read_csv(run_dir / "test_scores.csv")
    assert scores.injected_in_train.sum() == saved["n_injected"]


def test_baseline_run_has_no_filter_outputs(tmp_path):
    cfg = compose_config(tmp_path, ["baaf.enabled=false"])
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["filter_precision"] is None
    assert metrics["n_kept"] == metrics["n_train"]
    assert not (tmp_path / "run" / "bags.csv").exists()


def test_two_detectors_share_one_manifest(tmp_path):
    first = run_experiment(
        compose_config(tmp_path, ["baaf.enabled=false"]), tmp_path / "a"
    )
    second = run_experiment(
        compose_config(tmp_path, ["detector=padim", "baaf.bags=2"]), tmp_path / "b"
    )
    manifest_a = json.loads((tmp_path / "a" / "corruption_manifest.json").read_text())
    manifest_b = json.loads((tmp_path / "b" / "corruption_manifest.json").read_text())
    assert manifest_a == manifest_b
    assert first["n_injected"] == second["n_injected"] > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("corruption.ratio=1.0", "corruption.ratio must be in \\[0, 1\\), got 1.0"),
        ("corruption.ratio=-0.1", "corruption.ratio must be in \\[0, 1\\)"),
        ("baaf.bags=1", "baaf.bags must be at least 2, got 1"),
        ("baaf.bags=500", "baaf.bags=500 is more than the"),
        ("baaf.bags=four", "baaf.bags must be a number, got 'four'"),
        ("+baaf.bag=3", "unknown setting baaf.bag"),
        ("seed=1.5", "seed must be a whole number >= 0, got 1.5"),
        ("baaf.enabled='false'", "baaf.enabled must be true or false"),
        ("detector.num_neighbors=null", "detector.num_neighbors must be a whole"),
        ("detector.coreset_ratio=[1,2]", "detector.coreset_ratio must be a number"),
        ("detector.backbone.layers=abc", "detector.backbone.layers must be a list"),
        ("detector.batch_size=0", "detector.batch_size must be at least 1, got 0"),
        ("detector.input_size=300", "detector.input_size=300 must not exceed"),
        ("detector.device=nonsense", "detector.device must be cpu, cuda or"),
        ("detector.faiss_device=gpu", "detector.faiss_device must be cpu, cuda"),
        ("detector.smoothing_sigma=1e9", "exceeds the input size of 112 pixels"),
        ("detector.feature_cache_mb=-1", "detector.feature_cache_mb must be >= 0"),
    ],
)
def test_invalid_settings_stop_before_training(tmp_path, override, message):
    cfg = compose_config(tmp_path, [override])
    with pytest.raises(ValueError, match=message):
        run_experiment(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["detector.num_neighbors=0"], "num_neighbors must be at least 1, got 0"),
        (["detector.coreset_ratio=0"], "coreset_ratio must be in \\(0, 1\\], got 0"),
        (["detector.aggregation_kernel=2"], "aggregation_kernel must be an odd"),
        (["detector.embedding_dim=-1"], "embedding_dim must be at least 1 or null"),
        (["detector.backbone.layers=[2,9]"], "stages are \\[0, 1, 2, 3, 4\\]"),
        (["detector=padim", "detector.n_features=0"], "n_features must be at least 1"),
        (["detector=dfm", "detector.n_components=0"], "n_components must be an int"),
        (["detector=softpatch", "detector.noise_share=1.5"], "noise_share must be"),
        (["detector=inreach", "detector.distance_quantile=0"], "distance_quantile"),
    ],
)
def test_invalid_detector_settings_stop_before_data(tmp_path, overrides, message):
    cfg = compose_config(tmp_path, overrides)
    with pytest.raises(ValueError, match=message):
        run_experiment(cfg, tmp_path / "run")
    # The synthetic category and its manifest are written on first use.
    assert not (tmp_path / "cache").exists()


def test_run_py_input_error_without_traceback(tmp_path):
    command = [
        sys.executable,
        str(REPO_ROOT / "run.py"),
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *TINY_SYNTHETIC,
        "detector.num_neighbors=0",
    ]
    completed = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1
    assert "num_neighbors must be at least 1, got 0" in output
    assert "Traceback" not in output


def test_missing_dataset_root_named(tmp_path):
    missing = tmp_path / "nowhere"
    cfg = compose_config(
        tmp_path, [f"dataset.root={missing}", "dataset.category=bottle"]
    )
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_experiment(cfg, tmp_path / "run")


def test_unknown_category_named(tmp_path, synthetic_root):
    cfg = compose_config(
        tmp_path, [f"dataset.root={synthetic_root}", "dataset.category=nope"]
    )
    with pytest.raises(FileNotFoundError, match="nope"):
        run_experiment(cfg, tmp_path / "run")


def test_unreadable_image_stops_before_training(tmp_path, synthetic_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root / "tiny", root / "tiny")
    broken = root / "tiny" / "train" / "good" / "003.png"
    broken.write_bytes(broken.read_bytes()[:100])
    cfg = compose_config(tmp_path, [f"dataset.root={root}", "dataset.category=tiny"])
    with pytest.raises(ValueError, match="003.png"):
        run_experiment(cfg, tmp_path / "run")


def test_run_py_multirun_as_script(tmp_path):
    command = [
        sys.executable,
        str(REPO_ROOT / "run.py"),
        "-m",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *TINY_SYNTHETIC,
        "baaf.bags=2,3",
    ]
    completed = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    jobs = sorted((tmp_path / "sweep").glob("job_*"))
    assert len(jobs) == 2
    for job in jobs:
        assert (job / "metrics.json").is_file()
        assert (job / "run.log").is_file()
    assert "I-AUROC" in completed.stdout


def test_failed_run_log_names_the_error(tmp_path):
    import logging

    cfg = compose_config(tmp_path, ["corruption.ratio=1.5"])
    handler = logging.FileHandler(tmp_path / "run.log")
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(ValueError):
            run_experiment(cfg, tmp_path / "run")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert (
        "corruption.ratio must be in [0, 1), got 1.5"
        in (tmp_path / "run.log").read_text()
    )


def test_synthetic_settings_get_their_own_cache(tmp_path):
    from baaf.runner import data_cache_dir

    small = compose_config(tmp_path, [])
    other = compose_config(tmp_path, ["dataset.synthetic.n_train=12"])
    assert data_cache_dir(small) != data_cache_dir(other)
    assert data_cache_dir(small).parent == tmp_path / "cache" / "synthetic"


def test_dataset_without_root_named(tmp_path):
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["dataset=folder", "logger=none"])
    with pytest.raises(ValueError, match="dataset.root is required for dataset=folder"):
        run_experiment(cfg, tmp_path / "run")
