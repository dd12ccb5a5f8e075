"""DeepDream (Mordvintsev, Olah & Tyka 2015): amplify whatever a layer already sees in an image.

Instead of a class score, ascend the energy of a layer's activations on a real photo:

    I <- I + lr * g / mean|g|,    g = d/dI ( ||A_l(I)||^2 / size )

(:func:`course_lib.optimize.layer_l2`; or one channel's energy). Whatever the layer
detects a little -- edges at ``conv1``, textures in the middle, object parts deep down --
gets drawn more strongly, and more of it appears. Two tricks make it look good:

* **normalised gradient steps** (the step's size is set by ``lr``, not by the gradient's
  magnitude, which varies wildly between layers and images);
* **octaves**: dream on a small copy first, then on larger ones. Each octave adds the
  *detail* it dreamed (the change from its start) to the next, larger copy of the photo, so
  the patterns span several scales. Random **jitter** before every step hides the grid of
  the network's strides.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import optimize as opt
from .inputs import check_int, check_number, check_pixels, check_size


def octave_sizes(size, octaves: int, scale: float) -> list[tuple[int, int]]:
    """Image sizes from the smallest octave to the original: ``size / scale^k``, ``k = octaves-1 .. 0``
    (at least 8 pixels)."""
    h, w = check_size(size)
    octaves, scale = check_int(octaves, "octaves", low=1), check_number(scale, "octave_scale", low=1, low_open=True)
    return [(max(8, round(h / scale ** k)), max(8, round(w / scale ** k))) for k in range(octaves - 1, -1, -1)]


def deepdream(model, x: torch.Tensor, *, layer: str, channel: int | None = None, octaves: int = 3,
              octave_scale: float = 1.4, steps: int = 10, lr: float = 0.01, jitter: int = 8, seed: int = 0,
              callback=None, progress: bool = True) -> opt.Optimized:
    """DeepDream the image ``x`` (``[1, 3, H, W]`` pixels in [0, 1]) at ``layer`` (one ``channel``, or all).

    ``steps`` normalised gradient steps of size ``lr`` per octave. Returns ``Optimized(image, history)``:
    the dreamed image (same size) and the :class:`~course_lib.optimize.History` of the last octave.
    One image only: a batch is refused (the normalised step would couple its images); loop over
    ``x[i:i + 1]``. ``octaves >= 1``,
    ``octave_scale > 1``; the smallest octave must fit the network (else the error names the smallest size).
    """
    x = check_pixels(x, model=model, batch=False)
    jitter = check_int(jitter, "jitter", low=0)
    objective = opt.layer_l2(model, layer=layer, channel=channel)
    sizes = octave_sizes(x.shape[-2:], octaves, octave_scale)
    smallest = "image" if octaves == 1 else f"the smallest octave ({octaves} octaves, octave_scale {octave_scale:g})"
    opt.check_fits(model, sizes[0], objective.layers, smallest, "use a larger image, fewer octaves or a smaller octave_scale")
    detail = torch.zeros(1, 3, *sizes[0]).to(x)
    for k, size in enumerate(sizes):
        base = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
        start = (base + detail).clamp(0, 1)
        out = opt.optimize(model, objective, opt.PixelImage(start), steps=steps, lr=lr, step_rule="normalized",
                           transforms=[opt.jitter(jitter)] if jitter else [], projections=[opt.clamp_pixels()],
                           seed=seed + k, progress=progress, desc=f"octave {k + 1}/{len(sizes)} {size[0]}x{size[1]}",
                           callback=None if callback is None else (lambda s, img, j, k=k: callback(k, s, img, j)))
        detail = out.image - base
    return out
