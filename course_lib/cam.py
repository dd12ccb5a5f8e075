"""Class activation maps: CAM (Zhou et al. 2016), Grad-CAM and Guided Grad-CAM (Selvaraju et al. 2017).

Notation: ``A^k`` is the k-th feature map of a conv layer (size h x w), ``S_c`` the
(unnormalised) score of class c, and the maps are upsampled bilinearly to the input size.

* CAM needs a network that ends in global average pooling and one linear layer:
  ``S_c = sum_k w^c_k * mean_ij A^k(i,j) + b_c``. Moving the sum inside the mean gives a map
  whose average is the class score:   ``M_c(i,j) = sum_k w^c_k A^k(i,j)``.
* Grad-CAM works for any layer of any network: each map is weighted by the average
  gradient of the class score over its positions,
  ``alpha^c_k = (1/hw) sum_ij dS_c/dA^k(i,j)``,  ``L_c = ReLU(sum_k alpha^c_k A^k)``.
  At the layer feeding the GAP of a GAP+linear network, ``alpha^c_k = w^c_k / (hw)``, so
  Grad-CAM there is exactly ``ReLU(M_c) / (hw)``.
* Guided Grad-CAM multiplies guided backprop (fine detail, not class-specific) by the
  upsampled Grad-CAM (coarse, class-specific).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .inputs import check_image, check_int, check_target, model_device, model_dtype
from .layers import architecture, eval_mode, last_conv_stage, record_activations


class CAMNotApplicableError(ValueError):
    """The model's class scores are not one linear layer applied to globally average-pooled maps."""


# --------------------------------------------------------------------------- small helpers

def _target(target, scores: torch.Tensor) -> int:
    """The class to explain: ``target`` checked against the model's classes, or the predicted class."""
    c = check_target(target, scores.shape[1])
    return int(scores[0].argmax()) if c is None else c


def _map_size(size, x: torch.Tensor):
    """Where a map is upsampled to: ``None`` -> the input's ``(H, W)``; an int ``S`` -> ``(S, S)``;
    ``(H, W)`` as given; ``False`` -> ``None`` (keep the layer's own resolution)."""
    if size is None:
        return tuple(x.shape[-2:])
    if size is False:
        return None
    if isinstance(size, (tuple, list, torch.Size)) and len(size) == 2:
        return tuple(check_int(s, "size", low=1) for s in size)
    if isinstance(size, (tuple, list, torch.Size)):
        raise ValueError(f"size must be one int or a pair (H, W), got {len(size)} values: {tuple(size)}")
    try:
        s = check_int(size, "size", low=1)
    except TypeError:
        raise TypeError(f"size must be None (the input's size), False (the layer's own size), an int S "
                        f"(S x S) or a pair (H, W), got {type(size).__name__} {size!r}") from None
    return s, s


def _finish(m: torch.Tensor, relu: bool, size) -> torch.Tensor:
    """The map after the optional ReLU, upsampled to ``size`` (None: as it is)."""
    if relu:
        m = m.clamp(min=0)
    return m if size is None else upsample(m, size)


