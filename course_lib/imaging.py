"""Images in and out of a model, all pixels in [0, 1]: images to tensors (:func:`to_tensor`,
:func:`preprocess`), tensors to arrays (:func:`to_array`, :func:`to_numpy`), arrays for display
(:func:`rescale`, :func:`make_grid`).

No normalisation here: models normalise their own input (:class:`course_lib.models.Normalize`).
Drawing these arrays is :mod:`course_lib.figures`'s job."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .inputs import check_int, check_pixel_range, model_device


def fit_to_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a batch ``[N,3,H,W]`` so its shorter side is ``size`` (bilinear, antialiased), then centre-crop to ``size x size``."""
    h, w = x.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size]


# --------------------------------------------------------------------------- images to tensors

def to_tensor(image) -> torch.Tensor:
    """The pixels of ``image`` as a float tensor ``[3, H, W]`` with values in ``[0, 1]``.

    ``image`` may be

    * a PIL image in mode ``"RGB"``;
    * a numpy array ``H x W x 3``: ``uint8`` is divided by 255, floats must already be in ``[0, 1]``;
    * a tensor ``[3, H, W]`` (``uint8`` divided by 255, floats taken as they are, in ``[0, 1]``).

    Float pixels outside ``[0, 1]`` (e.g. 0..255 floats), NaN and empty images raise a
    ``ValueError`` (:func:`course_lib.inputs.check_pixel_range`). The result never shares
    memory with ``image``.
    """
    if isinstance(image, Image.Image):
        _check_rgb_pil(image)
        image = np.asarray(image)
    if isinstance(image, np.ndarray):
        _check_hw3(image)
        return _scaled_float(torch.tensor(image)).permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a tensor of shape [3, H, W], got shape {list(image.shape)}")
        return _scaled_float(image.clone())
    raise TypeError(f"expected a PIL image, a numpy array or a tensor, got {type(image).__name__}")


def _check_rgb_pil(image: Image.Image) -> None:
    """Raise unless the PIL image is in mode ``"RGB"``, saying how to convert it."""
    if image.mode != "RGB":
        raise ValueError(
            f"expected an RGB image, got a PIL image in mode {image.mode!r}; call "
            f'image.convert("RGB") first, or load it with course_lib.data.load_image, which converts')


def _check_hw3(a: np.ndarray) -> None:
    """Raise unless the array has shape ``H x W x 3``."""
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an array of shape H x W x 3 (RGB), got shape {a.shape}")


def rgb_array(image) -> np.ndarray:
    """An RGB PIL image or ``H x W x 3`` array as a new float64 array (``uint8`` divided by 255)."""
    if isinstance(image, Image.Image):
        _check_rgb_pil(image)
        image = np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    _check_hw3(image)
    if image.dtype == np.uint8:
        return image / 255
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"expected uint8 or floating-point pixels, got dtype {image.dtype}")
    return image.astype(np.float64)


def _scaled_float(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32: ``uint8`` values divided by 255, floating values unchanged (but checked to be in [0, 1])."""
    if x.dtype == torch.uint8:
        return x.float() / 255
    if x.is_floating_point():
        check_pixel_range(x)                            # 0..255 floats would pass silently otherwise
        return x.float()
    raise TypeError(f"expected uint8 or floating-point pixels, got dtype {x.dtype}")


def preprocess(image, model=None, size=None) -> torch.Tensor:
    """A batch of one image, ``[1, 3, S, S]`` pixels in ``[0, 1]``, ready to feed to ``model``.

    1. ``image`` becomes a ``[3, H, W]`` tensor in ``[0, 1]`` (see :func:`to_tensor`);
    2. if a size ``S`` is known (``size``, else ``model.input_size``), the image is
       resized so its shorter side is ``S`` and the centre ``S x S`` square is cut out;
       with neither ``size`` nor ``model`` it keeps its own size ``H x W``.

    No normalisation here: every course model normalises its own input (its first layer).
    The result is on the model's device when the model has parameters.
    """
    x = to_tensor(image).unsqueeze(0)
    if size is None:
        size = getattr(model, "input_size", None)
    if size is not None:
        x = fit_to_square(x, check_int(size, "size", low=1))
    return x.to(model_device(model))


def to_array(x: torch.Tensor) -> np.ndarray:
    """The image a pixel tensor shows, as an ``H x W x 3`` float array in ``[0, 1]`` (for matplotlib).

    ``x`` is ``[1, 3, H, W]`` or ``[3, H, W]``, on any device, with or without gradients;
    values are clipped to ``[0, 1]``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected a tensor of shape [1, 3, H, W] or [3, H, W], got shape {list(x.shape)}")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(
                f"expected one image, got a batch of {x.shape[0]} (shape {list(x.shape)}); "
                f"convert the images one at a time, e.g. to_array(x[i])")
        x = x[0]
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


# --------------------------------------------------------------------------- arrays for display

def to_numpy(x) -> np.ndarray:
    """``x`` (numpy array, tensor on any device, or nested list) as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def rescale(x) -> np.ndarray:
    """``(x - min) / (max - min)``: the values of ``x`` stretched to fill ``[0, 1]``.

    ``x`` is any numpy array or tensor; the result is a new float numpy array of
    the same shape. A constant ``x`` (``max == min``) gives all zeros.
    """
    x = to_numpy(x).astype(np.float64)
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def make_grid(images, nrow=None, padding=1, pad_value=1.0) -> np.ndarray:
    """Tile equally sized images into one array, row by row, ``nrow`` images per row.

    ``images`` is a list (or array, or tensor) of ``H x W`` or ``H x W x 3`` images.
    Without ``nrow`` the grid is as square as possible (64 images: 8 x 8).
    ``padding`` pixels of ``pad_value`` separate the images and frame the grid, so a
    grid of ``rows x cols`` images has height ``rows * H + (rows + 1) * padding``
    and width ``cols * W + (cols + 1) * padding``.
    """
    images = [to_numpy(im) for im in images]
    if not images:
        raise ValueError("make_grid needs at least one image, got none")
    shape = images[0].shape
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 3)):
        raise ValueError(f"expected H x W or H x W x 3 images, got shape {shape}")
    for i, im in enumerate(images):
        if im.shape != shape:
            raise ValueError(f"all images must have the same shape: image 0 is {shape}, image {i} is {im.shape}")
    if nrow is not None and (isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1):
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")

    n = len(images)
    cols = nrow if nrow is not None else math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = shape[:2]
    grid = np.full((rows * h + (rows + 1) * padding, cols * w + (cols + 1) * padding) + shape[2:],
                   pad_value, dtype=np.float64)
    for i, im in enumerate(images):
        top = padding + (i // cols) * (h + padding)
        left = padding + (i % cols) * (w + padding)
        grid[top:top + h, left:left + w] = im
    return grid

