"""AnomalyDINO: nearest-neighbour search on ViT patch tokens.

``ViTTokenExtractor`` runs a frozen timm vision transformer and returns its
final, layer-normalised patch tokens (class and register tokens dropped) as
(D, h, w) maps. It keeps them in a ``FeatureCache`` under a key built from every
setting that changes them, so each image's tokens are computed once per run.

``AnomalyDINO`` L2-normalises the patch tokens of all training images into a
memory bank. A test patch's distance is the cosine distance to its nearest
memory patch. The image score is the mean of the largest ``top_share`` of the
patch distances (at least one patch), and the anomaly map is the distance grid
upsampled to the input size and Gaussian-smoothed.

Foreground masking (``masking=True``) follows this rule. It takes the first
principal component of all training patch tokens. Because inspected objects are
usually centred, the component's sign is chosen so that the central patches (the
middle half of the grid in each direction) project at least as high on average
as the border patches. A patch is foreground when its projection, minus the
training mean projection, exceeds ``mask_threshold``. Only foreground patches
count towards the image score, and an image without any foreground patch falls
back to all of its patches. The memory bank always contains every training
patch, and the anomaly map always shows every patch's distance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import timm
import torch

from datasets.base import Sample
from datasets.image_io import read_image
from detectors._maps import framed_prediction, upsample_patch_scores
from detectors.backbones import BackboneWeightsError, normalisation_stats
from detectors.base import AnomalyDetector, Prediction
from detectors.features import FeatureCache, preprocess_image, settings_hash
from detectors.knn import NearestNeighbourIndex

logger = logging.getLogger(__name__)


class ViTTokenExtractor:
    """Frozen timm vision transformer that returns cached patch-token maps.

    Parameters
    ----------
    backbone : str
        timm vision transformer name, for example
        ``"vit_small_patch14_dinov2.lvd142m"``.
    weights : str
        ``"hub"`` (or ``"auto"``, the same here): timm's pretrained weights,
        which need network access or a filled local hub cache. ``"none"``:
        random initialisation from a fixed seed. Any other string: path to a
        local checkpoint of the model, loaded through timm's pretrained loader,
        which resamples the position embedding to ``input_size``.
    resize : int
        Images are resized to ``resize x resize`` first.
    input_size : int
        Then centre cropped to ``input_size x input_size``; a multiple of the
        patch size.
    batch_size : int
        Images per forward pass.
    device : str
        Torch device for the model.
    cache : FeatureCache or None
        Where token maps are kept; a new in-memory cache when None.
    """

    def __init__(
        self,
        backbone: str = "vit_small_patch14_dinov2.lvd142m",
        weights: str = "hub",
        resize: int = 448,
        input_size: int = 448,
        batch_size: int = 8,
        device: str = "cpu",
        cache: FeatureCache | None = None,
    ):
        if input_size > resize:
            msg = f"input_size={input_size} must not exceed resize={resize}"
            raise ValueError(msg)
        self.backbone_name = backbone
        self.weights = weights
        self.resize = resize
        self.input_size = input_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.cache = cache if cache is not None else FeatureCache()
        self.mean, self.std = normalisation_stats(backbone)
        self.model = create_vision_transformer(backbone, weights, input_size)
        self.model = self.model.to(self.device)
        self.n_forward_images = 0

    @property
    def crop_fraction(self) -> float:
        """Side of the centre crop relative to the resized image."""
        return self.input_size / self.resize

    @property
    def cache_key(self) -> str:
        """Hash of every setting that changes the extracted tokens."""
        settings = {
            "kind": "vit_patch_tokens",
            "backbone": self.backbone_name,
            "weights": self.weights,
            "resize": self.resize,
            "input_size": self.input_size,
            "mean": self.mean,
            "std": self.std,
        }
        return settings_hash(settings)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Resize, centre crop and normalise one (H, W, 3) uint8 image.

        Returns
        -------
        Tensor of shape (3, input_size, input_size), float32
        """
        return preprocess_image(
            image, self.resize, self.input_size, self.mean, self.std
        )

    def token_maps(self, samples: Sequence[Sample]) -> np.ndarray:
        """Return patch-token maps of ``samples``, from cache where possible.

        Returns
        -------
        ndarray of shape (N, D, h, w), float32
            Final normalised patch tokens on the patch grid.
        """
        keys = [f"{self.cache_key}:{Path(s.image_path).resolve()}" for s in samples]
        missing = {key: s for key, s in zip(keys, samples) if key not in self.cache}
        if missing:
            self._extract(list(missing.items()))
        return np.stack([self.cache.get(key)[0] for key in keys])

    @torch.no_grad()
    def _extract(self, items: list[tuple[str, Sample]]) -> None:
        start = time.perf_counter()
        n_prefix = self.model.num_prefix_tokens
        grid = tuple(self.model.patch_embed.grid_size)
        for first in range(0, len(items), self.batch_size):
            batch = items[first : first + self.batch_size]
            images = [self.preprocess(read_image(s.image_path)) for _, s in batch]
            tokens = self.model.forward_features(torch.stack(images).to(self.device))
            patches = tokens[:, n_prefix:].float().cpu()  # (B, h*w, D)
            maps = patches.transpose(1, 2).reshape(len(batch), -1, *grid)
            for row, (key, _) in enumerate(batch):
                self.cache.put(key, [maps[row].numpy()])
        self.n_forward_images += len(items)
        logger.info(
            "extracted patch tokens of %d images in %.1f s (%d cached)",
            len(items),
            time.perf_counter() - start,
            len(self.cache),
        )