def upsample(m: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of an [h, w] map to ``size`` = (H, W)."""
    return F.interpolate(m[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


# --------------------------------------------------------------------------- CAM

def _not_applicable(model: nn.Module, why: str) -> CAMNotApplicableError:
    return CAMNotApplicableError(
        f"CAM needs a network whose class scores are ONE linear layer applied to globally average-pooled "
        f"feature maps (conv layers -> global average pooling -> one nn.Linear): only then can the class "
        f"weights w^c_k be applied at every position to give a map. {type(model).__name__}: {why}. "
        f"Use Grad-CAM instead (course_lib.cam.grad_cam), which works for any layer of any network.")


def _trace_gap_linear(model: nn.Module, x: torch.Tensor):
    """Run ``model(x)`` once and check, on what actually ran, that the scores are ``fc(GAP(A))``.

    Every ``nn.AdaptiveAvgPool2d`` with output size 1 and every ``nn.Linear`` is watched, in the
    order they run: the scores must be the output of a linear layer that is the first linear
    layer to run after a pooling call, with exactly that call's flattened output as its input
    (layers that change nothing in eval mode, such as dropout or flatten, may sit in between;
    an MLP may not). Returns ``(scores, A, gap, fc)`` with ``A`` the pooling's input
    ``[1, K, h, w]``; raises :class:`CAMNotApplicableError` saying what is missing.
    """
    gaps = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not gaps:
        raise _not_applicable(model, "it has no global average pooling (nn.AdaptiveAvgPool2d(1)); e.g. VGG "
                                     "flattens a 7x7 map into three fully connected layers")
    if not linears:
        raise _not_applicable(model, "it has no nn.Linear layer producing the class scores")
    calls = []                                          # (module, its input, its output), in the order they ran

    def record(m, inp, out):
        calls.append((m, inp[0].detach().clone(), out if isinstance(m, nn.Linear) else out.detach().clone()))

    handles = [m.register_forward_hook(record) for m in gaps + linears]
    try:
        with eval_mode(model), torch.no_grad():
            scores = model(x)
    finally:
        for h in handles:
            h.remove()
    final = [i for i, (m, _, out) in enumerate(calls) if isinstance(m, nn.Linear)
             and (out is scores or (out.shape == scores.shape and torch.equal(out, scores)))]
    if not final:
        raise _not_applicable(model, "its class scores do not come straight out of an nn.Linear layer")
    i = final[-1]
    fc, fc_in = calls[i][0], calls[i][1]
    before = calls[:i]
    j = max((k for k, (m, _, _) in enumerate(before) if not isinstance(m, nn.Linear)), default=None)
    if j is None:
        raise _not_applicable(model, "no global average pooling runs before its final linear layer")
    gap, A, pooled = before[j]
    between = [m for m, _, _ in before[j + 1:]]         # linear layers that ran after the pooling
    if between or pooled.flatten(1).shape != fc_in.shape or not torch.equal(pooled.flatten(1), fc_in):
        raise _not_applicable(model, "the globally pooled features pass through more layers (e.g. an MLP: "
                                     "linear, ReLU, linear) before the final linear layer, so its weights do not "
                                     "weigh the feature maps")
    return scores, A, gap, fc


def gap_and_fc(model: nn.Module, x: torch.Tensor | None = None) -> tuple[nn.Module, nn.Linear]:
    """The global-average-pooling module and the final linear layer of a GAP+linear network.

    Found by structure, whatever their names: one forward pass (of ``x``, or of a random probe
    image of the model's ``input_size``) checks that the class scores are a linear layer
    applied to the pooled maps (see :func:`_trace_gap_linear`). Raises :class:`CAMNotApplicableError` (explaining why) for
    any other structure, e.g. an MLP after the pooling.
    """
    if x is None:
        size = getattr(model, "input_size", 224)
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))    # probe pixels, not a
        x = x.to(model_device(model), model_dtype(model))                             # constant: no coincidental equality
    else:
        x = check_image(x, model=model)
    _, _, gap, fc = _trace_gap_linear(model, x)
    return gap, fc


@torch.no_grad()
def cam(model: nn.Module, x: torch.Tensor, target: int | None = None, *, relu: bool = True,
        size=None) -> torch.Tensor:
    """Class activation map ``M_c(i,j) = sum_k w^c_k A^k(i,j)`` of one image (one forward pass, no backward).

    ``x``: one image of pixels in [0, 1], ``[1, 3, H, W]`` or ``[3, H, W]`` (see :func:`course_lib.inputs.check_image`).
    ``A`` is the input of the global average pooling, ``w^c`` row ``c`` of the linear layer
    that turns the pooled maps into the scores (found by structure, see :func:`gap_and_fc`);
    ``target``: a class index (an int), default the predicted class. Returns the map after
    ReLU (unless ``relu=False``), upsampled bilinearly to the input size, or to ``size``
    (an int S for S x S, or (H, W)); ``size=False`` keeps the h x w feature resolution.
    """
    x = check_image(x, model=model)
    out_size = _map_size(size, x)
    scores, A, _, fc = _trace_gap_linear(model, x)
    c = _target(target, scores)
    m = torch.einsum("k,khw->hw", fc.weight[c], A[0])
    return _finish(m, relu, out_size)


# --------------------------------------------------------------------------- Grad-CAM

def default_cam_layer(model: nn.Module) -> str:
    """The last convolutional stage's output: the usual Grad-CAM layer (course model: ``relu4_2``, VGG16:
    ``relu5_3``, ResNet: ``layer4``, ...: :func:`course_lib.layers.last_conv_stage`, from the model's
    :class:`course_lib.layers.Architecture`); for a model of another family its last ``nn.Conv2d``."""
    if architecture(model, None) is not None:
        return last_conv_stage(model)
    convs = [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no conv layer; pass layer= explicitly")
    return convs[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | None = None, *, layer: str | None = None,
             relu: bool = True, size=None) -> torch.Tensor:
    """Grad-CAM ``L_c = ReLU(sum_k alpha_k A^k)`` with ``alpha_k = mean_ij dS_c/dA^k(i,j)``.

    ``x``: one image of pixels in [0, 1], ``[1, 3, H, W]`` or ``[3, H, W]``; ``layer``: any layer name
    (default: the last conv stage, :func:`default_cam_layer`); ``target``: a class index (an
    int), default the predicted class. Returns the map upsampled bilinearly to the input size,
    or to ``size`` (an int S for S x S, or (H, W); ``size=False``: the layer's own h x w
    resolution). The model, its mode, its parameters' ``.grad`` and the input are left untouched.
    """
    x = check_image(x, model=model)
    out_size = _map_size(size, x)
    layer = layer or default_cam_layer(model)
    xg = x.detach().clone().requires_grad_(True)        # a graph even though the weights are frozen
    # detach=False keeps A's graph; the network goes on with a copy, so an in-place ReLU can't overwrite A
    with eval_mode(model), torch.enable_grad(), record_activations(model, [layer], detach=False) as acts:
        scores = model(xg)
        c = _target(target, scores)
        A = acts[layer]
        if A.ndim != 4:
            raise ValueError(f"Grad-CAM needs a layer with [N, K, h, w] output; {layer!r} gives {tuple(A.shape)}")
        (dS_dA,) = torch.autograd.grad(scores[0, c], A)
    alpha = dS_dA[0].mean(dim=(1, 2))                   # [K]
    m = torch.einsum("k,khw->hw", alpha, A[0].detach())
    return _finish(m, relu, out_size)


def guided_grad_cam(model: nn.Module, x: torch.Tensor, target: int | None = None, *,
                    layer: str | None = None) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop of ``S_c`` (``[3, H, W]``) times the upsampled Grad-CAM map.

    ``x`` and ``target`` as for :func:`grad_cam`."""
    from .saliency import guided_backprop

    x = check_image(x, model=model)
    with torch.no_grad(), eval_mode(model):
        c = _target(target, model(x))
    gb = guided_backprop(model, x, target=c)
    gb = gb[0] if gb.ndim == 4 else gb
    return gb * grad_cam(model, x, layer=layer, target=c)[None]


# --------------------------------------------------------------------------- do the methods agree?

def peak_in_top_region(heatmap: torch.Tensor, reference: torch.Tensor, fraction: float = 0.2) -> bool:
    """Does the maximum of ``heatmap`` fall among the top ``fraction`` of ``reference``'s pixels?

    Both are [H, W] maps of the same size. With a random peak the answer is "yes" with
    probability ``fraction``: that is the chance level to compare against.
    """
    if heatmap.shape != reference.shape or heatmap.ndim != 2:
        raise ValueError(f"expected two [H, W] maps of the same size, got {tuple(heatmap.shape)} and {tuple(reference.shape)}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    threshold = torch.quantile(reference.flatten().float(), 1 - fraction)
    peak = int(heatmap.flatten().argmax())
    return bool(reference.flatten()[peak] >= threshold)


def agreement_with_occlusion(model: nn.Module, images, *, fraction: float = 0.2, patch: int = 32,
                             stride: int = 16, progress: bool = True) -> dict[str, float]:
    """How often the CAM peak falls inside the region occlusion marks as most important.

    For each image (a PIL image or a preprocessed [1, 3, H, W] tensor), for its predicted
    class: the region is the top ``fraction`` of pixels of the occlusion map (drop in the
    class probability, :func:`course_lib.occlusion.occlusion`). Returns the hit rate of the
    CAM peak (Grad-CAM at the default layer for networks without GAP+linear: ``"method"`` says
    which), of the image centre (a "centre prior" baseline), and the chance level ``fraction``.
    """
    from tqdm.auto import tqdm

    from .imaging import preprocess
    from .occlusion import occlusion

    try:
        gap_and_fc(model)
        method = cam
    except CAMNotApplicableError:
        method = grad_cam
    hits = {"cam": 0, "centre": 0}
    images = list(images)
    for image in tqdm(images, desc="CAM vs occlusion", disable=not progress):
        x = image if isinstance(image, torch.Tensor) else preprocess(image, model)
        occ = occlusion(model, x, patch=patch, stride=stride, progress=False)[0].cpu()
        m = method(model, x).cpu()
        hits["cam"] += peak_in_top_region(m, occ, fraction)
        centre = torch.zeros_like(m)
        centre[m.shape[0] // 2, m.shape[1] // 2] = 1
        hits["centre"] += peak_in_top_region(centre, occ, fraction)
    n = max(len(images), 1)
    return {"cam": hits["cam"] / n, "centre": hits["centre"] / n, "chance": fraction, "images": len(images),
            "method": "CAM" if method is cam else "Grad-CAM"}
