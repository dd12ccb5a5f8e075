"""Saliency by occlusion (Zeiler & Fergus 2014): hide part of the image and watch the score drop.

Slide a ``k x k`` grey patch over the image with stride ``s``. For each position
``w`` of the patch, the **occlusion score** is how much the class score falls:

    d_w = p_c(x) - p_c(x with the pixels of window w replaced by the fill value)

(``p_c`` the softmax probability of class ``c``, or its logit). Positive = the window
held evidence for the class; negative = hiding it helped. Each pixel's saliency is the
mean of ``d_w`` over the windows that cover it:

    S(y, x) = mean over {w : (y, x) in w} of d_w

The windows are placed as in captum's ``Occlusion``: along an axis of ``H`` pixels they
start at ``0, s, 2s, ...``, ``ceil((H - k) / s) + 1`` of them, so the last one reaches
the far edge and, when ``H - k`` is not a multiple of ``s``, hangs over it and is
cropped (not dropped).

Occlusion only needs forward passes: it works for any model, without gradients or
hooks (model-agnostic), but it costs one forward pass per window, e.g. 15 x 15 = 225
passes for a 128 px image with ``k = 16, s = 8``. They are batched here.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .inputs import check_image, check_int, check_number, check_targets, model_device
from .layers import eval_mode
from .models import mean_colour

#: What fills the occluded window (images are pixels in [0, 1]).
FILLS = {
    "mean": "the training images' mean colour, a neutral grey-brown (what the network sees as 0)",
    "black": "pixel value 0 (black)",
}
SCORES = ("prob", "logit")


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Where the windows start along an axis of ``size`` pixels, as captum's ``Occlusion`` places them:

        starts = 0, s, 2s, ..., (n - 1) s    with  n = ceil((size - patch) / stride) + 1

    The last window covers ``[start, min(start + patch, size))``: cropped at the edge.
    """
    return [i * stride for i in range(math.ceil((size - patch) / stride) + 1)]


def _fill_values(fill, model) -> torch.Tensor:
    """The fill as three pixel values ``[3, 1, 1]`` (one per colour channel)."""
    if isinstance(fill, str):
        if fill == "mean":
            return torch.tensor(mean_colour(model), dtype=torch.float32).view(3, 1, 1)
        if fill == "black":
            return torch.zeros(3, 1, 1)
        raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(map(repr, FILLS))} or give a number")
    return torch.full((3, 1, 1), check_number(fill, "fill (a pixel value in [0, 1], or 'mean' or 'black')",
                                              low=0, high=1))


def _as_batch(x, model) -> torch.Tensor:
    """``x`` (pixels ``[N, 3, H, W]`` / ``[3, H, W]`` in [0, 1], or an RGB PIL image) as ``[N, 3, H, W]``."""
    from PIL import Image

    from .imaging import preprocess

    if isinstance(x, Image.Image):
        return preprocess(x, model)  # ValueError for greyscale / RGBA images
    return check_image(x, batch=True, model=model)


def _score(logits: torch.Tensor, c: int, score: str) -> torch.Tensor:
    """The class score of every row: softmax probability or logit of class ``c``."""
    return logits.softmax(dim=1)[:, c] if score == "prob" else logits[:, c]