def create_vision_transformer(
    name: str, weights: str, input_size: int
) -> torch.nn.Module:
    """Build a timm vision transformer for ``input_size`` inputs, in eval mode.

    Raises
    ------
    ValueError
        When ``name`` is not a timm vision transformer with patch tokens, or
        ``input_size`` is not a multiple of its patch size.
    BackboneWeightsError
        When the weights cannot be loaded.
    """
    if name.split(".")[0] not in timm.list_models():
        msg = (
            f"unknown timm model {name!r}; pick a vision transformer from "
            "timm.list_models('vit_*'), for example "
            "'vit_small_patch14_dinov2.lvd142m'"
        )
        raise ValueError(msg)
    if weights == "package":
        msg = (
            f"no offline weight package exists for the vision transformer {name!r}; "
            "set detector.backbone.weights to hub, none or a local checkpoint path"
        )
        raise BackboneWeightsError(msg)
    pretrained = weights != "none"
    options = {"img_size": input_size, "num_classes": 0}
    if weights not in ("hub", "auto", "none"):
        if not Path(weights).is_file():
            msg = (
                f"ViT checkpoint {weights} not found; set detector.backbone.weights "
                "to an existing file, or to hub or none"
            )
            raise BackboneWeightsError(msg)
        options["pretrained_cfg_overlay"] = {"file": str(weights)}
    try:
        # Random weights come from a fixed seed, so runs with weights=none
        # repeat exactly; fork_rng leaves the caller's global RNG untouched.
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=pretrained, **options)
    except OSError as error:
        msg = (
            f"pretrained weights for {name!r} could not be loaded ({error}); without "
            "network access set detector.backbone.weights to a local checkpoint "
            "path, or to none for random weights"
        )
        raise BackboneWeightsError(msg) from error
    except TypeError as error:
        # Models without a patch embedding (CNNs) reject the img_size argument.
        raise ValueError(_not_a_vit_message(name)) from error
    _check_patch_tokens(model, name, input_size)
    logger.info(
        "vision transformer %s, input %d, weights %s", name, input_size, weights
    )
    return model.eval()


def _not_a_vit_message(name: str) -> str:
    return (
        f"timm model {name!r} has no patch tokens; AnomalyDINO needs a vision "
        "transformer such as 'vit_small_patch14_dinov2.lvd142m'"
    )


def _check_patch_tokens(model: torch.nn.Module, name: str, input_size: int) -> None:
    if not hasattr(model, "patch_embed") or not hasattr(model, "num_prefix_tokens"):
        raise ValueError(_not_a_vit_message(name))
    patch_size = model.patch_embed.patch_size[0]
    if input_size % patch_size != 0:
        nearest = input_size // patch_size * patch_size
        msg = (
            f"input_size={input_size} is not a multiple of the patch size "
            f"{patch_size} of {name!r}; use for example {nearest}"
        )
        raise ValueError(msg)


