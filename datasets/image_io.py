"""Image and mask reading that tolerates the file variants found in public datasets.

Every image comes back as uint8 RGB and every mask as a boolean array, whatever the
bit depth, colour mode or extension case of the file. Files are decoded in full, so
a truncated file fails here, before any training starts, and the error names it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.base import Sample

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})

# Pillow modes that hold one 16-bit grey channel.
_UINT16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# Pillow modes whose arrays keep their values as stored.
_NATIVE_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "F"}) | _UINT16_MODES
# Number of failing files that a pre-flight error lists before it summarises.
_MAX_LISTED_FAILURES = 10


class ImageReadError(ValueError):
    """An image or mask file cannot be decoded or does not fit its image."""


def is_image_file(path: Path) -> bool:
    """Return whether ``path`` names an image by its extension, ignoring case.

    Hidden files (names starting with ``.``, which includes the ``._*`` files that
    macOS writes) and ``Thumbs.db``/``desktop.ini`` are never images.
    """
    name = Path(path).name
    if name.startswith(".") or name.lower() in IGNORED_NAMES:
        return False
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """List the image files directly inside ``folder``, sorted by name.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    images = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
    return sorted(images, key=lambda p: p.name)


def read_image(path: Path) -> np.ndarray:
    """Read an image file as 8-bit RGB.

    Grey images are repeated over the three channels. 16-bit values are rescaled
    by the dtype range (``round(value * 255 / 65535)``). Palette images are
    expanded to their colours. An alpha channel is dropped, so the colour values
    are kept as stored and not composited onto a background.

    NOTE: Pillow reduces 16-bit colour (48-bit RGB) files to 8 bits by keeping
    the high byte. That differs from the rounded rescaling by at most 1.

    Parameters
    ----------
    path : Path
        PNG, JPEG, TIFF or BMP file; the extension may be upper case.

    Returns
    -------
    numpy.ndarray of shape (H, W, 3), dtype uint8

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ImageReadError
        If the file cannot be decoded or has a pixel type other than 1-, 8- or
        16-bit integers.
    """
    array = _decode(Path(path))
    return _to_rgb8(array, Path(path))


def read_mask(paths: Sequence[Path], shape: tuple[int, int]) -> np.ndarray:
    """Read ground-truth masks and merge them by union.

    A pixel is anomalous when any colour channel of it is non-zero in any of the
    files, whatever the bit depth. Alpha channels are ignored, and palette masks
    are judged by their colours, not their palette indices.

    Parameters
    ----------
    paths : sequence of Path
        Mask files of one image; empty for an image without a mask.
    shape : tuple of int
        ``(H, W)`` of the image that the masks belong to.

    Returns
    -------
    numpy.ndarray of shape (H, W), dtype bool
        All False when ``paths`` is empty.

    Raises
    ------
    FileNotFoundError
        If a mask file does not exist.
    ImageReadError
        If a mask cannot be decoded or its size differs from ``shape``.
    """
    height, width = shape
    mask = np.zeros((height, width), dtype=bool)
    for path in paths:
        mask |= _read_one_mask(Path(path), (height, width))
    return mask


def check_readable(
    samples: Iterable[Sample], check_masks: bool = True, workers: int | None = None
) -> None:
    """Decode every image and mask once so that bad files fail before training.

    Parameters
    ----------
    samples : iterable of Sample
        Samples whose ``image_path`` (and ``mask_paths``) to check.
    check_masks : bool, default True
        Also decode the masks and check that each one has its image's size.
    workers : int or None, default None
        Threads that decode in parallel; None uses up to 8, bounded by the CPU
        count. The result does not depend on it.

    Raises
    ------
    ImageReadError
        Listing the first failing files with their causes and the number of
        failures, if any file is missing, cannot be decoded or has the wrong size.
    """
    samples = list(samples)
    if workers is None:
        workers = min(8, os.cpu_count() or 1)

    def check(sample: Sample) -> list[str]:
        return _check_sample(sample, check_masks)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        failures = [f for result in pool.map(check, samples) for f in result]

    if failures:
        raise ImageReadError(_summarise_failures(failures, len(samples)))
    logger.info("Checked %d images: all readable", len(samples))


def _check_sample(sample: Sample, check_masks: bool) -> list[str]:
    try:
        image = read_image(sample.image_path)
    except (ImageReadError, FileNotFoundError) as error:
        return [str(error)]
    if not check_masks:
        return []

    failures = []
    for mask_path in sample.mask_paths:
        try:
            _read_one_mask(Path(mask_path), image.shape[:2])
        except (ImageReadError, FileNotFoundError) as error:
            failures.append(str(error))
    return failures


def _summarise_failures(failures: list[str], n_checked: int) -> str:
    listed = "\n  ".join(failures[:_MAX_LISTED_FAILURES])
    more = len(failures) - _MAX_LISTED_FAILURES
    suffix = f"\n  ... and {more} more" if more > 0 else ""
    return (
        f"{len(failures)} of {n_checked} samples have unreadable image or mask "
        f"files; replace or remove them and run again:\n  {listed}{suffix}"
    )


def _read_one_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    array = _decode(path)
    if array.shape[:2] != tuple(shape):
        raise ImageReadError(
            f"{path}: mask size {_format_size(array.shape)} differs from the image "
            f"size {_format_size(shape)}; the mask must have the image's width "
            "and height"
        )
    if array.ndim == 3:
        colour_channels = {2: 1, 4: 3}.get(array.shape[2], array.shape[2])
        return np.any(array[..., :colour_channels] != 0, axis=2)
    return array != 0


def _format_size(shape: tuple[int, ...]) -> str:
    """Format an array shape as the usual ``W x H`` image size."""
    return f"{shape[1]}x{shape[0]} (WxH)"


def _decode(path: Path) -> np.ndarray:
    """Decode a whole file into an array of shape (H, W) or (H, W, C).

    The dtype is the file's own (bool, uint8, uint16, int32 or float32), and
    palette images are expanded to RGBA.
    """
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            # load() decodes every pixel, so a truncated file raises here.
            image.load()
            return _image_to_array(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from error


def _image_to_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("P", "PA"):
        # RGBA keeps any palette transparency out of the colour channels.
        return np.asarray(image.convert("RGBA"))
    if mode == "I" and image.format == "PNG":
        # Older Pillow versions open 16-bit grey PNGs as 32-bit "I".
        return np.asarray(image).astype(np.uint16)
    if mode in _NATIVE_MODES or mode == "I":
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))


def _to_rgb8(array: np.ndarray, path: Path) -> np.ndarray:
    values = _to_uint8(array, path)
    if values.ndim == 2:
        return np.repeat(values[:, :, None], 3, axis=2)

    channels = values.shape[2]
    if channels in (1, 2):
        return np.repeat(values[:, :, :1], 3, axis=2)
    if channels in (3, 4):
        return np.ascontiguousarray(values[:, :, :3])
    raise ImageReadError(
        f"{path}: unsupported number of channels {channels}; "
        "convert the file to grey, RGB or RGBA"
    )


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        # round(v * 255 / 65535) == round(v / 257); v / 257 never ends in .5.
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise ImageReadError(
        f"{path}: unsupported pixel type {array.dtype}; "
        "convert the file to 8-bit or 16-bit integers"
    )
