"""Saliency via backpropagation (lecture notebook 03).

Which pixels would change a score most? Every method here differentiates a score
``S`` (a class logit, or one unit of a layer) with respect to the input image ``x``:

* :func:`gradient` -- ``dS/dx``, one backward pass;
* :func:`vanilla_saliency` -- Simonyan et al. (2014): ``M_ij = max_c |dS/dx_cij|``;
* :func:`smoothgrad` -- Smilkov et al. (2017): the gradient averaged over noisy copies of ``x``;
* :func:`integrated_gradients` -- Sundararajan et al. (2017): gradients summed along the
  straight path from a baseline image to ``x``;
* :func:`guided_backprop` -- Springenberg et al. (2015): the backward pass through every
  ReLU keeps only positive gradients where the forward input was positive;
* :func:`grabcut_from_saliency` -- Simonyan et al.'s weakly supervised segmentation:
  seed OpenCV's GrabCut with the most and the least salient pixels.

Conventions. ``x`` is ONE image of pixels in [0, 1], ``[1, 3, H, W]`` (as from
``course_lib.imaging.preprocess``) or ``[3, H, W]``; gradients are per pixel (the model
normalises its own input). The score is chosen by

* ``target``: a class index (``None``: the class the model predicts), or
* ``layer`` and ``channel``: a unit of an inner layer (lecture name such as ``"conv4_2"`` or a
  module path) with ``position="max"`` (the channel's maximally responding position in the
  clean image), ``"sum"`` (the whole channel summed) or an explicit ``(row, col)``.

The input is never modified, parameters' ``.grad`` are never touched (gradients are taken
with respect to a copy of the input only), hooks are always removed, and the model runs in
eval mode (each module's mode is restored afterwards). Attributions come back as
``[3, H, W]`` tensors, maps as ``[H, W]`` tensors, on the input's device.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from .inputs import (check_channel, check_image, check_int, check_number, check_position, check_target,
                     model_device)
from .layers import conv_layers, eval_mode, get_layer
from .models import mean_colour

# --------------------------------------------------------------------------- checks and model state


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted layer has run."""


