"""W&B tracking: offline by default, never fails a run, always finishes."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from baaf.runner import run_experiment
from baaf.tracking import ExperimentTracker

REPO_ROOT = Path(__file__).resolve().parents[3]


class FakeRun:
    id = "fake"

    def __init__(self, calls):
        self.calls = calls

    def log(self, values):
        self.calls.append(("log", values))

    def finish(self, exit_code=0):
        self.calls.append(("finish", exit_code))


@pytest.fixture
def fake_wandb(monkeypatch):
    calls = []
    module = types.ModuleType("wandb")
    module.Settings = lambda **options: options

    def init(**options):
        calls.append(("init", options["mode"]))
        return FakeRun(calls)

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls


def tiny_config(tmp_path, overrides):
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"paths.cache_dir={tmp_path / 'cache'}",
                "dataset.synthetic.n_train=12",
                "dataset.synthetic.n_test_good=3",
                "dataset.synthetic.n_defects_per_type=3",
                "dataset.synthetic.image_size=64",
                "detector.resize=128",
                "detector.input_size=112",
                *overrides,
            ],
        )


def test_default_logger_is_wandb_offline(tmp_path):
    cfg = tiny_config(tmp_path, [])
    assert cfg.logger.enabled is True
    assert cfg.logger.mode == "offline"


def test_failing_job_still_finishes_wandb_run(tmp_path, fake_wandb):
    cfg = tiny_config(tmp_path, [f"dataset.root={tmp_path / 'missing'}"])
    with pytest.raises(FileNotFoundError):
        run_experiment(cfg, tmp_path / "run")
    assert fake_wandb[0] == ("init", "offline")
    assert fake_wandb[-1] == ("finish", 1)


def test_failed_init_only_warns(tmp_path, monkeypatch, caplog):
    module = types.ModuleType("wandb")
    module.Settings = lambda **options: options

    def init(**options):
        raise TimeoutError("no service")

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    tracker = ExperimentTracker(True, "offline", "baaf", None, "x", tmp_path, {})
    tracker.log({"image_auroc": 1.0})
    tracker.finish()
    assert "W&B logging disabled, init failed: no service" in caplog.text


def test_real_wandb_offline_run_writes_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = tiny_config(tmp_path, ["baaf.enabled=false"])
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics["image_auroc"] is not None
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))
