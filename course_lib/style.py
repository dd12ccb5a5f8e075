"""Gram matrices, the style and content losses, and neural texture synthesis (Gatys et al. 2015).

A layer's activations ``F`` (``C`` channels, ``H x W`` positions, flattened to ``C x HW``)
say *what* was found *where*. Their **Gram matrix**

    G = F F^T / (C H W),      G_ij = sum_p F_ip F_jp / (C H W)

keeps only *which features fire together*, summed over all positions: a statistic of the
texture with the layout thrown away. Matching Grams at several layers makes a new image
with the same texture (:func:`texture_synthesis`); adding a content term gives style
transfer (notebook 07):

    L_style(x)   = sum_l w_l |G_l(x) - G_l(s)|^2 / mean(G_l(s)^2)   (each layer's error relative
                                                                     to its own scale: balanced layers)
    L_content(x) = |F_l(x) - F_l(c)|^2 / |F_l(c)|^2

Everything is an :class:`course_lib.optimize.Objective`, optimised by
:func:`course_lib.optimize.optimize` (L-BFGS by default).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from . import optimize as opt

#: The course model's style layers (the first ReLU of each block) and its content layer.
COURSE_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
COURSE_CONTENT_LAYER = "relu4_1"


def gram_matrix(f: torch.Tensor) -> torch.Tensor:
    """``G = F F^T / (C H W)`` for activations ``f`` ``[N, C, H, W]``; returns ``[N, C, C]``."""
    if f.ndim != 4:
        raise ValueError(f"expected activations [N, C, H, W], got shape {list(f.shape)}")
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_targets(model, style: torch.Tensor, layers=COURSE_STYLE_LAYERS) -> dict:
    """The Gram matrices of the style image (pixels ``[1, 3, H, W]``) at ``layers``."""
    style = opt.check_pixels(style, "style image")
    try:
        acts = opt.activations(model, style, layers)
    except RuntimeError as err:  # a pooling layer with nothing left to pool
        raise ValueError(f"the style image ({style.shape[-2]}x{style.shape[-1]}) is too small for layers "
                         f"{', '.join(layers)} ({err}). Use a larger style image.") from err
    for name, a in acts.items():
        if min(a.shape[-2:]) < 2:
            raise ValueError(f"the style image ({style.shape[-2]}x{style.shape[-1]}) is too small for layer "
                             f"{name!r}: its map is {a.shape[-2]}x{a.shape[-1]}. Use a larger style image.")
    return {name: gram_matrix(a) for name, a in acts.items()}


def style_loss(targets: dict, weights: dict | None = None) -> opt.Objective:
    """``-L_style``: minus ``sum_l w_l |G_l(x) - G_l(s)|^2 / mean(G_l(s)^2)`` (an objective to maximise).

    ``targets`` from :func:`style_targets`; ``weights`` per layer (default: 1 / number of layers).
    """
    layers = tuple(targets)
    weights = weights or {name: 1.0 / len(layers) for name in layers}

    def f(a, x):
        total = 0.0
        for name in layers:
            g, t = gram_matrix(a[name]), targets[name]
            total = total + weights[name] * (g - t).pow(2).flatten(1).sum(1) / t.pow(2).mean().clamp_min(1e-12)
        return -total

    return opt.Objective(layers, f, "-L_style")


def content_loss(model, content: torch.Tensor, layer: str = COURSE_CONTENT_LAYER) -> opt.Objective:
    """``-L_content``: minus ``|F_l(x) - F_l(c)|^2 / |F_l(c)|^2`` (:func:`course_lib.optimize.feature_match`)."""
    target = opt.activations(model, opt.check_pixels(content, "content image"), [layer])[layer]
    return opt.feature_match(model, layer, target)


def with_average_pooling(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.MaxPool2d`` replaced by an ``nn.AvgPool2d`` of the same
    geometry (Gatys et al. did this for VGG: smoother gradients, better textures). The model
    itself is not changed."""
    twin = copy.deepcopy(model)
    for parent in twin.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                   ceil_mode=child.ceil_mode))
    return twin


def texture_synthesis(model, style: torch.Tensor, size=None, layers=COURSE_STYLE_LAYERS, steps: int = 100,
                      step_rule: str = "lbfgs", lr: float | None = None, seed: int = 0, callback=None,
                      every: int = 10, progress: bool = True) -> torch.Tensor:
    """A new image whose Gram matrices at ``layers`` match the style image's, from white noise.

    ``size`` (``S`` or ``(H, W)``, default: the style image's size) is independent of the
    source. L-BFGS by default (``lr`` 1); ``step_rule="adam"`` (``lr`` 0.05) also works.
    L-BFGS runs unconstrained and the result is clipped to ``[0, 1]`` at the end: clipping after
    every step breaks the curvature estimate L-BFGS builds (measured: a 4x higher final style loss
    and no recognisable texture). Returns ``[1, 3, H, W]`` pixels with ``.history``.
    """
    style = opt.check_pixels(style, "style image")
    h, w = (size, size) if isinstance(size, int) else (size or style.shape[-2:])
    objective = style_loss(style_targets(model, style, layers))
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(1, 3, h, w, generator=g).to(style.device)
    lr = lr if lr is not None else (1.0 if step_rule == "lbfgs" else 0.05)
    x = opt.optimize(model, objective, opt.PixelImage(start), steps=steps, lr=lr, step_rule=step_rule,
                     projections=[] if step_rule == "lbfgs" else [opt.clamp_pixels()], seed=seed,
                     callback=callback, every=every, progress=progress, desc="texture")
    out = x.clamp(0, 1)
    out.history = x.history
    return out