@contextlib.contextmanager
def _capture_output(module: nn.Module, store: list):
    """Put ``module``'s output in ``store`` and stop the forward pass right there.

    Stopping saves the layers above, and it matters: the course model's ReLUs are
    in-place, and the ReLU after a conv would otherwise overwrite the recorded conv output.
    """
    def hook(_m, _inp, out):
        store.append(out)
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _layer_output(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    store: list = []
    with _capture_output(module, store):
        try:
            model(x)
        except _Stop:
            pass
    if not store:
        raise ValueError(f"layer {type(module).__name__} did not run in the model's forward pass")
    return store[0]


# --------------------------------------------------------------------------- the score S


def _objective(model, x, target=None, layer=None, channel=None, position="max"):
    """The score to differentiate, as a function ``score(xb) -> [B]`` of a batch of images.

    Resolved once on the clean image ``x``: the predicted class when ``target`` is None,
    the maximally responding position when ``position == "max"``.
    """
    with torch.no_grad():
        if layer is None:
            if channel is not None:
                raise ValueError("a channel needs a layer: pass layer='conv4_2', channel=... (or a class target)")
            logits = model(x)
            if logits.ndim != 2:
                raise ValueError(f"expected the model to output class scores [N, classes], got {list(logits.shape)}")
            c = check_target(target, logits.shape[1])
            c = int(logits[0].argmax()) if c is None else c
            return lambda xb: model(xb)[:, c]

        if target is not None:
            raise ValueError("give either a class target or a layer and channel, not both")
        module = get_layer(model, layer)
        act = _layer_output(model, module, x)
        if channel is None:
            raise ValueError(f"layer {layer!r} needs a channel (0..{act.shape[1] - 1})")
        k = check_channel(channel, act.shape[1], layer)
        spatial = tuple(act.shape[2:])  # () for a linear layer
        if position == "sum":
            flat = None
        elif position == "max":
            flat = int(act[0, k].flatten().argmax())
        elif isinstance(position, str):
            raise TypeError(f"position must be 'max', 'sum' or a (row, col) tuple, got {position!r}")
        else:
            flat = int(np.ravel_multi_index(check_position(position, spatial, layer), spatial))

    def score(xb):
        unit_map = _layer_output(model, module, xb)[:, k].reshape(len(xb), -1)  # channel k, positions flattened
        return unit_map.sum(1) if flat is None else unit_map[:, flat]

    return score


def _gradients(score, xs: torch.Tensor, batch_size: int = 32, progress: bool = False, desc: str = "") -> torch.Tensor:
    """``dS/dx`` for every image of the batch ``xs`` (in chunks), w.r.t. a copy of the images only."""
    from tqdm.auto import tqdm

    out = []
    with torch.enable_grad():
        for s in tqdm(range(0, len(xs), batch_size), desc=desc, disable=not progress, leave=False):
            xb = xs[s:s + batch_size].detach().clone().requires_grad_(True)
            # Each image's score depends on that image only (eval mode), so d(sum)/dx_i = dS_i/dx_i.
            (g,) = torch.autograd.grad(score(xb).sum(), xb)
            out.append(g)
    return torch.cat(out)


def _prepared(model, x):
    """The checked image (:func:`course_lib.inputs.check_image`) on the model's device, and the
    device to return results on."""
    x = check_image(x, model=model)
    return x.detach().to(model_device(model)), x.device


# --------------------------------------------------------------------------- gradient methods


def gradient(model, x, target=None, *, layer=None, channel=None, position="max") -> torch.Tensor:
    """The gradient of the score with respect to the input image, ``dS/dx``, shape ``[3, H, W]``.

    ``S`` is the unnormalized class score (the logit, not the softmax probability) of class
    ``target`` (default: the predicted class), or a unit of ``layer`` (see the module docstring).
    """
    x, home = _prepared(model, x)
    with eval_mode(model):
        score = _objective(model, x, target, layer, channel, position)
        return _gradients(score, x)[0].to(home)


def saliency_map(attribution: torch.Tensor) -> torch.Tensor:
    """An ``[H, W]`` map from a ``[3, H, W]`` attribution: ``M_ij = max_c |A_cij|`` (Simonyan et al.)."""
    if not isinstance(attribution, torch.Tensor) or attribution.ndim != 3 or attribution.shape[0] != 3:
        raise ValueError("expected an attribution tensor of shape [3, H, W], got "
                         + (f"shape {list(attribution.shape)}" if isinstance(attribution, torch.Tensor)
                            else type(attribution).__name__))
    return attribution.abs().amax(0)


def clip_for_display(saliency, quantile: float = 0.99) -> torch.Tensor:
    """The map with values above its ``quantile`` quantile clipped to it, so that a few very
    bright pixels do not leave the rest of the picture black (for drawing only)."""
    s = torch.as_tensor(saliency).detach().float()
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    return s.clamp(max=float(torch.quantile(s.flatten().cpu(), quantile)))


def vanilla_saliency(model, x, target=None, **unit) -> torch.Tensor:
    """Simonyan et al.'s image-specific class saliency map, ``[H, W]``:

        M_ij = max_c | dS_c / dx_cij |

    the largest absolute gradient of the class score over the three colour channels.
    """
    return saliency_map(gradient(model, x, target, **unit))


def smoothgrad(model, x, target=None, *, n_samples: int = 50, noise_level: float = 0.15, seed: int | None = 0,
               batch_size: int = 25, progress: bool = False, **unit) -> torch.Tensor:
    """SmoothGrad: the gradient averaged over ``n`` noisy copies of the image, ``[3, H, W]``:

        SG(x) = 1/n sum_k dS/dx (x + eps_k),   eps_k ~ N(0, sigma^2),
        sigma = noise_level * (max(x) - min(x))

    The noise is drawn in one call, ``torch.randn(n, 3, H, W) * sigma``, from a generator
    seeded with ``seed`` (``None``: torch's global generator). That is the same draw, in the
    same order, as captum's ``NoiseTunnel`` after ``torch.manual_seed(seed)``, which the tests
    use as the oracle. Take :func:`saliency_map` of the result for a picture.
    """
    n = check_int(n_samples, "n_samples", low=1)
    noise_level = check_number(noise_level, "noise_level", low=0)
    x, home = _prepared(model, x)
    sigma = noise_level * float(x.max() - x.min())
    gen = None
    if seed is not None:
        gen = torch.Generator(device=x.device).manual_seed(check_int(seed, "seed"))
    noise = torch.randn((n,) + tuple(x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype) * sigma
    with eval_mode(model):
        score = _objective(model, x, target, **unit)
        grads = _gradients(score, x + noise, batch_size, progress, desc="SmoothGrad")
    return grads.mean(0).to(home)


RIEMANN = ("riemann_left", "riemann_right", "riemann_middle")


def integrated_gradients(model, x, target=None, *, baseline=None, steps: int = 64, method: str = "riemann_middle",
                         batch_size: int = 32, progress: bool = False, **unit) -> torch.Tensor:
    """Integrated gradients along the straight path from ``baseline`` x' to ``x``, ``[3, H, W]``:

        IG_i(x) = (x_i - x'_i) * integral_0^1 dS/dx_i (x' + a (x - x')) da
                ~ (x_i - x'_i) * 1/m sum_k dS/dx_i (x' + a_k (x - x'))

    a Riemann sum with ``m = steps`` points ``a_k = k/m`` (``"riemann_right"``, k = 1..m),
    ``(k-1)/m`` (``"riemann_left"``) or ``(k - 1/2)/m`` (``"riemann_middle"``).
    The baseline defaults to the model's mean colour (:func:`course_lib.models.mean_colour`: the image
    the network sees as zero).
    Completeness: ``sum_i IG_i -> S(x) - S(x')`` as ``steps`` grows.
    """
    m = check_int(steps, "steps", low=1)
    if method not in RIEMANN:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(RIEMANN)}")
    x, home = _prepared(model, x)
    if baseline is None:
        baseline = torch.tensor(mean_colour(model), dtype=x.dtype, device=x.device).view(1, 3, 1, 1).expand_as(x)
    elif not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline must be a tensor, got {type(baseline).__name__}")
    elif baseline.shape not in (x.shape, x.shape[1:]):
        raise ValueError(f"baseline must have the image's shape {list(x.shape)}, got {list(baseline.shape)}")
    else:
        baseline = baseline.detach().to(x.device, x.dtype).reshape(x.shape)
    start = {"riemann_left": 0.0, "riemann_right": 1.0 / m, "riemann_middle": 0.5 / m}[method]
    alphas = torch.linspace(start, start + (m - 1) / m, m, device=x.device, dtype=x.dtype)
    path = baseline + alphas.view(-1, 1, 1, 1) * (x - baseline)
    with eval_mode(model):
        score = _objective(model, x, target, **unit)
        grads = _gradients(score, path, batch_size, progress, desc="integrated gradients")
    return ((x - baseline)[0] * grads.mean(0)).to(home)


# --------------------------------------------------------------------------- guided backpropagation


class GuidedReLUFunction(torch.autograd.Function):
    """ReLU forward; guided backward: ``dL/dx = g * [x > 0] * [g > 0]`` for incoming gradient ``g``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0)


class GuidedReLU(nn.Module):
    """Drop-in, out-of-place replacement for ``nn.ReLU`` that backpropagates the guided way."""

    def forward(self, x):
        return GuidedReLUFunction.apply(x)


@contextlib.contextmanager
def guided_relus(model: nn.Module):
    """Swap every ``nn.ReLU`` module of ``model`` for a :class:`GuidedReLU` for the block.

    The original modules (in-place or not) are put back in their places afterwards,
    even if the block raises. ReLUs that a model calls as functions (``torch.relu``)
    cannot be swapped: a model without any ``nn.ReLU`` module is refused.
    """
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                swapped.append((parent, name, child))
    if not swapped:
        raise ValueError(f"{type(model).__name__} has no nn.ReLU modules to guide")
    try:
        for parent, name, _ in swapped:
            setattr(parent, name, GuidedReLU())
        yield model
    finally:
        for parent, name, relu in swapped:
            setattr(parent, name, relu)


def guided_backprop(model, x, target=None, *, layer=None, channel=None, position="max") -> torch.Tensor:
    """Guided backpropagation (Springenberg et al.) of a class score or any unit, ``[3, H, W]``.

    The ordinary backward pass through a ReLU ``y = max(x, 0)`` passes ``g * [x > 0]``; guided
    backprop also drops negative gradients:

        dS/dx  :=  g * [x > 0] * [g > 0]     at every ReLU

    so only paths that *increase* the unit contribute. The score is a class logit
    (``target``), or a unit of ``layer``: one ``channel`` at its maximally responding
    ``position="max"``, the whole channel (``"sum"``) or a given ``(row, col)``.
    """
    x, home = _prepared(model, x)
    with eval_mode(model), guided_relus(model):
        score = _objective(model, x, target, layer, channel, position)
        return _gradients(score, x)[0].to(home)


# --------------------------------------------------------------------------- one entry point


def _gradient_method(model, x, target=None, **kw):
    return gradient(model, x, target, **kw)


#: Name -> function ``(model, x, target, **kwargs) -> [3, H, W] attribution``.
METHODS = {
    "gradient": _gradient_method,
    "SmoothGrad": smoothgrad,
    "integrated gradients": integrated_gradients,
    "guided backprop": guided_backprop,
}


def compute_saliency(model, x, target=None, *, method: str = "gradient", **kwargs) -> torch.Tensor:
    """The ``[H, W]`` saliency map (``max_c |A_c|``) of one of :data:`METHODS` for class ``target``."""
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return saliency_map(METHODS[method](model, x, target, **kwargs))


def predicted_class(model, x) -> int:
    """The index of the class the model predicts for the single image ``x``."""
    x, _ = _prepared(model, x)
    with eval_mode(model), torch.no_grad():
        return int(model(x)[0].argmax())


def default_unit_layer(model) -> str:
    """A layer to pick units from, chosen generically: the last conv layer
    (``conv4_2`` for the course model, ``conv5_3`` for VGG16)."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no conv layers")
    return convs[-1]


