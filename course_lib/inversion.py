"""Feature inversion (Mahendran & Vedaldi 2015): which images does a layer think are the same?

Take a photo ``y``, keep only its features ``phi_l(y)`` at one layer, and search for an image
that has the same features:

    x* = argmin_x  ||phi_l(x) - phi_l(y)||^2 / ||phi_l(y)||^2  +  lambda_TV TV(x)  +  lambda_2 ||I||^2

starting from noise. ``TV`` (total variation, :func:`course_lib.optimize.total_variation`)
asks for a piecewise-smooth image, ``||I||^2`` for one near the mean colour: without them
many noisy images match the features. From an early layer the photo comes back almost
exactly; from deep layers the *content and layout* survive while colour, texture and exact
shape become abstract -- what the network threw away on the way up.

Measured per layer by :func:`inversion_metrics`: the relative feature error reached and the
pixel fidelity to ``y`` (PSNR and SSIM, from ``skimage.metrics``).
"""
from __future__ import annotations

import torch

from . import optimize as opt
from .inputs import check_int, check_number, check_pixels


def features(model, x: torch.Tensor, *, layer: str, name: str = "image") -> torch.Tensor:
    """``phi_l(x)``: the activations of ``layer`` for pixel images ``x`` (``name``: what error messages call ``x``)."""
    return opt.activations(model, x, [layer], name=name)[layer]


def invert(model, x: torch.Tensor, *, layer: str, steps: int = 200, lr: float = 0.05, tv_weight: float = 0.5,
           l2_weight: float = 0.001, jitter: int = 1, seed: int = 0, callback=None, every: int = 10,
           progress: bool = True) -> opt.Optimized:
    """An image whose ``layer`` features match those of the image ``x`` (``[1, 3, H, W]`` pixels, the
    ``y`` of the equation), from noise, by Adam.

    One image only: a batch is refused (the relative feature error would couple its images); loop
    over ``x[i:i + 1]``. ``tv_weight``, ``l2_weight`` and ``jitter`` must be >= 0. Returns
    ``Optimized(image, history)``: the image, in the model's floating type, and the
    :class:`~course_lib.optimize.History` of the run."""
    x = check_pixels(x, model=model, batch=False)
    tv_weight, l2_weight = check_number(tv_weight, "tv_weight", low=0), check_number(l2_weight, "l2_weight", low=0)
    jitter = check_int(jitter, "jitter", low=0)
    match = opt.feature_match(model, layer=layer, features=features(model, x, layer=layer))
    j = match - tv_weight * opt.total_variation() - l2_weight * opt.l2(model)
    g = torch.Generator().manual_seed(seed)
    start = (0.5 + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1).to(x)
    return opt.optimize(model, j, opt.PixelImage(start), steps=steps, lr=lr, transforms=[opt.jitter(jitter)] if jitter else [],
                        projections=[opt.clamp_pixels()], seed=seed, callback=callback, every=every,
                        progress=progress, desc=f"invert {layer}")


def relative_feature_error(model, x: torch.Tensor, reference: torch.Tensor, *, layer: str) -> float:
    """``||phi_l(x) - phi_l(y)|| / ||phi_l(y)||`` with ``y = reference`` (for batches: over all their
    images together)."""
    fx, fy = features(model, x, layer=layer, name="x"), features(model, reference, layer=layer, name="reference")
    if fx.shape != fy.shape:
        raise ValueError(f"x and reference must have the same shape, got {list(x.shape)} and {list(reference.shape)}")
    return float((fx - fy).norm() / fy.norm().clamp_min(1e-12))


def psnr_ssim(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB) and SSIM of image ``x`` against reference ``y`` (``[1, 3, H, W]`` in [0, 1], the same
    size; one image each: loop over a batch), by scikit-image."""
    x, y = check_pixels(x, "x", batch=False), check_pixels(y, "y", batch=False)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same size, got {list(x.shape)} and {list(y.shape)}")
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = x[0].permute(1, 2, 0).double().cpu().numpy()
    b = y[0].permute(1, 2, 0).double().cpu().numpy()
    return (float(peak_signal_noise_ratio(b, a, data_range=1.0)),
            float(structural_similarity(b, a, data_range=1.0, channel_axis=2)))


def inversion_metrics(model, inverted: dict, image: torch.Tensor) -> list[dict]:
    """One row per layer of ``inverted`` (``layer -> image``): feature error, PSNR, SSIM."""
    rows = []
    for layer, x in inverted.items():
        p, s = psnr_ssim(x, image)
        rows.append({"layer": layer, "feature_error": relative_feature_error(model, x, image, layer=layer),
                     "psnr_db": p, "ssim": s})
    return rows
