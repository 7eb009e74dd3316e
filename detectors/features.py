"""Backbone feature extraction with a per-run cache.

Every bag model, every vote, the out-of-bag scoring and the final model of a BAAF
run use the same frozen backbone. ``FeatureExtractor`` therefore runs the backbone
once per image and keeps the layer outputs in a ``FeatureCache``; later requests
for the same image read them back. The cache key contains everything that changes
the features (backbone, weights, layers, resize, crop, normalisation), so a
different configuration never reads stale features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasets.base import Sample
from datasets.image_io import read_image
from detectors.backbones import create_backbone, normalisation_stats

logger = logging.getLogger(__name__)


def preprocess_image(
    image: np.ndarray,
    resize: int,
    input_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> torch.Tensor:
    """Resize to ``resize`` square, centre crop ``input_size`` and normalise.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
    resize, input_size : int
        Square resize side, then centre-crop side, in pixels.
    mean, std : tuple of float
        Per-channel normalisation of the [0, 1] pixel values.

    Returns
    -------
    Tensor of shape (3, input_size, input_size), float32
    """
    resized = Image.fromarray(image).resize((resize, resize), Image.BILINEAR)
    offset = (resize - input_size) // 2
    end = offset + input_size
    cropped = np.asarray(resized, dtype=np.float32)[offset:end, offset:end] / 255.0
    tensor = torch.from_numpy(cropped.copy()).permute(2, 0, 1)  # (3, S, S)
    mean_tensor = torch.tensor(mean).view(3, 1, 1)
    std_tensor = torch.tensor(std).view(3, 1, 1)
    return (tensor - mean_tensor) / std_tensor


def settings_hash(settings: dict) -> str:
    """Return a 16-character hex digest of JSON-serialisable ``settings``."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class FeatureCache:
    """Layer outputs per image, in memory up to a budget, then on disk.

    Parameters
    ----------
    max_memory_mb : float
        Memory budget for cached arrays. Entries added after the budget is used up
        are written to ``spill_dir`` as ``.npz`` files and read back on request.
    spill_dir : Path or None
        Folder for spilled entries; a temporary folder when None.
    """

    def __init__(self, max_memory_mb: float = 4096.0, spill_dir: Path | None = None):
        self.max_memory_mb = max_memory_mb
        self.spill_dir = spill_dir
        self._memory: dict[str, list[np.ndarray]] = {}
        self._on_disk: dict[str, Path] = {}
        self._memory_bytes = 0
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __contains__(self, key: str) -> bool:
        return key in self._memory or key in self._on_disk

    def __len__(self) -> int:
        return len(self._memory) + len(self._on_disk)

    @property
    def memory_mb(self) -> float:
        """Size of the entries held in memory, in MiB."""
        return self._memory_bytes / 2**20

    def put(self, key: str, layers: list[np.ndarray]) -> None:
        """Store the layer arrays of one image under ``key``."""
        size = sum(array.nbytes for array in layers)
        if self._memory_bytes + size <= self.max_memory_mb * 2**20:
            self._memory[key] = layers
            self._memory_bytes += size
            return
        path = self._spill_folder() / f"{hashlib.sha1(key.encode()).hexdigest()}.npz"
        np.savez(path, *layers)
        self._on_disk[key] = path

    def get(self, key: str) -> list[np.ndarray]:
        """Return the layer arrays stored under ``key``."""
        if key in self._memory:
            return self._memory[key]
        with np.load(self._on_disk[key]) as archive:
            return [archive[f"arr_{i}"] for i in range(len(archive.files))]

    def _spill_folder(self) -> Path:
        if self.spill_dir is None:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="baaf-features-")
                logger.info("feature cache spills to %s", self._tmp.name)
            return Path(self._tmp.name)
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        return self.spill_dir