@torch.no_grad()
def occlusion(model: nn.Module, x, target=None, *, patch: int = 16, stride: int = 8, fill="mean",
              score: str = "prob", batch_size: int = 16, progress: bool = True) -> torch.Tensor:
    """Occlusion saliency of each image in ``x`` for class ``target``: ``[N, H, W]``.

    ``S(y, x) = mean over the windows w covering (y, x) of [p_c(x) - p_c(x with w filled)]``
    (see the module docstring; identical to captum's ``Occlusion`` with
    ``sliding_window_shapes=(3, patch, patch)``, ``strides=(3, stride, stride)``).

    * ``x``: pixel images ``[N, 3, H, W]`` in [0, 1] (or ``[3, H, W]``, or an RGB PIL image,
      preprocessed for the model); of the model's float type
      (:func:`course_lib.inputs.check_image`). Not modified.
    * ``target``: a class index (an int), or one per image (list / tensor), or None for each
      image's predicted class. Floats, bools and strings are refused.
    * ``patch``, ``stride``: window side ``k`` and step ``s`` in pixels (``1 <= s <= k``).
    * ``fill``: ``"mean"`` (the training images' mean colour, :func:`course_lib.models.mean_colour`),
      ``"black"`` (pixel value 0), or a number (a grey level in [0, 1]).
    * ``score``: ``"prob"`` (softmax probability, default) or ``"logit"``.
    * ``batch_size``: occluded images per forward pass (16 was fastest on a 2-core CPU for
      the course model: bigger batches stop fitting in the cache).
    """
    x = _as_batch(x, model)
    x = x.to(model_device(model))  # a copy only when the devices differ; never modified
    n, _, h, w = x.shape
    patch, stride = check_int(patch, "patch", low=1), check_int(stride, "stride", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    if patch > h or patch > w:
        raise ValueError(f"patch {patch} is larger than the {h}x{w} image")
    if stride > patch and (patch < h or patch < w):
        raise ValueError(f"stride {stride} is larger than the patch {patch}: some pixels would never be occluded")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    device = x.device
    fill_values = _fill_values(fill, model).to(device=device, dtype=x.dtype)

    windows = [(t, l) for t in window_starts(h, patch, stride) for l in window_starts(w, patch, stride)]
    count = torch.zeros(h, w, device=device)
    for t, l in windows:
        count[t:t + patch, l:l + patch] += 1

    from tqdm.auto import tqdm

    heat = torch.zeros(n, h, w, device=device)
    chunks = [windows[i:i + batch_size] for i in range(0, len(windows), batch_size)]
    with eval_mode(model), tqdm(total=n * len(windows), desc="occlusion", unit="window",
                                 disable=not progress) as bar:
        base_logits = model(x)
        targets = _targets(target, base_logits)
        for b in range(n):
            c = targets[b]
            base = _score(base_logits[b:b + 1], c, score)
            for chunk in chunks:
                # channels-last layout: the faster convolution path on CPUs (same result up to rounding)
                xs = x[b:b + 1].repeat(len(chunk), 1, 1, 1).contiguous(memory_format=torch.channels_last)
                for m, (t, l) in enumerate(chunk):
                    xs[m, :, t:t + patch, l:l + patch] = fill_values
                drop = base - _score(model(xs), c, score)
                for m, (t, l) in enumerate(chunk):
                    heat[b, t:t + patch, l:l + patch] += drop[m]
                bar.update(len(chunk))
    return heat / count


def _targets(target, logits: torch.Tensor) -> list[int]:
    """One class index per image (the predicted class where ``target`` is None), each checked by
    :func:`course_lib.inputs.check_targets`."""
    if target is None:
        return logits.argmax(dim=1).tolist()
    return check_targets(target, logits.shape[1], count=len(logits))


def number_of_windows(size: int, patch: int, stride: int) -> int:
    """How many forward passes occlusion costs for a square ``size x size`` image (one per window)."""
    return len(window_starts(size, patch, stride)) ** 2


def show_occlusion(image, heatmap, title=None, axes=None, alpha: float = 0.5, model=None):
    """Draw ``heatmap`` (``H x W``) two ways beside each other and return the figure:

    left, the signed scores in red (evidence for the class, hiding it lowers the score)
    and blue (hiding it raises the score), white at 0; right, laid over ``image``
    (an ``H x W x 3`` array in [0, 1], a PIL image, or a pixel tensor ``[1, 3, H, W]``).
    Draws on ``axes`` (two axes) when given.
    """
    import matplotlib.pyplot as plt

    from .figures import show_heatmap

    heat = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap (H x W), got shape {heat.shape}")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(7, 3.4))
    vmax = float(np.abs(heat).max()) or 1.0
    im = axes[0].imshow(heat, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    axes[0].set_axis_off()
    axes[0].set_title("score drop (red: evidence)")
    axes[0].figure.colorbar(im, ax=axes[0], fraction=0.046, pad=0.04)
    show_heatmap(image, np.clip(heat, 0, None), alpha=alpha, ax=axes[1], title=title)
    return axes[0].figure
