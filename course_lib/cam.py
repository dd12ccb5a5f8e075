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

from .models import eval_mode, get_layer, lecture_names, record_activations


class CAMNotApplicableError(ValueError):
    """The model does not end in global average pooling + one linear layer."""


# --------------------------------------------------------------------------- small helpers

def _check_image(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected one preprocessed RGB image of shape [1, 3, H, W], got {shape} "
                         f"(use course_lib.imaging.preprocess; pass one image at a time)")


def _check_target(target: int | None, scores: torch.Tensor) -> int:
    n = scores.shape[1]
    if target is None:
        return int(scores.argmax(1))
    if not 0 <= int(target) < n:
        raise ValueError(f"class index {target} out of range: the model has {n} classes (0..{n - 1})")
    return int(target)


def upsample(m: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of an [h, w] map to ``size`` = (H, W)."""
    return F.interpolate(m[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]


# --------------------------------------------------------------------------- CAM

def gap_and_fc(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The global-average-pooling module and the final linear layer of a GAP+linear network.

    Raises :class:`CAMNotApplicableError` (explaining why) for any other structure.
    """
    fc = None
    try:
        fc = get_layer(model, "fc")
    except KeyError:
        pass
    gaps = [m for m in model.modules()
            if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))]
    if isinstance(fc, nn.Linear) and len(gaps) == 1:
        return gaps[0], fc
    raise CAMNotApplicableError(
        f"CAM needs a network whose class scores are a linear function of globally average-pooled "
        f"feature maps (conv layers -> global average pooling -> one linear layer): only then can the "
        f"class weights w^c_k be applied at every position to give a map. {type(model).__name__} does "
        f"not have that structure (e.g. VGG flattens a 7x7 map into three fully connected layers). "
        f"Use Grad-CAM instead (course_lib.cam.grad_cam), which works for any layer of any network.")


@torch.no_grad()
def cam(model: nn.Module, x: torch.Tensor, target: int | None = None, relu: bool = True,
        size=None) -> torch.Tensor:
    """Class activation map ``M_c(i,j) = sum_k w^c_k A^k(i,j)`` of one image (one forward pass, no backward).

    ``A`` is the input of the global average pooling, ``w^c`` row ``c`` of the final linear
    layer (``target`` defaults to the predicted class). Returns the map after ReLU (unless
    ``relu=False``), upsampled bilinearly to the input size (or ``size``; ``size=False``
    keeps the h x w feature resolution).
    """
    _check_image(x)
    gap, fc = gap_and_fc(model)
    store = {}
    handle = gap.register_forward_hook(lambda m, inp, out: store.update(A=inp[0]))
    try:
        with eval_mode(model):
            scores = model(x)
    finally:
        handle.remove()
    c = _check_target(target, scores)
    A = store["A"][0]                                   # [K, h, w]
    if A.shape[0] != fc.in_features:
        raise CAMNotApplicableError(f"the pooled features ({A.shape[0]}) do not feed the final linear layer "
                                    f"({fc.in_features} inputs) directly; use Grad-CAM")
    m = torch.einsum("k,khw->hw", fc.weight[c], A)
    if relu:
        m = m.clamp(min=0)
    if size is False:
        return m
    return upsample(m, size or x.shape[-2:])


# --------------------------------------------------------------------------- Grad-CAM

def default_cam_layer(model: nn.Module) -> str:
    """The last convolutional stage's output: the usual Grad-CAM layer (lecture name or module path)."""
    names = lecture_names(model)
    relus = [n for n in names if n.startswith("relu") and names[n].startswith("features")]
    if relus:
        return relus[-1]                                # course model: relu4_2, VGG16: relu5_3
    if hasattr(model, "layer4"):
        return "layer4"                                 # ResNets
    convs = [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no conv layer; pass layer= explicitly")
    return convs[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str | None = None, target: int | None = None,
             relu: bool = True, size=None) -> torch.Tensor:
    """Grad-CAM ``L_c = ReLU(sum_k alpha_k A^k)`` with ``alpha_k = mean_ij dS_c/dA^k(i,j)``.

    ``layer``: any layer name (default: the last conv stage, :func:`default_cam_layer`);
    ``target`` defaults to the predicted class. Returns the map upsampled bilinearly to the
    input size (``size=False``: the layer's own h x w resolution). The model, its mode,
    its parameters' ``.grad`` and the input are left untouched.
    """
    _check_image(x)
    layer = layer or default_cam_layer(model)
    xg = x.detach().clone().requires_grad_(True)        # a graph even though the weights are frozen
    # detach=False keeps A's graph; the network goes on with a copy, so an in-place ReLU can't overwrite A
    with eval_mode(model), torch.enable_grad(), record_activations(model, [layer], detach=False) as acts:
        scores = model(xg)
        c = _check_target(target, scores)
        A = acts[layer]
        if A.ndim != 4:
            raise ValueError(f"Grad-CAM needs a layer with [N, K, h, w] output; {layer!r} gives {tuple(A.shape)}")
        (dS_dA,) = torch.autograd.grad(scores[0, c], A)
    alpha = dS_dA[0].mean(dim=(1, 2))                   # [K]
    m = torch.einsum("k,khw->hw", alpha, A[0].detach())
    if relu:
        m = m.clamp(min=0)
    if size is False:
        return m
    return upsample(m, size or x.shape[-2:])


def guided_grad_cam(model: nn.Module, x: torch.Tensor, layer: str | None = None,
                    target: int | None = None) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop of ``S_c`` (``[3, H, W]``) times the upsampled Grad-CAM map."""
    from .saliency import guided_backprop

    _check_image(x)
    with torch.no_grad(), eval_mode(model):
        c = _check_target(target, model(x))
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


def agreement_with_occlusion(model: nn.Module, images, fraction: float = 0.2, patch: int = 32,
                             stride: int = 16, progress: bool = True) -> dict[str, float]:
    """How often the CAM peak falls inside the region occlusion marks as most important.

    For each image (a PIL image or a preprocessed [1, 3, H, W] tensor), for its predicted
    class: the region is the top ``fraction`` of pixels of the occlusion map (drop in the
    class probability, :func:`course_lib.occlusion.occlusion`). Returns the hit rate of the
    CAM peak (Grad-CAM at the default layer for networks without GAP+linear), of the image
    centre (a "centre prior" baseline), and the chance level ``fraction``.
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
    return {"cam": hits["cam"] / n, "centre": hits["centre"] / n, "chance": fraction, "images": len(images)}


def show_overlays(image, maps: dict, alpha: float = 0.5, size: float = 2.6):
    """One row: the image, then each ``{title: [H, W] map}`` overlaid on it. Returns the figure."""
    import matplotlib.pyplot as plt

    from .imaging import show_heatmap, show_image

    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(size * (len(maps) + 1), size))
    show_image(image, ax=axes[0], title="image")
    for ax, (title, m) in zip(axes[1:], maps.items()):
        show_heatmap(image, m.detach().cpu() if isinstance(m, torch.Tensor) else m, alpha=alpha, ax=ax, title=title)
    fig.tight_layout()
    return fig
