"""Images in and out of a model: preprocessing, deprocessing, grids, heatmap overlays, plotting."""
from __future__ import annotations

import math

import matplotlib
import matplotlib.colors
import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .models import IMAGENET_MEAN, IMAGENET_STD


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
    * a numpy array ``H x W x 3``: ``uint8`` is divided by 255, floats are taken to be in ``[0, 1]``;
    * a tensor ``[3, H, W]`` (``uint8`` divided by 255, floats taken as they are).

    The result never shares memory with ``image``.
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


def _rgb_array(image) -> np.ndarray:
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
    """``x`` as float32: ``uint8`` values divided by 255, floating values unchanged."""
    if x.dtype == torch.uint8:
        return x.float() / 255
    if x.is_floating_point():
        return x.float()
    raise TypeError(f"expected uint8 or floating-point pixels, got dtype {x.dtype}")


def _stats(model=None, mean=None, std=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel ``(mean, std)`` to use: given ones first, then the model's, then ImageNet's."""
    mean = mean if mean is not None else getattr(model, "mean", IMAGENET_MEAN)
    std = std if std is not None else getattr(model, "std", IMAGENET_STD)
    for name, v in (("mean", mean), ("std", std)):
        if len(v) != 3:
            raise ValueError(f"{name} must have 3 values (one per RGB channel), got {len(v)}: {tuple(v)}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _per_channel(values, x: torch.Tensor) -> torch.Tensor:
    """``values`` (3 numbers) as a tensor of shape ``[3, 1, 1]`` with ``x``'s dtype and device."""
    return torch.as_tensor(values, dtype=x.dtype, device=x.device).view(3, 1, 1)


def _check_channels(x: torch.Tensor) -> None:
    """Raise unless ``x`` has shape ``[N, 3, H, W]`` or ``[3, H, W]``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected a tensor of shape [N, 3, H, W] or [3, H, W], got shape {list(x.shape)}")


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x - mean) / std`` per colour channel, for ``x`` of shape ``[N, 3, H, W]`` (or ``[3, H, W]``)."""
    _check_channels(x)
    return (x - _per_channel(mean, x)) / _per_channel(std, x)


def denormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``x * std + mean`` per colour channel: the inverse of :func:`normalize`."""
    _check_channels(x)
    return x * _per_channel(std, x) + _per_channel(mean, x)


def _model_device(model):
    """The device of the model's parameters, or None for no model or a model without parameters."""
    if model is None:
        return None
    first = next(iter(model.parameters()), None)
    return None if first is None else first.device


def preprocess(image, model=None, size=None, mean=None, std=None) -> torch.Tensor:
    """A batch of one image, ``[1, 3, S, S]``, ready to feed to ``model``.

    1. ``image`` becomes a ``[3, H, W]`` tensor in ``[0, 1]`` (see :func:`to_tensor`);
    2. if a size ``S`` is known (``size``, else ``model.input_size``), the image is
       resized so its shorter side is ``S`` and the centre ``S x S`` square is cut out;
       with neither ``size`` nor ``model`` it keeps its own size ``H x W``;
    3. each channel is normalized, ``(x - mean) / std``, with the given statistics,
       else the model's, else ImageNet's.

    The result is on the model's device when the model has parameters.
    """
    x = to_tensor(image).unsqueeze(0)
    if size is None:
        size = getattr(model, "input_size", None)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        x = fit_to_square(x, size)
    x = normalize(x, *_stats(model, mean, std))
    device = _model_device(model)
    return x if device is None else x.to(device)


def deprocess(t: torch.Tensor, model=None, mean=None, std=None) -> np.ndarray:
    """The image a normalized tensor shows: an ``H x W x 3`` float array in ``[0, 1]``.

    Undoes :func:`preprocess`'s normalization (``x * std + mean``) and clips to
    ``[0, 1]``. ``t`` is ``[1, 3, H, W]`` or ``[3, H, W]``, on any device, with or
    without gradients.
    """
    _check_channels(t)
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(
                f"expected one image, got a batch of {t.shape[0]} (shape {list(t.shape)}); "
                f"deprocess the images one at a time, e.g. deprocess(t[i])")
        t = t[0]
    x = denormalize(t.detach().float(), *_stats(model, mean, std)).clamp(0, 1)
    return x.permute(1, 2, 0).cpu().numpy()


# --------------------------------------------------------------------------- arrays for display

def _to_numpy(x) -> np.ndarray:
    """``x`` (numpy array, tensor on any device, or nested list) as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def rescale(x) -> np.ndarray:
    """``(x - min) / (max - min)``: the values of ``x`` stretched to fill ``[0, 1]``.

    ``x`` is any numpy array or tensor; the result is a new float numpy array of
    the same shape. A constant ``x`` (``max == min``) gives all zeros.
    """
    x = _to_numpy(x).astype(np.float64)
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
    images = [_to_numpy(im) for im in images]
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


def _colormap(cmap) -> matplotlib.colors.Colormap:
    """A matplotlib colormap from its name (``"jet"``, ``"viridis"``, ...) or the colormap itself."""
    if isinstance(cmap, matplotlib.colors.Colormap):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; try 'jet', 'viridis', 'inferno' or 'gray'") from None


def _resize_2d(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The 2-D array ``a`` resized to ``size = (H, W)`` by bilinear interpolation."""
    t = torch.from_numpy(a)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay_heatmap(image, heatmap, alpha=0.5, cmap="jet") -> np.ndarray:
    """``image`` with a coloured ``heatmap`` laid over it: ``(1 - alpha) * image + alpha * colour``.

    ``image`` is an ``H x W x 3`` array in ``[0, 1]`` (``uint8`` is divided by 255) or
    an RGB PIL image. ``heatmap`` is any 2-D array or tensor; it is min-max scaled to
    ``[0, 1]`` (see :func:`rescale`), resized bilinearly to ``H x W`` if its size
    differs, and coloured with the matplotlib colormap ``cmap``. Returns a new
    ``H x W x 3`` float array in ``[0, 1]``.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number between 0 and 1, got {alpha!r}")
    img = _rgb_array(image)
    heat = _to_numpy(heatmap)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap (H x W), got shape {heat.shape}; "
                         f"drop the batch/channel dimensions first, e.g. heatmap.squeeze()")
    heat = rescale(heat)
    if heat.shape != img.shape[:2]:
        heat = np.clip(_resize_2d(heat, img.shape[:2]), 0, 1)
    colour = _colormap(cmap)(heat)[..., :3]
    return np.clip((1 - alpha) * img + alpha * colour, 0, 1)


# --------------------------------------------------------------------------- plotting

def _display_array(img, mean=None, std=None) -> np.ndarray:
    """Something to show, as an ``H x W`` or ``H x W x 3`` numpy array.

    PIL images (RGB or greyscale ``"L"``) and numpy arrays are taken as they are
    (``uint8`` divided by 255); tensors ``[1, 3, H, W]`` or ``[3, H, W]`` are taken
    to be normalized and are deprocessed; 2-D tensors are taken as they are.
    """
    if isinstance(img, Image.Image):
        return np.asarray(img) / 255 if img.mode == "L" else _rgb_array(img)
    if isinstance(img, torch.Tensor) and img.ndim != 2:
        return deprocess(img, mean=mean, std=std)
    a = _to_numpy(img)
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 3:
        return _rgb_array(a)
    raise ValueError(f"expected an H x W or H x W x 3 image, got shape {a.shape}")


def _axes_or_new(ax, figsize=(4, 4)):
    """``ax``, or the single axes of a new figure when ``ax`` is None."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def show_image(img, title=None, ax=None, mean=None, std=None) -> matplotlib.figure.Figure:
    """Draw one image, axes off, and return its figure.

    ``img`` is a PIL image, an ``H x W`` or ``H x W x 3`` array, or a normalized tensor
    ``[1, 3, H, W]`` (deprocessed with ``mean``/``std``, ImageNet's by default).
    2-D images are drawn in grey, stretched to their own range. Draws on ``ax``
    when given, else on a new figure.
    """
    a = _display_array(img, mean, std)
    ax = _axes_or_new(ax)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None)
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return ax.figure