class FeatureExtractor:
    """Frozen timm backbone that returns cached layer maps per image.

    Parameters
    ----------
    backbone : str
        timm model name.
    layers : sequence of int
        timm ``out_indices`` of the layers to return, shallow to deep.
    weights : str
        Weight source: ``"auto"``, ``"package"``, ``"hub"``, ``"none"`` or a
        checkpoint path (see ``detectors.backbones``).
    resize : int
        Images are resized to ``resize x resize`` first.
    input_size : int
        Then centre cropped to ``input_size x input_size``; equal to ``resize``
        for no crop.
    batch_size : int
        Images per backbone forward pass.
    device : str
        Torch device for the backbone.
    cache : FeatureCache or None
        Where layer maps are kept; a new in-memory cache when None.
    """

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        layers: Sequence[int] = (2, 3),
        weights: str = "auto",
        resize: int = 256,
        input_size: int = 224,
        batch_size: int = 16,
        device: str = "cpu",
        cache: FeatureCache | None = None,
    ):
        if input_size > resize:
            msg = f"input_size={input_size} must not exceed resize={resize}"
            raise ValueError(msg)
        self.backbone_name = backbone
        self.layers = tuple(int(layer) for layer in layers)
        self.weights = weights
        self.resize = resize
        self.input_size = input_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.cache = cache if cache is not None else FeatureCache()
        self.mean, self.std = normalisation_stats(backbone)
        self.model = create_backbone(backbone, self.layers, weights).to(self.device)
        self.n_forward_images = 0

    @property
    def crop_fraction(self) -> float:
        """Side of the centre crop relative to the resized image."""
        return self.input_size / self.resize

    @property
    def cache_key(self) -> str:
        """Hash of every setting that changes the extracted features."""
        settings = {
            "backbone": self.backbone_name,
            "weights": self.weights,
            "layers": self.layers,
            "resize": self.resize,
            "input_size": self.input_size,
            "mean": self.mean,
            "std": self.std,
        }
        return settings_hash(settings)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Resize, centre crop and normalise one image.

        Parameters
        ----------
        image : ndarray of shape (H, W, 3), uint8

        Returns
        -------
        Tensor of shape (3, input_size, input_size), float32
        """
        return preprocess_image(
            image, self.resize, self.input_size, self.mean, self.std
        )

    def layer_maps(self, samples: Sequence[Sample]) -> list[np.ndarray]:
        """Return each layer's feature maps for ``samples``, from cache where possible.

        Returns
        -------
        list of ndarray
            One array per layer, of shape (n_samples, C_l, h_l, w_l), float32.
        """
        keys = [self._key(sample) for sample in samples]
        # A dict keeps one entry per image when a sample list repeats an image.
        missing = {
            key: sample for key, sample in zip(keys, samples) if key not in self.cache
        }
        if missing:
            self._extract(list(missing.items()))
        per_image = [self.cache.get(key) for key in keys]
        return [
            np.stack([layers[i] for layers in per_image])
            for i in range(len(self.layers))
        ]

    def derived_features(
        self,
        samples: Sequence[Sample],
        name: str,
        transform: Callable[[list[np.ndarray]], np.ndarray],
    ) -> np.ndarray:
        """Return per-image arrays computed from layer maps, cached under ``name``.

        Detectors that turn layer maps into their own features (PatchCore's
        aggregated patch embeddings, say) compute them once per image and run.

        Parameters
        ----------
        samples : sequence of Sample
        name : str
            Names the transform and every setting it depends on; part of the
            cache key.
        transform : callable
            Maps the layer maps of some images, a list of arrays of shape
            (n, C_l, h_l, w_l), to an array of shape (n, ...).

        Returns
        -------
        ndarray of shape (n_samples, ...)
        """
        keys = [f"{name}:{self._key(sample)}" for sample in samples]
        missing = {
            key: sample for key, sample in zip(keys, samples) if key not in self.cache
        }
        if missing:
            computed = transform(self.layer_maps(list(missing.values())))
            for key, array in zip(missing, computed):
                # A copy, so that a cached row does not keep the whole batch alive.
                self.cache.put(key, [array.copy()])
        return np.stack([self.cache.get(key)[0] for key in keys])

    def _key(self, sample: Sample) -> str:
        return f"{self.cache_key}:{Path(sample.image_path).resolve()}"

    @torch.no_grad()
    def _extract(self, items: list[tuple[str, Sample]]) -> None:
        start = time.perf_counter()
        for first in range(0, len(items), self.batch_size):
            batch = items[first : first + self.batch_size]
            images = [
                self.preprocess(read_image(sample.image_path)) for _, sample in batch
            ]
            outputs = self.model(torch.stack(images).to(self.device))
            for row, (key, _) in enumerate(batch):
                self.cache.put(key, [out[row].float().cpu().numpy() for out in outputs])
            logger.debug("features %d/%d images", first + len(batch), len(items))
        self.n_forward_images += len(items)
        logger.info(
            "extracted backbone features of %d images in %.1f s (%d cached)",
            len(items),
            time.perf_counter() - start,
            len(self.cache),
        )