class AnomalyDINO(AnomalyDetector):
    """AnomalyDINO anomaly detector on a shared, cached token extractor.

    Parameters
    ----------
    extractor : ViTTokenExtractor
        Frozen vision transformer; several instances may share one.
    top_share : float
        Share of the (foreground) patches with the largest distances averaged
        into the image score, in (0, 1]; at least one patch is used.
    masking : bool
        Score only foreground patches, with the rule in the module docstring.
    mask_threshold : float
        Threshold on the centred first-component projection for foreground.
    smoothing_sigma : float
        Gaussian sigma, in input pixels, applied to the upsampled anomaly map.
    faiss_device : str
        ``"cpu"`` or ``"cuda"`` for the nearest-neighbour index.
    """

    name = "anomalydino"

    def __init__(
        self,
        extractor: ViTTokenExtractor,
        top_share: float = 0.01,
        masking: bool = False,
        mask_threshold: float = 0.0,
        smoothing_sigma: float = 4.0,
        faiss_device: str = "cpu",
    ):
        self.extractor = extractor
        self.top_share = top_share
        self.masking = masking
        self.mask_threshold = mask_threshold
        self.smoothing_sigma = smoothing_sigma
        self.faiss_device = faiss_device

    def embed(self, samples: Sequence[Sample]) -> tuple[np.ndarray, tuple[int, int]]:
        """Return raw patch tokens (N, h * w, D) and the patch grid of ``samples``."""
        maps = self.extractor.token_maps(samples)  # (N, D, h, w)
        n_images, n_dims, height, width = maps.shape
        tokens = maps.reshape(n_images, n_dims, -1).transpose(0, 2, 1)
        return np.ascontiguousarray(tokens), (height, width)

    def check_settings(self) -> None:
        """Raise ValueError for an invalid AnomalyDINO setting."""
        if not 0.0 < self.top_share <= 1.0:
            msg = (
                f"AnomalyDINO top_share must be in (0, 1], got {self.top_share}; "
                "0.01 averages the top 1% of patch distances"
            )
            raise ValueError(msg)

    def fit(self, samples: Sequence[Sample]) -> AnomalyDINO:
        """Store the normalised patch tokens of ``samples`` as the memory bank."""
        if len(samples) == 0:
            msg = "AnomalyDINO.fit needs at least one training image, got none"
            raise ValueError(msg)
        self.check_settings()
        tokens, grid = self.embed(samples)
        flat = tokens.reshape(-1, tokens.shape[-1])  # (N*h*w, D)
        self.memory_bank_ = l2_normalise(flat)
        self.index_ = NearestNeighbourIndex(self.faiss_device).fit(self.memory_bank_)
        self.mask_direction_, self.mask_centre_ = None, None
        if self.masking:
            self.mask_direction_, self.mask_centre_ = foreground_direction(tokens, grid)
        logger.info(
            "AnomalyDINO memory bank: %d images, %d patches",
            len(samples),
            len(self.memory_bank_),
        )
        return self

    def predict(self, samples: Sequence[Sample]) -> Prediction:
        """Score ``samples``: mean of the top patch distances, and distance maps."""
        tokens, grid = self.embed(samples)
        n_images = tokens.shape[0]
        queries = l2_normalise(tokens.reshape(-1, tokens.shape[-1]))
        distances, _ = self.index_.search(queries, 1)
        # For unit vectors |a - b|^2 = 2 - 2 cos(a, b).
        cosine = (0.5 * distances[:, 0] ** 2).reshape(n_images, -1)  # (N, h*w)
        foreground = self.foreground(tokens)  # (N, h*w) bool
        image_scores = np.array(
            [self._top_mean(row[mask]) for row, mask in zip(cosine, foreground)]
        )
        anomaly_maps = upsample_patch_scores(
            cosine.reshape(n_images, *grid),
            self.extractor.input_size,
            self.smoothing_sigma,
        )
        return framed_prediction(
            image_scores, anomaly_maps, self.extractor.crop_fraction
        )

    def foreground(self, tokens: np.ndarray) -> np.ndarray:
        """Return the foreground patches of raw tokens (N, P, D) as (N, P) bool.

        Every patch is foreground without masking, and in an image where the
        rule finds none.
        """
        if self.mask_direction_ is None:
            return np.ones(tokens.shape[:2], dtype=bool)
        projection = (tokens - self.mask_centre_) @ self.mask_direction_  # (N, P)
        mask = projection > self.mask_threshold
        empty = ~mask.any(axis=1)
        if empty.any():
            logger.info(
                "AnomalyDINO masking found no foreground in %d of %d images; "
                "scoring all their patches",
                int(empty.sum()),
                len(mask),
            )
            mask[empty] = True
        return mask

    def _top_mean(self, distances: np.ndarray) -> float:
        n_top = max(1, int(self.top_share * len(distances)))
        return float(np.sort(distances)[-n_top:].mean())


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Scale each row of (M, D) ``vectors`` to unit length, as float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def foreground_direction(
    tokens: np.ndarray, grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the masking rule's oriented first principal component.

    Parameters
    ----------
    tokens : ndarray of shape (N, h * w, D)
        Raw patch tokens of the training images.
    grid : tuple of int
        The patch grid (h, w).

    Returns
    -------
    direction : ndarray of shape (D,)
        Unit first principal component, signed so that central patches project
        at least as high as border patches on average.
    centre : ndarray of shape (D,)
        Mean training token, subtracted before projecting.
    """
    flat = tokens.reshape(-1, tokens.shape[-1]).astype(np.float64)  # (N*h*w, D)
    centre = flat.mean(axis=0)
    centered = flat - centre
    # eigh returns ascending eigenvalues, so the last eigenvector of the (D, D)
    # scatter matrix is the first principal component.
    _, eigenvectors = np.linalg.eigh(centered.T @ centered)
    direction = eigenvectors[:, -1]
    projection = (centered @ direction).reshape(-1, *grid)  # (N, h, w)
    height, width = grid
    central = np.zeros(grid, dtype=bool)
    central[height // 4 : height - height // 4, width // 4 : width - width // 4] = True
    has_border = not central.all()
    if has_border and projection[:, central].mean() < projection[:, ~central].mean():
        direction = -direction
    return direction.astype(np.float32), centre.astype(np.float32)
