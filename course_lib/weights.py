"""Looking at the weights: a convolution's filters drawn as pictures.

A convolution layer holds a weight tensor ``W`` of shape ``[N, C, h, w]``: ``N`` filters,
each a little ``C x h x w`` block of numbers that is slid over the layer's input.

* In the **first layer** the input is the RGB image, so ``C == 3`` and each filter *is*
  a tiny colour image: :func:`rgb_filter_grid` draws the ``N`` filters side by side in a
  near-square grid (64 filters: 8 x 8).
* **Deeper** filters look at ``C`` feature maps, not at colours, so each filter is
  drawn as ``C`` greyscale ``h x w`` images in a row, one row ("bracket") per filter:
  :func:`channel_filter_grid`.

Weights are positive and negative numbers, so before drawing each filter is
**min-max scaled on its own** (:func:`minmax_per_filter`)::

    W'_i = (W_i - min W_i) / (max W_i - min W_i)        (0 = black, 1 = white)

so mid-grey is roughly "weight zero" and only the pattern within a filter is shown,
not how strong it is compared to the others. Kernels are tiny (3x3, 5x5), so they are
enlarged by repeating each weight ``s x s`` times (nearest-neighbour upscaling,
:func:`upscale_nearest`): every weight stays one crisp square.

Every function takes either a weight tensor, or a model and a layer name
(``rgb_filter_grid(model, "conv1_1")``).
"""
from __future__ import annotations

import math

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from .imaging import make_grid
from .layers import conv_layers, get_layer  # noqa: F401  (conv_layers: also part of this module's API)


# --------------------------------------------------------------------------- getting the weights

def conv_weight(source, layer: str | None = None) -> torch.Tensor:
    """The weight tensor ``[N, C, h, w]`` to draw, as a new float32 CPU tensor.

    ``source`` is a weight tensor (then ``layer`` must be None), or a model together
    with the name of one of its convolution layers.
    """
    if isinstance(source, nn.Module):
        if layer is None:
            raise TypeError("with a model, also give the name of a convolution layer, "
                            f"e.g. one of {', '.join(conv_layers(source)[:4])}")
        module = get_layer(source, layer)
        if not isinstance(module, nn.Conv2d):
            raise TypeError(f"layer {layer!r} is a {type(module).__name__}, not a Conv2d: only convolution "
                            f"filters can be drawn as images. Convolution layers: {', '.join(conv_layers(source))}")
        w = module.weight
    elif isinstance(source, torch.Tensor):
        if layer is not None:
            raise TypeError("a layer name is only used with a model, not with a weight tensor")
        w = source
    else:
        raise TypeError(f"expected a weight tensor or a model, got {type(source).__name__}")
    if w.ndim != 4:
        raise ValueError(f"expected a convolution weight of shape [N, C, h, w], got shape {list(w.shape)}")
    if not w.is_floating_point():
        raise TypeError(f"expected floating-point weights, got dtype {w.dtype}")
    return w.detach().to("cpu", torch.float32, copy=True)


def _count(n, total: int, what: str) -> int:
    """``min(n, total)`` for a positive int ``n`` (None = all)."""
    if n is None:
        return total
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what} must be a positive int or None (all), got {n!r}")
    return min(n, total)


# --------------------------------------------------------------------------- scaling

def minmax_per_filter(w: torch.Tensor) -> torch.Tensor:
    """Each filter of ``w`` ``[N, ...]`` stretched on its own to ``[0, 1]``:
    ``(W_i - min W_i) / (max W_i - min W_i)``; a constant filter becomes all zeros."""
    flat = w.reshape(w.shape[0], -1)
    lo = flat.min(dim=1).values
    span = flat.max(dim=1).values - lo
    out = (flat - lo[:, None]) / torch.where(span > 0, span, torch.ones_like(span))[:, None]
    return out.reshape(w.shape)


def minmax_per_image(w: torch.Tensor) -> torch.Tensor:
    """Each ``h x w`` slice ``W[i, c]`` of ``w`` ``[N, C, h, w]`` stretched on its own to ``[0, 1]``."""
    n, c, h, ww = w.shape
    return minmax_per_filter(w.reshape(n * c, h, ww)).reshape(w.shape)


