"""Gram matrices, the style and content losses, and neural texture synthesis (Gatys et al. 2015).

A layer's activations ``F`` (``C`` channels, ``H x W`` positions, flattened to ``C x HW``)
say *what* was found *where*. Their **Gram matrix**

    G = F F^T / (C H W),      G_ij = sum_p F_ip F_jp / (C H W)

keeps only *which features fire together*, summed over all positions: a statistic of the
texture with the layout thrown away. Matching Grams at several layers makes a new image
with the same texture (:func:`texture_synthesis`); adding a content term gives style
transfer (notebook 07):

    L_style(x)   = sum_l w_l |G_l(x) - G_l(s)|^2 / |G_l(s)|^2   (each layer's error relative to
                                                                 its own size: balanced layers)
    L_content(x) = |F_l(x) - F_l(c)|^2 / |F_l(c)|^2

Style transfer (Gatys et al. 2016) minimises, for a content photo ``c`` and a style image ``s``,

    L(x) = alpha L_content(x) + beta L_style(x) + gamma L_TV(x)        (alpha = 1 here)

where ``beta / alpha`` (``style_weight``) decides how much of the style is wanted. Two
controls of Gatys et al. 2017 (*Controlling perceptual factors in neural style transfer*)
are here too: the **style scale** (resize the style image before taking its Grams: bigger
brush strokes) and **colour preservation** (transfer on luminance only, or first match
the style's colour histogram to the content's).

Everything is an :class:`course_lib.optimize.Objective`, optimised by
:func:`course_lib.optimize.optimize` (L-BFGS by default).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import optimize as opt
from .inputs import check_int, check_number, check_pixels, check_size
from .layers import ARCHITECTURES, architecture
from .models import BlurMaxPool2d

#: The course model's style layers (the first ReLU of each block) and its content layer, the defaults of
#: the functions below; every family's are in :data:`course_lib.layers.ARCHITECTURES`.
COURSE_STYLE_LAYERS = ARCHITECTURES["CourseNet"].style_layers
COURSE_CONTENT_LAYER = ARCHITECTURES["CourseNet"].content_layer
COLOUR_MODES = (None, "luminance", "histogram")


def default_layers(model) -> tuple[tuple, str]:
    """``(style layers, content layer)`` of the model's family (:class:`course_lib.layers.Architecture`):
    for the course model, VGG and AlexNet the first ReLU of every block for the style and a deep ReLU
    for the content; for ResNet and SqueezeNet the stage outputs (weaker results: not plain chains)."""
    family = architecture(model, what="default style/content layers",
                          instead="pass layers=(...) and content_layer=...")
    return family.style_layers, family.content_layer


def _layer_names(layers) -> tuple:
    """Style layers as a tuple of names (one name is one layer); an empty list is refused."""
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    if not layers:
        raise ValueError("layers is empty: give at least one style layer, e.g. layers=('relu1_1', 'relu2_1')")
    return layers


def resolve_layers(model, layers=None, content_layer=None) -> tuple[tuple, str]:
    """``layers`` and ``content_layer``, each defaulting to :func:`default_layers` where not given."""
    if layers is not None and content_layer is not None:
        return _layer_names(layers), content_layer
    default_style, default_content = default_layers(model)
    return _layer_names(default_style if layers is None else layers), content_layer or default_content


def _weights(style_weight, tv_weight) -> tuple[float, float]:
    """``style_weight`` (beta / alpha) and ``tv_weight`` (gamma / alpha), each a number >= 0."""
    return check_number(style_weight, "style_weight", low=0), check_number(tv_weight, "tv_weight", low=0)


def gram_matrix(f: torch.Tensor) -> torch.Tensor:
    """``G = F F^T / (C H W)`` for activations ``f`` ``[N, C, H, W]``; returns ``[N, C, C]``."""
    if f.ndim != 4:
        raise ValueError(f"expected activations [N, C, H, W], got shape {list(f.shape)}")
    n, c, h, w = f.shape
    flat = f.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_targets(model, style: torch.Tensor, *, layers=COURSE_STYLE_LAYERS) -> dict:
    """The Gram matrices of the style image (pixels ``[1, 3, H, W]``; one image: a batch is refused,
    blend several with :func:`blended_targets`) at ``layers`` (names, or one name)."""
    style = check_pixels(style, "style image", model=model, batch=False)
    acts = opt.activations(model, style, _layer_names(layers), name="style image")
    for name, a in acts.items():
        if min(a.shape[-2:]) < 2:
            raise ValueError(f"the style image ({style.shape[-2]}x{style.shape[-1]}) is too small for layer "
                             f"{name!r}: its map is {a.shape[-2]}x{a.shape[-1]}. Use a larger style image.")
    return {name: gram_matrix(a) for name, a in acts.items()}


def style_loss(targets: dict, weights: dict | None = None) -> opt.Objective:
    """``-L_style``: minus ``sum_l w_l |G_l(x) - G_l(s)|^2 / |G_l(s)|^2`` (an objective to maximise).

    ``targets`` from :func:`style_targets`; ``weights`` per layer (default: 1 / number of layers):
    a dict with a number >= 0 for every layer of ``targets`` (weights of other layers are ignored).
    """
    layers = tuple(targets)
    if weights is None:
        weights = {name: 1.0 / len(layers) for name in layers}
    missing = [name for name in layers if name not in weights]
    if missing:
        raise ValueError(f"weights must give a weight for every style layer ({', '.join(layers)}); "
                         f"missing: {', '.join(missing)}")
    weights = {name: check_number(weights[name], f"weights[{name!r}]", low=0) for name in layers}

    def f(a, x):
        total = 0.0
        for name in layers:
            g, t = gram_matrix(a[name]), targets[name]
            total = total + weights[name] * (g - t).pow(2).flatten(1).sum(1) / t.pow(2).sum().clamp_min(1e-12)
        return -total

    return opt.Objective(layers, f, "-L_style")


def style_distance(model, image: torch.Tensor, style: torch.Tensor, *, layers=None) -> float:
    """``L_style`` of ``image`` against ``style``'s Grams (layers default to :func:`default_layers`):
    0 for the same texture statistics, about 1 or more for unrelated images. ``image`` may have
    any size: Grams do not depend on where things are, nor on how many positions there are.
    One image each (loop over a batch)."""
    layers = _layer_names(default_layers(model)[0] if layers is None else layers)
    image = check_pixels(image, model=model, batch=False)
    return -opt.evaluate(model, style_loss(style_targets(model, style, layers=layers)), image).item()


def content_loss(model, content: torch.Tensor, *, layer: str = COURSE_CONTENT_LAYER) -> opt.Objective:
    """``-L_content``: minus ``|F_l(x) - F_l(c)|^2 / |F_l(c)|^2`` (:func:`course_lib.optimize.feature_match`),
    for one content image ``[1, 3, H, W]`` (a batch is refused: its images would share one norm)."""
    content = check_pixels(content, "content image", model=model, batch=False)
    features = opt.activations(model, content, [layer], name="content image")[layer]
    return opt.feature_match(model, layer=layer, features=features)


def with_average_pooling(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every max-pooling (``nn.MaxPool2d`` or the course's
    :class:`~course_lib.models.BlurMaxPool2d`) replaced by an ``nn.AvgPool2d`` of the same
    geometry (Gatys et al. did this for VGG: smoother gradients, better textures). The model
    itself is not changed."""
    twin = copy.deepcopy(model)
    for parent in twin.modules():
        for name, child in parent.named_children():
            if isinstance(child, (nn.MaxPool2d, BlurMaxPool2d)):
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                   ceil_mode=getattr(child, "ceil_mode", False)))
    return twin


