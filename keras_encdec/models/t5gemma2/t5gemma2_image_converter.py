"""T5Gemma 2 image converter: raw images to SigLIP pixel values."""

import numpy as np
from keras import ops
from keras_hub.src.models.gemma3.gemma3_image_converter import (
    Gemma3ImageConverter,
)

from keras_encdec.api import register

# transformers' Gemma 3 image processor: rescale 1/255, mean 0.5, std 0.5.
SCALE = 1.0 / 127.5
OFFSET = -1.0


def _check_image(image, where):
    """Returns `image` as a float32 `[H, W, 3]` array of 0-255 values."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(
            f"Each image must be an array [height, width, 3]. Received: "
            f"{where} with shape {image.shape} (rank {image.ndim}). Expected "
            "rank 3, channels last."
        )
    if image.shape[-1] != 3:
        raise ValueError(
            f"Each image must have 3 (RGB) channels, last. Received: {where} "
            f"with shape {image.shape}. Expected [height, width, 3]."
        )
    if min(image.shape[:2]) < 1:
        raise ValueError(f"Empty image. Received: {where} with shape {image.shape}.")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(
            f"Images must be uint8 or float arrays of 0-255 values. Received: "
            f"{where} with dtype {image.dtype}."
        )
    return image.astype("float32")


@register
class T5Gemma2ImageConverter(Gemma3ImageConverter):
    """Resizes and normalises raw images as transformers' Gemma 3 image
    processor does (the processor of T5Gemma 2 checkpoints).

    keras-hub's `Gemma3ImageConverter` configured to match
    `transformers.Gemma3ImageProcessor`: every image is resized to
    `image_size` x `image_size` without cropping (the aspect ratio is not
    kept), bilinearly with antialiasing, then mapped from 0-255 to [-1, 1]
    (`x / 127.5 - 1`). Pan-and-scan is not done (transformers' default).
    Resampling differs slightly (transformers rounds PIL's resized image to
    uint8): outputs agree to one uint8 level, `2 / 255`.

    Call it on a batch `[batch, H, W, 3]` of same-size images, or use
    `convert` for images of any sizes.

    Args:
        image_size: int. Output side in pixels (the tower's `image_size`).
        **kwargs: passed to keras-hub's `ImageConverter` (e.g. to override
            `interpolation`).

    Examples:

    >>> import numpy as np
    >>> converter = T5Gemma2ImageConverter(28)
    >>> images = [np.zeros((40, 30, 3), "uint8"), np.full((9, 50, 3), 255.0)]
    >>> pixels = converter.convert(images)
    >>> lowest, highest = float(pixels.min()), float(pixels.max())
    >>> tuple(pixels.shape), round(lowest, 4), round(highest, 4)
    ((2, 28, 28, 3), -1.0, 1.0)
    """

    def __init__(self, image_size, **kwargs):
        if isinstance(image_size, (tuple, list)):
            image_size = image_size[0]
        kwargs.setdefault("scale", SCALE)
        kwargs.setdefault("offset", OFFSET)
        kwargs.setdefault("crop_to_aspect_ratio", False)
        kwargs.setdefault("antialias", True)
        super().__init__(image_size=(image_size, image_size), **kwargs)

    def convert(self, images):
        """Converts a list of `[H, W, 3]` images (any sizes; uint8 or float
        0-255 values) to float32 numpy pixels `[n, size, size, 3]`."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError(
                "`convert` takes a list of images or an array [n, H, W, 3]. "
                f"Received: one array of shape {images.shape}; wrap it in a "
                "list."
            )
        pixels = []
        for i, image in enumerate(images):
            image = _check_image(image, f"image {i}")
            pixels.append(ops.convert_to_numpy(self(image[None]))[0])
        size = self.image_size[0]
        if not pixels:
            return np.zeros((0, size, size, 3), "float32")
        return np.stack(pixels).astype("float32")
