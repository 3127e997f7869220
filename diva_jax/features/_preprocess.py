"""Standard ImageNet preprocessing, as torchvision's evaluation transform does it.

``Resize(256)`` (short side to 256, bilinear with PIL's antialiasing, the long
side ``int(256 * long / short)``), ``CenterCrop(224)`` (offsets rounded like
torchvision), scaling to [0, 1], then per-channel ``(x - mean) / std`` with the
ImageNet statistics. Output is NHWC float32, the layout of :class:`ResNet`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_rgb(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (
            array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError("image must be uint8 (h, w), (h, w, 1), (h, w, 3) or "
                         f"(h, w, 4); got {array.dtype} {array.shape}.")
    return Image.fromarray(array).convert("RGB")


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """``(width, height)`` with the short side at ``resize``, as torchvision does."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def imagenet_preprocess(image, *, resize: int = 256, crop: int = 224,
                        mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """One image (uint8 HW/HWC array or PIL image) -> float32 (crop, crop, 3).

    Args:
      image: grayscale, RGB or RGBA; converted to RGB.
      resize: target of the short side (256 for ImageNet models).
      crop: side of the center crop (224); must not exceed ``resize``.
      mean, std: per-channel normalization of the [0, 1] image.
    """
    if crop > resize:
        raise ValueError(f"crop ({crop}) must be <= resize ({resize}).")
    rgb = _to_rgb(image)
    size = resized_size(*rgb.size, resize)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.BILINEAR)
    left = int(round((size[0] - crop) / 2.0))
    top = int(round((size[1] - crop) / 2.0))
    rgb = rgb.crop((left, top, left + crop, top + crop))
    x = np.asarray(rgb, np.float32) / 255.0
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
