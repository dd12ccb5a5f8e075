"""Figures: images, prediction titles and heatmaps drawn with matplotlib, each helper returning its figure.

* :func:`show_image`, :func:`show_images`, :func:`show_image_groups` -- images (PIL, arrays or pixel
  tensors in [0, 1]), one, a row, or blocks of them;
* :func:`prediction_title` -- "pred: X 62% ✗ / true: Y", drawn in red when the prediction is wrong;
* :func:`overlay_heatmap`, :func:`show_heatmap`, :func:`show_heatmaps` -- heatmaps laid over an image,
  with their colour scales (:func:`heatmap_scales`: shared, or one per map) shown in colour bars;
* :func:`crop_padding` -- a patch without the padding around it.

The conversions they build on (tensors to arrays) are in :mod:`course_lib.imaging`.
"""
from __future__ import annotations

import math

import matplotlib
import matplotlib.cm
import matplotlib.colors
import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .imaging import rgb_array, to_array, to_numpy


# --------------------------------------------------------------------------- heatmaps over images

def _colormap(cmap) -> matplotlib.colors.Colormap:
    """A matplotlib colormap from its name (``"jet"``, ``"viridis"``, ...) or the colormap itself."""
    if isinstance(cmap, matplotlib.colors.Colormap):
        return cmap
    try:
        return matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; try 'jet', 'viridis', 'inferno' or 'gray'") from None


def _scaled(heat: np.ndarray, vmin=None, vmax=None) -> np.ndarray:
    """``(heat - vmin) / (vmax - vmin)`` clipped to ``[0, 1]``; a missing limit is the map's own min or max.
    ``vmax == vmin`` gives all zeros."""
    lo = float(heat.min()) if vmin is None else float(vmin)
    hi = float(heat.max()) if vmax is None else float(vmax)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"the colour scale must have finite limits, got vmin={lo}, vmax={hi}")
    if hi < lo:
        raise ValueError(f"vmax ({hi}) must not be smaller than vmin ({lo})")
    if hi == lo:
        return np.zeros_like(heat)
    return np.clip((heat - lo) / (hi - lo), 0, 1)


def _resize_2d(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The 2-D array ``a`` resized to ``size = (H, W)`` by bilinear interpolation."""
    t = torch.from_numpy(a)[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay_heatmap(image, heatmap, alpha=0.5, cmap="jet", vmin=None, vmax=None) -> np.ndarray:
    """``image`` with a coloured ``heatmap`` laid over it: ``(1 - alpha) * image + alpha * colour``.

    ``image`` is an ``H x W x 3`` array in ``[0, 1]`` (``uint8`` is divided by 255) or
    an RGB PIL image. ``heatmap`` is any 2-D array or tensor. Its colour scale runs from
    ``vmin`` to ``vmax``: ``(heatmap - vmin) / (vmax - vmin)``, clipped to ``[0, 1]``; a limit
    not given is the map's own minimum or maximum, so by default the map is min-max
    scaled (see :func:`course_lib.imaging.rescale`) and every map fills the whole colormap, however weak.
    Give both limits to draw maps that are compared on one scale. The scaled map is
    resized bilinearly to ``H x W`` if its size differs, and coloured with the matplotlib
    colormap ``cmap``. Returns a new ``H x W x 3`` float array in ``[0, 1]``.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number between 0 and 1, got {alpha!r}")
    img = rgb_array(image)
    heat = to_numpy(heatmap)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap (H x W), got shape {heat.shape}; "
                         f"drop the batch/channel dimensions first, e.g. heatmap.squeeze()")
    heat = _scaled(heat.astype(np.float64), vmin, vmax)
    if heat.shape != img.shape[:2]:
        heat = np.clip(_resize_2d(heat, img.shape[:2]), 0, 1)
    colour = _colormap(cmap)(heat)[..., :3]
    return np.clip((1 - alpha) * img + alpha * colour, 0, 1)