def upscale_nearest(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Repeat every pixel of ``x`` ``[..., h, w]`` into a ``scale x scale`` square: ``[..., s*h, s*w]``."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def default_scale(kernel_size: int, target: int = 15) -> int:
    """Upscaling factor that makes a kernel about ``target`` pixels wide (3x3 -> 5, 5x5 -> 3, 11x11 -> 1)."""
    return max(1, round(target / kernel_size))


# --------------------------------------------------------------------------- grids

def rgb_filter_grid(source, layer: str | None = None, n: int | None = None, scale: int | None = None,
                    padding: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """First-layer filters (``C == 3``) as colour images in a near-square grid: an ``H x W x 3`` array.

    The first ``n`` filters (default: all) are each min-max scaled to ``[0, 1]`` on
    their own, enlarged ``scale`` times by nearest-neighbour upscaling (default:
    :func:`default_scale`), and tiled with :func:`course_lib.imaging.make_grid`
    (``ceil(sqrt(n))`` per row, ``padding`` pixels of ``pad_value`` between and around
    them). For 64 filters of size ``k x k``: an 8 x 8 grid of height and width
    ``8 * s * k + 9 * padding``.
    """
    w = conv_weight(source, layer)
    if w.shape[1] != 3:
        raise ValueError(f"colour pictures need 3 input channels (RGB), this weight has {w.shape[1]} "
                         f"(shape {list(w.shape)}); use channel_filter_grid for deeper layers")
    w = w[:_count(n, w.shape[0], "n")]
    s = default_scale(max(w.shape[-2:])) if scale is None else scale
    images = upscale_nearest(minmax_per_filter(w), s).permute(0, 2, 3, 1)  # [n, s*h, s*w, 3]
    return make_grid(images, padding=padding, pad_value=pad_value)


def channel_filter_grid(source, layer: str | None = None, n_filters: int | None = None,
                        n_channels: int | None = None, scale: int | None = None, per: str = "filter",
                        padding: int = 1, gap: int = 3, pad_value: float = 1.0) -> np.ndarray:
    """Deeper filters as greyscale images: an ``H x W`` array with one row per filter.

    Filter ``i`` (of the first ``n_filters``) becomes a row of ``n_channels`` greyscale
    ``h x w`` images, ``W[i, 0], W[i, 1], ...`` (its weights on each input channel),
    separated by ``padding`` pixels; rows are separated (and framed) by ``gap`` pixels,
    so each filter sits in its own bracket. With ``N`` rows of ``C`` images of size
    ``s*h x s*w`` the array has height ``N * s*h + (N + 1) * gap`` and width
    ``C * s*w + (C - 1) * padding + 2 * gap``.

    ``per="filter"`` min-max scales each whole filter (all its ``C`` channels) on its own,
    so the channels of one filter can be compared; ``per="image"`` scales each
    ``h x w`` image on its own, showing every pattern at full contrast.
    """
    w = conv_weight(source, layer)
    if per == "filter":
        w = minmax_per_filter(w)
    elif per == "image":
        w = minmax_per_image(w)
    else:
        raise ValueError(f"per must be 'filter' or 'image', got {per!r}")
    for name, v in (("padding", padding), ("gap", gap)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    w = w[:_count(n_filters, w.shape[0], "n_filters"), :_count(n_channels, w.shape[1], "n_channels")]
    s = default_scale(max(w.shape[-2:])) if scale is None else scale
    w = upscale_nearest(w, s).numpy()
    n, c, h, ww = w.shape
    grid = np.full((n * h + (n + 1) * gap, c * ww + (c - 1) * padding + 2 * gap), pad_value, dtype=np.float64)
    for i in range(n):
        top = gap + i * (h + gap)
        for j in range(c):
            left = gap + j * (ww + padding)
            grid[top:top + h, left:left + ww] = w[i, j]
    return grid


def filter_grid(source, layer: str | None = None, n_filters: int | None = None,
                n_channels: int | None = None, scale: int | None = None, per: str = "filter") -> np.ndarray:
    """:func:`rgb_filter_grid` when the filters have 3 input channels, else :func:`channel_filter_grid`."""
    w = conv_weight(source, layer)
    if w.shape[1] == 3:
        return rgb_filter_grid(w, n=n_filters, scale=scale)
    return channel_filter_grid(w, n_filters=n_filters, n_channels=n_channels, scale=scale, per=per)


def show_filters(source, layer: str | None = None, n_filters: int | None = None,
                 n_channels: int | None = None, scale: int | None = None, per: str = "filter",
                 title: str | None = None, ax=None, dpi: int = 100) -> matplotlib.figure.Figure:
    """Draw :func:`filter_grid` (pixel-exact, no smoothing) and return the figure.

    The title says the layer, the weight shape and what is shown.
    """
    w = conv_weight(source, layer)
    grid = filter_grid(w, n_filters=n_filters, n_channels=n_channels, scale=scale, per=per)
    if ax is None:
        h, wd = grid.shape[:2]
        width = min(14.0, max(5.0, 2.5 * wd / dpi))  # inches: small grids are drawn bigger
        height = min(14.0, width * h / wd) + 0.4  # room for the title
        _, ax = plt.subplots(figsize=(width, height), dpi=dpi, layout="constrained")
    ax.imshow(grid, cmap=None if grid.ndim == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title is None:
        nf = _count(n_filters, w.shape[0], "n_filters")
        what = (f"first {nf} filters as RGB" if w.shape[1] == 3 else
                f"first {nf} filters (rows) x {_count(n_channels, w.shape[1], 'n_channels')} input channels")
        title = f"{layer + ': ' if layer else ''}weight {list(w.shape)}, {what}"
    ax.set_title(title, fontsize=9)
    return ax.figure


# --------------------------------------------------------------------------- are first-layer filters edges?

def gabor(size: int, x0: float, y0: float, theta: float, sigma_x: float, sigma_y: float,
          freq: float, phase: float, amplitude: float = 1.0, offset: float = 0.0) -> np.ndarray:
    """A 2-D Gabor function sampled on a ``size x size`` grid (pixel centres ``0 .. size-1``):

        g(x, y) = A exp(-x'^2 / (2 sx^2) - y'^2 / (2 sy^2)) cos(2 pi f x' + phase) + c
        x' =  (x - x0) cos(theta) + (y - y0) sin(theta)      (across the stripes)
        y' = -(x - x0) sin(theta) + (y - y0) cos(theta)      (along the stripes)

    ``f`` is in cycles per pixel (0 ... 0.5); with ``f = 0`` it is a Gaussian blob.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    xr = (xx - x0) * math.cos(theta) + (yy - y0) * math.sin(theta)
    yr = -(xx - x0) * math.sin(theta) + (yy - y0) * math.cos(theta)
    envelope = np.exp(-xr ** 2 / (2 * sigma_x ** 2) - yr ** 2 / (2 * sigma_y ** 2))
    return amplitude * envelope * np.cos(2 * math.pi * freq * xr + phase) + offset


def fit_gabor(kernel) -> tuple[dict, float]:
    """Least-squares fit of :func:`gabor` to one square 2-D kernel; returns ``(parameters, R^2)``.

    ``R^2 = 1 - sum (k - g)^2 / sum (k - mean k)^2``: the share of the kernel's variance the
    best Gabor explains. The fit (``scipy.optimize.least_squares``) starts from 4 orientations
    x 2 frequencies x 2 phases and keeps the best.
    """
    from scipy.optimize import least_squares

    k = np.asarray(kernel, dtype=float)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"expected one square 2-D kernel, got shape {k.shape}")
    n = k.shape[0]
    names = ("x0", "y0", "theta", "sigma_x", "sigma_y", "freq", "phase", "amplitude", "offset")
    lo = [-0.5, -0.5, -np.inf, 0.4, 0.4, 0.0, -np.inf, -np.inf, -np.inf]
    hi = [n - 0.5, n - 0.5, np.inf, 2.0 * n, 2.0 * n, 0.5, np.inf, np.inf, np.inf]
    ss_tot = float(((k - k.mean()) ** 2).sum())
    if ss_tot == 0:
        return dict(zip(names, [(n - 1) / 2] * 2 + [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, float(k.mean())])), 0.0
    scale = float(np.abs(k - k.mean()).max())
    best = None
    for theta in (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4):
        for phase in (0.0, math.pi / 2):
            p0 = [(n - 1) / 2, (n - 1) / 2, theta, n / 4, n / 4, 0.15, phase, scale, float(k.mean())]
            res = least_squares(lambda p: (gabor(n, *p) - k).ravel(), p0, bounds=(lo, hi), max_nfev=200)
            if best is None or res.cost < best.cost:
                best = res
    r2 = 1.0 - 2 * best.cost / ss_tot
    return dict(zip(names, (float(v) for v in best.x))), float(r2)


def is_oriented(params: dict, size: int, min_cycles: float = 0.15) -> bool:
    """Whether a Gabor fitted to a ``size x size`` kernel is an oriented edge/bar detector rather
    than a blob or a ramp: one whole period fits in the kernel (``1 / f <= size``) and the envelope
    spans at least ``min_cycles`` periods across the stripes (``f * sigma_x >= min_cycles``), so
    the filter changes sign across its orientation. A colour blob fits with ``f ~ 0``, a smooth
    ramp with a period longer than the kernel."""
    f = params["freq"]
    return f * size >= 1.0 and f * params["sigma_x"] >= min_cycles


def first_colour_component(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """Split one RGB filter ``[3, h, w]`` into a colour and a spatial pattern (rank-1 SVD):

        W[c, y, x] - mean_c  ~  u_c * s(y, x),    |u| = 1

    ``u`` is the filter's main colour direction (e.g. ``(0.6, 0.6, 0.6)``: light vs dark;
    ``(0.7, -0.7, 0)``: red vs green), ``s`` its spatial pattern. Returns ``(u, s, share)``
    with ``share`` the fraction of the filter's variance this one component holds.
    """
    a = w.reshape(3, -1).double().numpy()
    a = a - a.mean(axis=1, keepdims=True)
    u, sv, vt = np.linalg.svd(a, full_matrices=False)
    total = float((sv ** 2).sum())
    s = (sv[0] * vt[0]).reshape(w.shape[1:])
    if u[:, 0].sum() < 0:  # sign convention: the colour direction leans towards "light"
        u, s = -u, -s
    return u[:, 0], s, float(sv[0] ** 2 / total) if total > 0 else 0.0


def edge_like_share(source, layer: str | None = None, r2_min: float = 0.5,
                    progress: bool = True) -> tuple[float, list]:
    """The first layer's figure of merit: the share of RGB filters that are **oriented Gabors
    in one colour direction** -- the AlexNet picture of light/dark edges and colour-opponent edges.

    For each filter, :func:`first_colour_component` gives a colour ``u`` and a spatial pattern
    ``s``; :func:`fit_gabor` fits ``s`` with a Gabor ``g``. The filter counts as edge-like when

    * ``u (x) g`` explains at least ``r2_min`` of the whole filter's variance, all three channels
      (``R^2 = 1 - |W - u (x) g|^2 / |W - mean_c W|^2``: noisy or multi-coloured filters fail), and
    * ``g`` is oriented (:func:`is_oriented`): blobs of colour fail.

    Returns ``(share, fits)`` with one dict per filter: ``colour``, ``gabor`` (parameters),
    ``r2`` and ``edge_like``.
    """
    w = conv_weight(source, layer)
    if w.shape[1] != 3:
        raise ValueError(f"edge_like_share needs RGB filters [N, 3, h, w], got {list(w.shape)}: "
                         f"use the first convolution layer")
    from tqdm.auto import tqdm

    fits = []
    for f in tqdm(w, desc="Gabor fits", unit="filter", disable=not progress, leave=False):
        u, s, share = first_colour_component(f)
        params, r2_s = fit_gabor(s)
        r2 = share * r2_s  # the component holds `share` of the variance, the Gabor `r2_s` of that
        oriented = is_oriented(params, size=s.shape[-1])
        fits.append({"colour": u, "gabor": params, "r2": r2, "edge_like": bool(r2 >= r2_min and oriented)})
    return sum(f["edge_like"] for f in fits) / len(fits), fits