def top_channels(model, x, *, layer: str, k: int = 4) -> list[int]:
    """The ``k`` channels of ``layer`` that respond most strongly (largest maximum) to the image ``x``
    (all of them if the layer has fewer than ``k``); ``k`` is an int >= 1."""
    k = check_int(k, "k", low=1)
    x, _ = _prepared(model, x)
    with eval_mode(model), torch.no_grad():
        act = _layer_output(model, get_layer(model, layer), x)[0]
    peak = act.flatten(1).amax(1) if act.ndim > 1 else act
    return peak.topk(min(k, len(peak))).indices.tolist()


def attribution_image(attribution: torch.Tensor) -> np.ndarray:
    """A signed ``[3, H, W]`` attribution as an ``H x W x 3`` picture: ``0.5 + A / (2 max|A|)``.

    Zero is mid-grey; positive and negative values of each colour channel are lighter and
    darker. (The usual way to draw guided backprop.)
    """
    if not isinstance(attribution, torch.Tensor) or attribution.ndim != 3 or attribution.shape[0] != 3:
        raise ValueError("expected an attribution tensor of shape [3, H, W]")
    a = attribution.detach().float().cpu()
    scale = a.abs().max()
    a = a / (2 * scale) if scale > 0 else a
    return (0.5 + a).permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- segmentation with GrabCut