def _pooled(model: nn.Module, pool: str) -> nn.Module:
    if pool not in ("max", "average"):
        raise ValueError(f"pool must be 'max' or 'average', not {pool!r}")
    return with_average_pooling(model) if pool == "average" else model


# --------------------------------------------------------------------------- style images


def blended_targets(model, styles, weights=None, *, layers=COURSE_STYLE_LAYERS) -> dict:
    """Gram targets of several style images blended with ``weights`` (normalised to sum 1):
    ``G_l = sum_k w_k G_l(s_k)``. Matching the blend is the same as minimising
    ``sum_k w_k |G_l(x) - G_l(s_k)|^2``: the two differ by a constant."""
    styles = [styles] if isinstance(styles, torch.Tensor) else list(styles)
    if not styles:
        raise ValueError("give at least one style image")
    weights = torch.ones(len(styles)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if weights.shape != (len(styles),) or not weights.isfinite().all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"give one non-negative weight per style image ({len(styles)}), not all zero; got {weights.tolist()}")
    weights = weights / weights.sum()
    grams = [style_targets(model, s, layers=layers) for s in styles]
    return {name: sum(w * g[name] for w, g in zip(weights.tolist(), grams)) for name in layers}


def scale_image(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` resized by ``factor`` (antialiased bilinear): the **style scale**. A style image
    shown larger has larger strokes relative to the network's receptive fields."""
    x = check_pixels(x, "style image")
    factor = check_number(factor, "style_scale", low=0, low_open=True, hint="the scale factor must be positive")
    h, w = x.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


#: RGB -> YIQ (NTSC): Y is the luminance, I and Q the colour (chroma).
YIQ = torch.tensor([[0.299, 0.587, 0.114],
                    [0.596, -0.274, -0.322],
                    [0.211, -0.523, 0.312]])


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """``[N, 3, H, W]`` RGB -> YIQ (channel 0 = luminance Y)."""
    return torch.einsum("ij,njhw->nihw", YIQ.to(x), x)


def yiq_to_rgb(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_yiq` (not clipped)."""
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(YIQ.double()).to(y), y)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """The luminance ``Y`` of RGB images as a grey RGB image (``Y`` in all three channels)."""
    return rgb_to_yiq(x)[:, :1].expand(-1, 3, -1, -1).clamp(0, 1)


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's luminance as a grey image, shifted and scaled to the content luminance's
    mean and standard deviation (Gatys et al. 2017, luminance-only transfer)."""
    style, content = check_pixels(style, "style image"), check_pixels(content, "content image")
    ys, yc = rgb_to_yiq(style)[:, :1], rgb_to_yiq(content)[:, :1]
    y = (ys - ys.mean()) / ys.std().clamp_min(1e-6) * yc.std() + yc.mean()
    return y.expand(-1, 3, -1, -1).clamp(0, 1)


def with_content_colour(x: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """``x``'s luminance with the content's chroma: ``YIQ -> RGB(Y(x), I(c), Q(c))``, clipped.
    ``content`` is resized to ``x``'s size if needed."""
    x, content = check_pixels(x, "x"), check_pixels(content, "content image")
    if content.shape[-2:] != x.shape[-2:]:
        content = F.interpolate(content, size=x.shape[-2:], mode="bilinear", antialias=True, align_corners=False)
    yiq = torch.cat([rgb_to_yiq(x)[:, :1], rgb_to_yiq(content)[:, 1:]], dim=1)
    return yiq_to_rgb(yiq).clamp(0, 1)


def _sqrtm(cov: torch.Tensor, power: float) -> torch.Tensor:
    """``cov^power`` of a symmetric positive semi-definite 3x3 matrix (eigen-decomposition).
    Eigenvalues are floored at 1e-5 (a colour spread of 0.003): a greyscale image has no
    variance in two colour directions, and dividing by ~0 there would only amplify noise."""
    vals, vecs = torch.linalg.eigh(cov)
    return vecs @ torch.diag(vals.clamp_min(1e-5) ** power) @ vecs.T


def match_colour_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style image recoloured so that its pixels' mean and 3x3 colour covariance equal the
    content's (Gatys et al. 2017, colour histogram matching, their "Image Analogies" variant):

        x' = A (x - mu_s) + mu_c,     A = Sigma_c^(1/2) Sigma_s^(-1/2)

    Clipped to ``[0, 1]``. Then ordinary style transfer keeps the content's colours. For batches the
    statistics are those of all their pixels together."""
    style, content = check_pixels(style, "style image"), check_pixels(content, "content image")

    def stats(img):
        px = img.permute(1, 0, 2, 3).reshape(3, -1).double()
        mu = px.mean(1, keepdim=True)
        return px, mu, (px - mu) @ (px - mu).T / px.shape[1]
    px_s, mu_s, cov_s = stats(style)
    _, mu_c, cov_c = stats(content)
    a = _sqrtm(cov_c, 0.5) @ _sqrtm(cov_s, -0.5)
    out = (a @ (px_s - mu_s) + mu_c).reshape(3, style.shape[0], *style.shape[-2:]).permute(1, 0, 2, 3)
    return out.to(style.dtype).clamp(0, 1)


def with_random_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose convolutions and linear layers are re-initialised at random
    (PyTorch's default initialisation, seeded): the same architecture, nothing learnt."""
    seed = check_int(seed, "seed")
    twin = copy.deepcopy(model)
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(seed)
        for m in twin.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.reset_parameters()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def texture_synthesis(model, style: torch.Tensor, size=None, *, layers=None, steps: int = 100,
                      step_rule: str = "lbfgs", lr: float | None = None, pool: str = "max", seed: int = 0,
                      callback=None, every: int = 10, progress: bool = True) -> opt.Optimized:
    """A new image whose Gram matrices at ``layers`` match the style image's, from white noise.

    ``size`` (``S`` or ``(H, W)``, default: the style image's size) is independent of the
    source. ``layers`` default to :func:`default_layers`; ``pool="average"`` uses
    :func:`with_average_pooling`. L-BFGS by default (``lr`` 1); ``step_rule="adam"`` (``lr``
    0.05) also works. L-BFGS runs unconstrained and the result is clipped to ``[0, 1]`` at the
    end: clipping after every step breaks the curvature estimate L-BFGS builds (measured: a 4x
    higher final style loss and no recognisable texture). Returns ``Optimized(image, history)``: the
    texture ``[1, 3, H, W]`` in pixels and the :class:`~course_lib.optimize.History` of the run. One
    style image (a batch is refused: loop over ``s[i:i + 1]``, or blend several with
    :func:`blended_targets` and :func:`style_loss`); a ``size`` too small for the network is refused
    with the smallest that fits.
    """
    style = check_pixels(style, "style image", model=model, batch=False)
    layers = _layer_names(default_layers(model)[0] if layers is None else layers)
    h, w = style.shape[-2:] if size is None else check_size(size)
    net = _pooled(model, pool)
    objective = style_loss(style_targets(net, style, layers=layers))
    opt.check_fits(net, (h, w), layers)
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(1, 3, h, w, generator=g).to(style)        # the style's device and float type
    return _run(net, objective, start, steps, step_rule, lr, seed, callback, every, progress, "texture")


def _run(net, objective, start, steps, step_rule, lr, seed, callback, every, progress, desc) -> opt.Optimized:
    """L-BFGS unconstrained (clipped at the end), first-order rules clamped after every step."""
    lr = lr if lr is not None else (1.0 if step_rule == "lbfgs" else 0.05)
    x, history = opt.optimize(net, objective, opt.PixelImage(start), steps=steps, lr=lr, step_rule=step_rule,
                              projections=[] if step_rule == "lbfgs" else [opt.clamp_pixels()], seed=seed,
                              callback=callback, every=every, progress=progress, desc=desc)
    return opt.Optimized(x.clamp(0, 1), history)


# --------------------------------------------------------------------------- style transfer


def transfer_objective(model, content: torch.Tensor, targets: dict, *, style_weight: float,
                       tv_weight: float, content_layer: str) -> opt.Objective:
    """``J = -(L_content + style_weight * L_style + tv_weight * L_TV)``: :func:`style_transfer`
    maximises it (``alpha = 1``, ``beta / alpha = style_weight``, ``gamma = tv_weight``, both >= 0)."""
    style_weight, tv_weight = _weights(style_weight, tv_weight)
    return (content_loss(model, content, layer=content_layer) + style_weight * style_loss(targets)
            - tv_weight * opt.total_variation())


def style_transfer(model, content: torch.Tensor, style, *, style_weight: float = 1e3, tv_weight: float = 0.0,
                   style_scale: float = 1.0, blend=None, preserve_colour: str | None = None,
                   init: str = "content", layers=None, content_layer: str | None = None, pool: str = "max",
                   steps: int = 150, step_rule: str = "lbfgs", lr: float | None = None, seed: int = 0,
                   callback=None, every: int = 10, progress: bool = True) -> opt.Optimized:
    """Gatys et al. 2016: the image ``x`` minimising ``L_content + beta/alpha L_style + gamma L_TV``.

    ``content`` ``[1, 3, H, W]`` pixels (the output has its size). ``style``: one image or a
    list of images (any size), blended by ``blend`` weights (:func:`blended_targets`), each
    first resized by ``style_scale`` (:func:`scale_image`). ``preserve_colour``:

    * ``None``: plain transfer (the output takes the style's colours);
    * ``"luminance"``: transfer between the luminances only (the style's matched to the
      content's mean and std, :func:`match_luminance`), then put the content's chroma back
      (:func:`with_content_colour`);
    * ``"histogram"``: recolour the style to the content's colour statistics first
      (:func:`match_colour_histogram`), then transfer as usual.

    ``init``: ``"content"`` (start from the photo: fewer steps) or ``"noise"``. Layers default
    to :func:`default_layers`. ``callback`` gets the image as it will be returned (with the
    content's colours in luminance mode). Returns ``Optimized(image, history)``: the image
    ``[1, 3, H, W]`` in ``[0, 1]`` and the :class:`~course_lib.optimize.History` of the run.

    One content image and single style images: a batch is refused (one L-BFGS run would couple
    its images): loop over ``content[i:i + 1]``; give several styles as a list. ``style_weight``,
    ``tv_weight`` >= 0, ``style_scale`` > 0. Any memory layout works (e.g. ``array.permute(2, 0, 1)``).
    """
    content = check_pixels(content, "content image", model=model, batch=False)
    if isinstance(style, torch.Tensor):
        styles = [check_pixels(style, "style image", model=model, batch=False)]
    else:
        styles = [check_pixels(s, f"style image {i}", model=model, batch=False) for i, s in enumerate(style)]
    _weights(style_weight, tv_weight)
    check_number(style_scale, "style_scale", low=0, low_open=True, hint="the scale factor must be positive")
    if preserve_colour not in COLOUR_MODES:
        raise ValueError(f"preserve_colour must be one of {COLOUR_MODES}, not {preserve_colour!r}")
    if init not in ("content", "noise"):
        raise ValueError(f"init must be 'content' or 'noise', not {init!r}")
    layers, content_layer = resolve_layers(model, layers, content_layer)
    net = _pooled(model, pool)

    target = content
    if preserve_colour == "luminance":
        styles = [match_luminance(s, content) for s in styles]
        target = luminance(content)
    elif preserve_colour == "histogram":
        styles = [match_colour_histogram(s, content) for s in styles]
    styles = [scale_image(s, style_scale) for s in styles]
    targets = blended_targets(net, styles, blend, layers=layers)
    objective = transfer_objective(net, target, targets, style_weight=style_weight, tv_weight=tv_weight,
                                   content_layer=content_layer)

    start = target.clone() if init == "content" else torch.rand(target.shape, generator=torch.Generator().manual_seed(seed)).to(target)
    recolour = (lambda x: with_content_colour(x, content)) if preserve_colour == "luminance" else (lambda x: x)
    preview = None if callback is None else (lambda step, x, j: callback(step, recolour(x.clamp(0, 1)), j))
    x, history = _run(net, objective, start, steps, step_rule, lr, seed, preview, every, progress, "style transfer")
    return opt.Optimized(recolour(x), history)


def transfer_losses(model, image: torch.Tensor, content: torch.Tensor, style, *, blend=None, style_scale: float = 1.0,
                    layers=None, content_layer: str | None = None) -> dict:
    """The three terms for a finished image (no weights applied): ``{"content": L_content,
    "style": L_style, "tv": L_TV}`` against the content photo and the (scaled, blended) style.
    One image and one content photo (loop over a batch)."""
    layers, content_layer = resolve_layers(model, layers, content_layer)
    image = check_pixels(image, model=model, batch=False)
    styles = [style] if isinstance(style, torch.Tensor) else list(style)
    targets = blended_targets(model, [scale_image(check_pixels(s, "style image", model=model), style_scale) for s in styles],
                              blend, layers=layers)
    terms = {"content": content_loss(model, content, layer=content_layer), "style": style_loss(targets),
             "tv": -1 * opt.total_variation()}
    return {name: -opt.evaluate(model, j, image).item() for name, j in terms.items()}
