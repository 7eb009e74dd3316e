"""Type and range checks of run and detector settings, before any data is read.

Detector settings are checked against the defaults in
``conf/detector/<name>.yaml``: an override must have the type of its default
(an int is also accepted where the default is a float, and a number where the
default is null). Settings shared by the frozen-backbone detectors (batch size,
image sizes, devices, cache budget, smoothing) are range-checked here, and each
detector's ``check_settings`` checks the rest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

DETECTOR_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "detector"
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_run_settings(cfg: DictConfig) -> None:
    """Raise ValueError for an invalid seed or a non-boolean switch."""
    for key in ("seed", "corruption.seed"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            msg = f"{key} must be a whole number >= 0, got {value!r}"
            raise ValueError(msg)
    for key in ("baaf.enabled", "corruption.overlap", "logger.enabled"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not isinstance(value, bool):
            msg = f"{key} must be true or false, got {value!r}"
            raise ValueError(msg)


def check_detector_config(detector: DictConfig) -> None:
    """Raise ValueError for a detector setting of the wrong type or range."""
    defaults_file = DETECTOR_CONFIGS / f"{detector.name}.yaml"
    if defaults_file.is_file():
        defaults = OmegaConf.to_container(OmegaConf.load(defaults_file))
        values = OmegaConf.to_container(detector, resolve=True)
        _check_types(values, defaults, "detector")
    _check_shared_ranges(detector)


def _check_types(values: dict, defaults: dict, prefix: str) -> None:
    for key, default in defaults.items():
        if key not in values:
            continue
        name = f"{prefix}.{key}"
        value = values[key]
        if isinstance(default, dict) and isinstance(value, dict):
            _check_types(value, default, name)
            continue
        expected = _expected_kind(default)
        if expected is not None and not _matches(value, default):
            msg = (
                f"{name} must be {expected}, got {value!r}; the default is {default!r}"
            )
            raise ValueError(msg)


def _expected_kind(default: Any) -> str | None:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, list):
        return "a list like [2, 3]"
    if default is None:
        return "a number or null"
    return None


def _matches(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, (list, ListConfig)) and all(
            isinstance(item, int) and not isinstance(item, bool) for item in value
        )
    # A null default (for example embedding_dim) takes null or a number.
    return value is None or isinstance(value, (int, float))


def _check_shared_ranges(detector: DictConfig) -> None:
    minimum_one = ("batch_size", "resize", "input_size")
    for key in minimum_one:
        if key in detector and detector[key] < 1:
            msg = f"detector.{key} must be at least 1, got {detector[key]}"
            raise ValueError(msg)
    if "resize" in detector and detector.get("input_size", 0) > detector.resize:
        msg = (
            f"detector.input_size={detector.input_size} must not exceed "
            f"detector.resize={detector.resize}: images are resized, then centre "
            "cropped to input_size"
        )
        raise ValueError(msg)
    for key in ("feature_cache_mb", "smoothing_sigma"):
        if key in detector and detector[key] < 0:
            msg = f"detector.{key} must be >= 0, got {detector[key]}"
            raise ValueError(msg)
    for key in ("device", "faiss_device"):
        if key in detector:
            _check_device(f"detector.{key}", str(detector[key]))
    if "smoothing_sigma" in detector and "input_size" in detector:
        if detector.smoothing_sigma > detector.input_size:
            msg = (
                f"detector.smoothing_sigma={detector.smoothing_sigma} exceeds the "
                f"input size of {detector.input_size} pixels, which flattens every "
                "anomaly map; 4 is the usual value"
            )
            raise ValueError(msg)


def _check_device(key: str, device: str) -> None:
    if not DEVICE_PATTERN.match(device):
        msg = f"{key} must be cpu, cuda or cuda:<index>, got {device!r}"
        raise ValueError(msg)
    if key == "detector.device" and device.startswith("cuda"):
        if not torch.cuda.is_available():
            msg = f"{key}={device} but no CUDA device is available; use cpu"
            raise ValueError(msg)
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            msg = (
                f"{key}={device} but only {torch.cuda.device_count()} CUDA "
                "device(s) are available"
            )
            raise ValueError(msg)