def show_images(images, titles=None, ncols=None, size=2.5, mean=None, std=None) -> matplotlib.figure.Figure:
    """Draw several images side by side (at most 8 per row unless ``ncols`` says), and return the figure.

    Each image is anything :func:`show_image` accepts; ``titles`` (optional) has one
    title per image; each image gets a cell ``size`` inches wide and as tall as the tallest
    image's shape needs (``size`` for square images; less for landscape ones, up to ``size``
    plus room for the title).
    """
    images = [_display_array(im, mean, std) for im in images]
    if not images:
        raise ValueError("show_images needs at least one image, got none")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1):
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    ncols = ncols or min(len(images), 8)
    nrows = math.ceil(len(images) / ncols)
    aspect = min(1.0, max(a.shape[0] / a.shape[1] for a in images))
    height = size * aspect + (0.35 * (1 - aspect) if titles is not None else 0.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * height), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(images):
            show_image(images[i], title=None if titles is None else titles[i], ax=ax)  # already display arrays
        else:
            ax.set_axis_off()
    return fig


def show_heatmap(image, heatmap, alpha=0.5, title=None, ax=None, cmap="jet",
                 mean=None, std=None) -> matplotlib.figure.Figure:
    """Draw ``heatmap`` laid over ``image`` (see :func:`overlay_heatmap`), axes off, and return the figure.

    ``image`` may also be a normalized tensor ``[1, 3, H, W]``, as for :func:`show_image`.
    """
    a = _display_array(image, mean, std)
    if a.ndim != 3:
        raise ValueError(f"expected a colour image (H x W x 3) under the heatmap, got shape {a.shape}")
    return show_image(overlay_heatmap(a, heatmap, alpha=alpha, cmap=cmap), title=title, ax=ax)


# --------------------------------------------------------------------------- live preview while optimising

class LivePreview:
    """An ``ipywidgets.Image`` plus a label that an optimisation updates as it runs.

        preview = LivePreview()
        display(preview.widget)
        optimize(..., callback=preview.update, every=10)

    ``update(step, images, value)`` shows the first image of the batch (pixels in [0, 1]),
    enlarged ``scale`` times, and "step N: J = value".
    """

    def __init__(self, scale: int = 2):
        import ipywidgets as widgets

        self.scale = scale
        self.image = widgets.Image(format="png")
        self.label = widgets.Label("")
        self.widget = widgets.VBox([self.image, self.label])

    def update(self, step: int, images, value: float | None = None) -> None:
        import io

        a = images[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() if isinstance(images, torch.Tensor) \
            else np.asarray(images)
        pil = Image.fromarray((a * 255).round().astype(np.uint8))
        pil = pil.resize((pil.width * self.scale, pil.height * self.scale), Image.NEAREST)
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        self.image.value = buf.getvalue()
        self.label.value = f"step {step + 1}" + ("" if value is None else f": objective {value:.3f}")
