"""Type and range checks of run and detector settings."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from baaf.settings import DETECTOR_CONFIGS, check_detector_config


def patchcore_config(**overrides):
    config = OmegaConf.load(DETECTOR_CONFIGS / "patchcore.yaml")
    return OmegaConf.merge(config, overrides)


def test_cuda_device_without_gpu_rejected(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device is available; use cpu"):
        check_detector_config(patchcore_config(device="cuda"))


def test_cuda_index_beyond_devices_rejected(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        check_detector_config(patchcore_config(device="cuda:3"))


def test_faiss_cuda_allowed_without_gpu(monkeypatch):
    # faiss falls back to the CPU with a warning, so this is not an error.
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    check_detector_config(patchcore_config(faiss_device="cuda"))


def test_int_accepted_for_float_default():
    check_detector_config(patchcore_config(coreset_ratio=1, smoothing_sigma=0))


def test_number_accepted_for_null_default():
    check_detector_config(patchcore_config(embedding_dim=64))