def _as_uint8_rgb(image) -> np.ndarray:
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"expected an RGB image, got a PIL image in mode {image.mode!r}")
        image = np.asarray(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an H x W x 3 image (array or PIL), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"expected uint8 or float pixels in [0, 1], got dtype {image.dtype}")
    return np.ascontiguousarray(np.clip(np.round(image * 255), 0, 255).astype(np.uint8))


def grabcut_seeds(saliency, fg_quantile: float = 0.95, bg_quantile: float = 0.30) -> np.ndarray:
    """GrabCut's initial label for every pixel, from the saliency map (Simonyan et al., sec. 3.2):

    * saliency >= its ``fg_quantile`` quantile: sure foreground (``cv2.GC_FGD``);
    * saliency <= its ``bg_quantile`` quantile: sure background (``cv2.GC_BGD``);
    * in between: probable foreground (``GC_PR_FGD``) in the upper half of that band
      (above the mid-quantile), probable background (``GC_PR_BGD``) in the lower half.
    """
    import cv2

    for name, q in (("fg_quantile", fg_quantile), ("bg_quantile", bg_quantile)):
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
            raise ValueError(f"{name} must be a number strictly between 0 and 1, got {q!r}")
    if bg_quantile >= fg_quantile:
        raise ValueError(f"bg_quantile ({bg_quantile}) must be below fg_quantile ({fg_quantile})")
    s = saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    if s.ndim != 2:
        raise ValueError(f"expected a 2-D saliency map H x W, got shape {s.shape}")
    s = s.astype(np.float64)
    hi, mid, lo = np.quantile(s, [fg_quantile, (fg_quantile + bg_quantile) / 2, bg_quantile])
    if hi <= lo:
        raise ValueError("the saliency map is (nearly) constant between the two quantiles, so it cannot "
                         "separate foreground from background; widen the quantiles or check the map")
    seeds = np.where(s >= mid, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    seeds[s >= hi] = cv2.GC_FGD
    seeds[s <= lo] = cv2.GC_BGD
    return seeds


def grabcut_from_saliency(image, saliency, fg_quantile: float = 0.95, bg_quantile: float = 0.30,
                          iterations: int = 5, seed: int = 0) -> np.ndarray:
    """Segment the object with GrabCut seeded by a saliency map; returns a boolean ``H x W`` mask.

    GrabCut (Rother et al. 2004) fits a colour Gaussian mixture to the foreground and one
    to the background and cuts the image graph; here the seeds come from
    :func:`grabcut_seeds` (``cv2.GC_INIT_WITH_MASK``), so no box has to be drawn.
    ``image`` is ``H x W x 3`` RGB (``uint8``, or floats in ``[0, 1]``; a PIL image works
    too), ``saliency`` an ``H x W`` map of the same size. ``seed`` seeds OpenCV's RNG.
    """
    import cv2

    img = _as_uint8_rgb(image)
    seeds = grabcut_seeds(saliency, fg_quantile, bg_quantile)
    if seeds.shape != img.shape[:2]:
        raise ValueError(f"the saliency map ({seeds.shape[0]} x {seeds.shape[1]}) and the image "
                         f"({img.shape[0]} x {img.shape[1]}) must have the same size")
    it = check_int(iterations, "iterations", low=1)
    cv2.setRNGSeed(check_int(seed, "seed"))
    mask = seeds.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), mask, None, bgd, fgd, it, cv2.GC_INIT_WITH_MASK)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def show_grabcut(image, saliency, mask, seeds=None, title=None):
    """Image / saliency / (seeds) / mask / cut-out side by side; returns the figure."""
    import matplotlib.pyplot as plt

    img = _as_uint8_rgb(image) / 255
    sal = clip_for_display(torch.as_tensor(np.asarray(saliency) if not isinstance(saliency, torch.Tensor)
                                           else saliency)).cpu().numpy()
    panels = [(img, "image", None), (sal, "saliency", "gray")]
    if seeds is not None:
        panels.append((seeds, "seeds: BG, prob. BG, prob. FG, FG", "viridis"))
    cut = np.where(np.asarray(mask)[..., None], img, 1.0)
    panels += [(np.asarray(mask, dtype=float), "GrabCut mask", "gray"), (cut, "cut-out", None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.8))
    for ax, (a, t, cmap) in zip(axes, panels):
        if t.startswith("seeds"):
            # label order 0 = BG, 2 = probable BG, 3 = probable FG, 1 = FG, shown dark to bright
            a = np.choose(a, [0, 3, 1, 2])
            ax.imshow(a, cmap=cmap, vmin=0, vmax=3)
        else:
            ax.imshow(a, cmap=cmap)
        ax.set_title(t, fontsize=9)
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


__all__ = [
    "gradient", "saliency_map", "clip_for_display", "vanilla_saliency", "smoothgrad",
    "integrated_gradients", "RIEMANN", "GuidedReLUFunction", "GuidedReLU", "guided_relus", "guided_backprop",
    "METHODS", "compute_saliency", "predicted_class", "default_unit_layer", "top_channels", "attribution_image",
    "grabcut_seeds",
    "grabcut_from_saliency", "show_grabcut",
]