# --------------------------------------------------------------------------- plotting

def _display_array(img) -> np.ndarray:
    """Something to show, as an ``H x W`` or ``H x W x 3`` numpy array.

    PIL images (RGB or greyscale ``"L"``) and numpy arrays are taken as they are
    (``uint8`` divided by 255); pixel tensors ``[1, 3, H, W]`` or ``[3, H, W]`` go through
    :func:`course_lib.imaging.to_array`; 2-D tensors are taken as they are.
    """
    if isinstance(img, Image.Image):
        return np.asarray(img) / 255 if img.mode == "L" else rgb_array(img)
    if isinstance(img, torch.Tensor) and img.ndim != 2:
        return to_array(img)
    a = to_numpy(img)
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 3:
        return rgb_array(a)
    raise ValueError(f"expected an H x W or H x W x 3 image, got shape {a.shape}")


def _axes_or_new(ax, figsize=(4, 4)):
    """``ax``, or the single axes of a new figure when ``ax`` is None."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def show_image(img, title=None, ax=None, fontsize=None) -> matplotlib.figure.Figure:
    """Draw one image, axes off, and return its figure.

    ``img`` is a PIL image, an ``H x W`` or ``H x W x 3`` array, or a pixel tensor
    ``[1, 3, H, W]`` / ``[3, H, W]`` in ``[0, 1]``.
    2-D images are drawn in grey, stretched to their own range. Draws on ``ax``
    when given, else on a new figure. A title that flags a mistake (it contains
    :data:`MISTAKE`, as :func:`prediction_title` writes for a wrong prediction) is red.
    """
    a = _display_array(img)
    ax = _axes_or_new(ax)
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None)
    ax.set_axis_off()
    _set_title(ax, title, fontsize)
    return ax.figure


# --------------------------------------------------------------------------- titles

MISTAKE = "✗"  # marks a wrong prediction in a title (drawn in red)
CORRECT = "✓"  # marks a right one
MISTAKE_COLOR = "tab:red"


def prediction_title(pred: str, true: str | None = None, p: float | None = None) -> str:
    """A title for a prediction that shows the truth too: ``"pred: X 62% ✗\\ntrue: Y"``.

    ``pred`` and ``true`` are class names, ``p`` (optional) the probability the model gave
    ``pred``. The first line is marked ``✓`` when ``pred == true`` and ``✗`` (:data:`MISTAKE`)
    when not, and the plotting functions draw a title containing ``✗`` in red. Without
    ``true`` there is nothing to check: the title is just the prediction.
    """
    line = f"pred: {pred}" + ("" if p is None else f" {float(p):.0%}")
    if true is None:
        return line
    return f"{line} {CORRECT if pred == true else MISTAKE}\ntrue: {true}"


def _set_title(ax, title, fontsize=None) -> None:
    """``ax.set_title(title)``, in red when the title flags a mistake."""
    if title is None:
        return
    kw = {} if fontsize is None else {"fontsize": fontsize}
    if MISTAKE in str(title):
        kw["color"] = MISTAKE_COLOR
    ax.set_title(title, **kw)


def _fitting_fontsize(titles, width_inches: float, largest: float = 12.0, smallest: float = 7.0) -> float:
    """The largest font size (points, at most ``largest``) at which the longest line of ``titles``
    fits in ``width_inches``, so titles of neighbouring panels do not run into each other."""
    longest = max((len(line) for t in titles if t is not None for line in str(t).split("\n")), default=0)
    if longest == 0:
        return largest
    # DejaVu Sans, matplotlib's default font: a character is about 0.62 em wide on average
    return float(np.clip(0.85 * width_inches * 72 / (0.62 * longest), smallest, largest))


def show_images(images, titles=None, ncols=None, size=2.5) -> matplotlib.figure.Figure:
    """Draw several images side by side (at most 8 per row unless ``ncols`` says), and return the figure.

    Each image is anything :func:`show_image` accepts; ``titles`` (optional) has one
    title per image, set in a font small enough that the longest line fits its cell (titles
    that flag a mistake, see :func:`prediction_title`, are red); each image gets a cell
    ``size`` inches wide and as tall as the tallest image's shape needs (``size`` for square
    images; less for landscape ones, up to ``size`` plus room for the title).
    """
    images = [_display_array(im) for im in images]
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
    fontsize = None if titles is None else _fitting_fontsize(titles, size)
    for i, ax in enumerate(axes.flat):
        if i < len(images):  # already display arrays
            show_image(images[i], title=None if titles is None else titles[i], ax=ax, fontsize=fontsize)
        else:
            ax.set_axis_off()
    return fig


def show_heatmap(image, heatmap, alpha=0.5, title=None, ax=None, cmap="jet",
                 vmin=None, vmax=None, colorbar=False, label=None) -> matplotlib.figure.Figure:
    """Draw ``heatmap`` laid over ``image`` (see :func:`overlay_heatmap`), axes off, and return the figure.

    ``image`` may also be a pixel tensor ``[1, 3, H, W]``, as for :func:`show_image`.
    The colour scale runs from ``vmin`` to ``vmax`` (by default the map's own minimum and
    maximum: every map then looks equally strong). ``colorbar=True`` draws the scale beside
    the image, with the map's values and ``label``. To compare several maps on one scale,
    use :func:`show_heatmaps`.
    """
    a = _display_array(image)
    if a.ndim != 3:
        raise ValueError(f"expected a colour image (H x W x 3) under the heatmap, got shape {a.shape}")
    fig = show_image(overlay_heatmap(a, heatmap, alpha=alpha, cmap=cmap, vmin=vmin, vmax=vmax), title=title, ax=ax)
    if colorbar:
        heat = to_numpy(heatmap)
        lo, hi = (float(heat.min()) if vmin is None else vmin), (float(heat.max()) if vmax is None else vmax)
        _colorbar(fig, [fig.axes[0] if ax is None else ax], lo, hi, cmap, label)
    return fig


def _colorbar(fig, axes, lo: float, hi: float, cmap, label=None, extend="neither"):
    """A colour bar for the scale ``lo``..``hi`` of ``cmap`` beside ``axes``."""
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1), _colormap(cmap))
    return fig.colorbar(mappable, ax=axes, label=label, extend=extend, shrink=0.85, fraction=0.046, pad=0.03)


NORMALIZE = {
    "shared": "one colour scale for all the maps: their strengths compare",
    "each": "every map stretched to its own range: their patterns compare, their strengths do not",
}


def _scale_groups(normalize, n: int) -> list:
    """One group label per map: maps with equal labels share a colour scale (see :func:`heatmap_scales`)."""
    if isinstance(normalize, str):
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {sorted(NORMALIZE)} or a list of group labels, got {normalize!r}")
        return [0] * n if normalize == "shared" else list(range(n))
    groups = list(normalize)
    if len(groups) != n:
        raise ValueError(f"got {n} maps but {len(groups)} group labels in normalize")
    return groups


def heatmap_scales(maps, normalize="shared", vmin=None, vmax=None, symmetric=False,
                   clip=None) -> list[tuple[float, float]]:
    """The colour scale ``(lo, hi)`` of each map in ``maps`` (2-D arrays or tensors).

    ``normalize`` says which maps share a scale: ``"shared"`` (all of them, so a map with
    weaker values looks weaker), ``"each"`` (every map its own: every map looks equally
    strong), or a list of one group label per map (maps with equal labels share a scale;
    for maps whose units differ). Within a group ``hi`` is the largest value (or, with
    ``clip`` = ``q``, the ``q``-quantile of all the group's values, so that a few extreme
    pixels do not wash the rest out) and ``lo`` the smallest value, but never above 0, so
    that a non-negative map starts from 0. ``symmetric=True`` makes ``lo = -hi`` with ``hi``
    the largest absolute value (for signed maps and a diverging colormap). ``vmin`` and
    ``vmax`` fix the limits of every group.
    """
    arrays = [to_numpy(m).astype(np.float64) for m in maps]
    if not arrays:
        raise ValueError("give at least one map")
    for a in arrays:
        if a.ndim != 2:
            raise ValueError(f"expected 2-D maps (H x W), got shape {a.shape}")
    groups = _scale_groups(normalize, len(arrays))
    if clip is not None and not (isinstance(clip, (int, float)) and 0 < clip <= 1):
        raise ValueError(f"clip must be a quantile in (0, 1], got {clip!r}")
    limits = {}
    for g in dict.fromkeys(groups):
        values = np.concatenate([a.ravel() for a, k in zip(arrays, groups) if k == g])
        values = np.abs(values) if symmetric else values
        hi = float(np.quantile(values, clip)) if clip is not None else float(values.max())
        lo = -hi if symmetric else min(0.0, float(values.min()))
        lo, hi = (lo if vmin is None else float(vmin)), (hi if vmax is None else float(vmax))
        limits[g] = (lo, hi)
    return [limits[g] for g in groups]


def show_heatmaps(maps, image=None, normalize="shared", *, titles=None, label=None, vmin=None, vmax=None,
                  symmetric=False, clip=None, cmap="jet", alpha=0.5, overlay=True, image_title="image",
                  ncols=None, size=2.6, suptitle=None) -> matplotlib.figure.Figure:
    """Draw several heatmaps with their colour scales shown, and return the figure.

    ``maps`` is a dict ``{title: map}`` or a list of maps (with ``titles``). ``normalize``
    says which maps share a colour scale (see :func:`heatmap_scales`): ``"shared"`` (the
    default: maps that are compared, say one image explained for several classes, at several
    layers or by methods with the same units), ``"each"`` (every map its own scale, said in
    its colour bar: shapes compare, strengths do not), or a list of group labels. Each scale
    gets one colour bar, labelled ``label`` (a string, or a dict ``{group: label}``) and
    saying whether it is shared. ``vmin``, ``vmax``, ``symmetric`` and ``clip`` as in
    :func:`heatmap_scales`.

    ``image`` is None (the maps are drawn as they are), one image (drawn first, titled
    ``image_title``, then every map laid over it) or a list of one image per map (each map
    laid over its own image). With ``overlay=False`` the maps are drawn as they are next
    to the image (one image), or below their images (a list; ``image_title`` may then be a
    list of one title per image). Images are anything :func:`show_image` accepts; maps are
    resized to their image for an overlay.
    ``ncols`` wraps the panels into rows; each panel is ``size`` inches wide.
    """
    if isinstance(maps, dict):
        if titles is not None:
            raise ValueError("give titles either as the keys of a dict of maps or as titles=, not both")
        titles, maps = list(maps), list(maps.values())
    maps = [to_numpy(m).astype(np.float64) for m in maps]
    if titles is not None and len(titles) != len(maps):
        raise ValueError(f"got {len(maps)} maps but {len(titles)} titles")
    scales = heatmap_scales(maps, normalize, vmin=vmin, vmax=vmax, symmetric=symmetric, clip=clip)
    groups = _scale_groups(normalize, len(maps))
    shared = {g: groups.count(g) > 1 for g in groups}
    titles = list(titles) if titles is not None else [None] * len(maps)

    many = isinstance(image, (list, tuple))
    images = [_display_array(im) for im in image] if many else \
        ([] if image is None else [_display_array(image)])
    if many and len(images) != len(maps):
        raise ValueError(f"got {len(maps)} maps but {len(images)} images")
    # panels: (kind, index); kind "image" draws images[index], "map" draws maps[index]
    if many and not overlay:
        panels = [("image", i) for i in range(len(images))] + [("map", i) for i in range(len(maps))]
        ncols = ncols or len(maps)
    else:
        panels = ([("image", 0)] if (images and not many) else []) + [("map", i) for i in range(len(maps))]
        ncols = ncols or len(panels)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size + 1.0, nrows * (size + 0.3)), squeeze=False,
                             layout="constrained")
    image_titles = list(image_title) if isinstance(image_title, (list, tuple)) else [image_title] * len(images)
    if len(image_titles) != len(images):
        raise ValueError(f"got {len(images)} images but {len(image_titles)} image titles")
    if many and overlay:
        image_titles = [None] * len(images)               # no image panels: the maps carry the titles
    fontsize = _fitting_fontsize(image_titles + titles, size)
    map_axes = {}
    for ax, (kind, i) in zip(axes.flat, panels):
        if kind == "image":
            show_image(images[i], title=image_titles[i], ax=ax, fontsize=fontsize)
            continue
        lo, hi = scales[i]
        if images and overlay:
            show_image(overlay_heatmap(images[i] if many else images[0], maps[i], alpha=alpha, cmap=cmap,
                                       vmin=lo, vmax=hi), ax=ax, title=titles[i], fontsize=fontsize)
        else:
            ax.imshow(maps[i], cmap=_colormap(cmap), vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_axis_off()
            _set_title(ax, titles[i], fontsize)
        map_axes.setdefault(groups[i], []).append((ax, i))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    for g, members in map_axes.items():
        lo, hi = scales[members[0][1]]
        above = max(float(maps[i].max()) for _, i in members) > hi
        below = min(float(maps[i].min()) for _, i in members) < lo
        extend = {(True, True): "both", (True, False): "max", (False, True): "min"}.get((above, below), "neither")
        what = label.get(g) if isinstance(label, dict) else label
        scope = "shared scale" if shared[g] else ("own scale" if len(maps) > 1 else None)
        text = ", ".join(t for t in (what, scope) if t)
        _colorbar(fig, [ax for ax, _ in members], lo, hi, cmap, text or None, extend=extend)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def crop_padding(image, value=np.nan) -> np.ndarray:
    """``image`` (``H x W`` or ``H x W x 3``) without the rows and columns along its borders in which
    every pixel equals ``value`` (NaN: is NaN), e.g. the grey that pads a receptive field where it
    leaves the image. An image that is all padding comes back as it was."""
    a = to_numpy(image)
    pad = np.isnan(a) if isinstance(value, float) and math.isnan(value) else (a == value)
    if a.ndim == 3:
        pad = pad.all(axis=2)
    rows, cols = np.flatnonzero(~pad.all(axis=1)), np.flatnonzero(~pad.all(axis=0))
    if rows.size == 0:
        return a
    return a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def show_image_groups(groups: dict, per_row: int = 3, ncols: int = 2, size: float = 1.6,
                      suptitle=None) -> matplotlib.figure.Figure:
    """Draw ``{title: [images]}`` as blocks of small images, ``per_row`` images per row in a block and
    ``ncols`` blocks side by side; each image is ``size`` inches at most (its aspect kept, so a cropped
    image is not stretched). For the top patches of several channels, one block per channel."""
    if not groups:
        raise ValueError("show_image_groups needs at least one group")
    ncols = min(ncols, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    inner = max(math.ceil(len(v) / per_row) for v in groups.values())
    fig = plt.figure(figsize=(ncols * per_row * size, nrows * (inner * size + 0.45) + (0.4 if suptitle else 0)),
                     layout="constrained")
    blocks = fig.subfigures(nrows, ncols, squeeze=False, wspace=0.04, hspace=0.04)
    for block in blocks.flat[len(groups):]:
        block.set_facecolor("none")
    for block, (title, images) in zip(blocks.flat, groups.items()):
        axes = block.subplots(inner, per_row, squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, im in zip(axes.flat, images):
            show_image(im, ax=ax)
        block.suptitle(title, **({"color": MISTAKE_COLOR} if MISTAKE in str(title) else {}))
    if suptitle:
        fig.suptitle(suptitle, fontsize=13)
    return fig
