"""Class and feature visualisation: the image the network finds most typical of a class, or of one unit.

Simonyan et al. (2014) asked the network itself: starting from the mean image (``I = 0``,
since the network was trained on centred data), which image ``I`` maximises the score of
class ``c``?

    I* = argmax_I  S_c(I) - lambda ||I||^2

``S_c`` is the *unnormalised* score (logit), not the softmax probability ``p_c``: near
``p_c = 1`` the gradient of ``p_c`` vanishes, and ``p_c`` can also rise by *lowering the
other classes* instead of strengthening ``c`` (:func:`compare_score_and_probability`
measures both). Without a prior, the ascent finds high-frequency patterns that excite the
class but look like nothing; Yosinski et al. (2015) added regularisers that make the
images more natural, each a switch here:

* **L2** (``l2_weight`` = lambda): keep ``I`` near the mean image;
* **jitter** (``jitter`` px): shift the image randomly before every step, so patterns
  must work wherever they are;
* **periodic Gaussian blur** (``blur_every`` steps, ``blur_sigma`` px): remove high frequencies;
* **clipping** pixels with a small norm (``norm_percentile``) or a small contribution to the
  score (``contribution_percentile``) to the mean colour.

The same ascent works for **any unit** (Erhan et al. 2009; Olah et al. 2017):
:func:`feature_visualization` climbs the mean activation of one channel of an inner layer,

    x* = argmax_x  a_{l,c}(x),    a_{l,c}(x) = mean_jk A_l(x)[c, j, k],

one image per channel in one batch, on the pixels or on a decorrelated Fourier
parameterisation (:class:`course_lib.optimize.FourierImage`), which favours natural, low-frequency
images where pixel steps favour high-frequency patterns.

Everything runs through :func:`course_lib.optimize.optimize`.
"""
from __future__ import annotations

import numpy as np
import torch

from . import optimize as opt
from .inputs import check_int, check_number, check_pixels, model_device, model_dtype
from .models import mean_colour

#: The regularisers of Yosinski et al. (2015), in the order notebook 05 adds them.
REGULARISERS = ("l2", "jitter", "blur", "clip")
#: What :func:`feature_visualization` can optimise, each with its default Adam step size.
PARAMETERISATIONS = {"fourier": 0.01, "pixels": 0.02}


def class_visualization(model, target, *, steps: int = 200, lr: float = 0.02, l2_weight: float = 0.1,
                        jitter: int = 4, blur_every: int = 4, blur_sigma: float = 0.5,
                        norm_percentile: float = 0.0, contribution_percentile: float = 0.0,
                        objective: str = "score", size: int | None = None, seed: int = 0,
                        callback=None, every: int = 10, progress: bool = True) -> opt.Optimized:
    """``argmax_I S_c(I) - l2_weight * mean(I^2)`` from the mean image, by Adam on the pixels.

    ``target`` is the class ``c``: one class index (an int), or a list of them: then one image per
    class is made in one batch (floats, bools and strings are refused: :func:`course_lib.inputs.check_target`).
    ``objective="probability"`` ascends ``log p_c`` instead of ``S_c`` (the lecture's
    counter-example). Set a regulariser's parameter to 0 to switch it off (every weight, count and
    percentile must be >= 0, percentiles <= 100). Returns ``Optimized(image, history)``: the images
    ``[len(target), 3, size, size]`` in ``[0, 1]`` (``size`` defaults to the model's input size; a size
    too small for the network is refused with the smallest that fits), in the model's floating type,
    and the :class:`~course_lib.optimize.History` of the run.
    """
    if objective not in ("score", "probability"):
        raise ValueError(f"objective must be 'score' or 'probability', got {objective!r}")
    size = model.input_size if size is None else check_int(size, "size", low=1)
    # class_score and class_probability both check target
    ascent = opt.class_score(model, target) if objective == "score" else opt.class_probability(model, target)
    opt.check_fits(model, size)
    scalar = isinstance(target, (int, np.integer)) or (isinstance(target, torch.Tensor) and target.ndim == 0)
    n = 1 if scalar else len(target)
    return _ascend(model, ascent, opt.PixelImage(_mean_image(model, n, size)), l2_weight=l2_weight, jitter=jitter,
                   blur_every=blur_every, blur_sigma=blur_sigma, norm_percentile=norm_percentile,
                   contribution_percentile=contribution_percentile, steps=steps, lr=lr, seed=seed, callback=callback,
                   every=every, progress=progress,
                   desc=f"class {target} ({model.class_names[target]})" if scalar else f"class {target}")


def feature_visualization(model, *, layer: str, channels, param: str = "fourier", steps: int = 100,
                          lr: float | None = None, jitter: int = 8, l2_weight: float = 0.0, blur_every: int = 0,
                          blur_sigma: float = 0.5, size: int | None = None, seed: int = 0, callback=None,
                          every: int = 10, progress: bool = True) -> opt.Optimized:
    """What one unit wants (Erhan et al. 2009; Olah et al. 2017): for each ``c_i = channels[i]``,

        x_i* = argmax_x  a_{l,c_i}(x) - l2_weight * mean(I^2),    a_{l,c}(x) = mean_jk A_l(x)[c, j, k],

    the image that most excites channel ``c_i`` of ``layer`` on average over its positions
    (:func:`course_lib.optimize.channels`), all channels in one batch: every image starts from the same
    start and sees the same jitter, so image ``i`` is what channel ``c_i`` alone would draw (up to
    rounding, which Adam's steps amplify over a long run). ``param`` is what Adam changes:
    ``"fourier"`` (:class:`~course_lib.optimize.FourierImage`, a decorrelated 1/f-scaled spectrum, from a
    random one drawn with ``seed``; ``lr`` default 0.01) or ``"pixels"`` (from the mean image, as
    :func:`class_visualization`; ``lr`` default 0.02). Both are shifted by random ``jitter`` before each
    step; periodic blur (``blur_every``, ``blur_sigma``) acts on pixels only.
    ``channels``: an int or a list of ints (each checked against the layer's channels at the first step).
    Returns ``Optimized(image, history)``: ``[len(channels), 3, size, size]`` in ``[0, 1]`` (``size``:
    the model's input size unless given) and the :class:`~course_lib.optimize.History` of the run.
    """
    if param not in PARAMETERISATIONS:
        raise ValueError(f"param must be one of {', '.join(map(repr, PARAMETERISATIONS))}, got {param!r}")
    ascent = opt.channels(model, layer=layer, channels=channels)   # checks layer and channels
    n = 1 if np.ndim(channels) == 0 else len(channels)
    size = model.input_size if size is None else check_int(size, "size", low=1)
    opt.check_fits(model, size, ascent.layers)
    if param == "pixels":
        start = opt.PixelImage(_mean_image(model, n, size))
    else:
        start = opt.FourierImage(size, batch=n, seed=seed).to(device=model_device(model), dtype=model_dtype(model))
        start.spectrum.data[1:] = start.spectrum.data[:1]   # one start for every channel
    return _ascend(model, ascent, start, l2_weight=l2_weight, jitter=jitter, blur_every=blur_every,
                   blur_sigma=blur_sigma, steps=steps, lr=PARAMETERISATIONS[param] if lr is None else lr, seed=seed,
                   callback=callback, every=every, progress=progress, desc=f"{param} {ascent.name}")


def _mean_image(model, n: int, size: int) -> torch.Tensor:
    """``n`` images of ``size x size`` pixels of the data's mean colour (``I = 0``), of the model's type and device."""
    mean = torch.tensor(mean_colour(model), dtype=model_dtype(model), device=model_device(model))
    return mean.view(1, 3, 1, 1).expand(n, 3, size, size)


def _ascend(model, ascent: opt.Objective, param, *, l2_weight: float, jitter: int, blur_every: int, blur_sigma: float,
            norm_percentile: float = 0.0, contribution_percentile: float = 0.0, **run) -> opt.Optimized:
    """Maximise ``ascent - l2_weight * mean(I^2)`` over ``param`` by Adam (``run``: the rest of
    :func:`course_lib.optimize.optimize`'s options) with Yosinski et al.'s regularisers: random jitter
    before each step; a :class:`~course_lib.optimize.PixelImage` is also clamped to [0, 1], blurred
    every ``blur_every`` steps and clipped after each step (another parameterisation refuses blur and clipping)."""
    l2_weight, blur_sigma = check_number(l2_weight, "l2_weight", low=0), check_number(blur_sigma, "blur_sigma", low=0)
    jitter, blur_every = check_int(jitter, "jitter", low=0), check_int(blur_every, "blur_every", low=0)
    j = ascent - l2_weight * opt.l2(model) if l2_weight else ascent
    blur, clip = blur_every and blur_sigma, norm_percentile or contribution_percentile
    if not isinstance(param, opt.PixelImage):
        if blur or clip:
            raise ValueError("blur_every and the clipping percentiles act on pixels: use param='pixels', "
                             "or set them to 0")
        projections = []
    else:
        projections = [opt.clamp_pixels()]
        if blur:
            projections.append(opt.blur_every(blur_every, blur_sigma))
        if clip:
            projections.append(opt.clip_small(model, norm_percentile, contribution_percentile))
    return opt.optimize(model, j, param, transforms=[opt.jitter(jitter)] if jitter else [], projections=projections,
                        **run)


def regulariser_settings(upto: str | None, l2_weight: float = 0.1, jitter: int = 4, blur_every: int = 4,
                         clip_percentile: float = 10.0) -> dict:
    """Keyword arguments for :func:`class_visualization` with the regularisers of
    :data:`REGULARISERS` switched on up to and including ``upto`` (None: all off), each at the
    given strength."""
    if upto is not None and upto not in REGULARISERS:
        raise ValueError(f"unknown regulariser {upto!r}; choose one of {', '.join(REGULARISERS)}")
    on = REGULARISERS[:REGULARISERS.index(upto) + 1] if upto else ()
    return {"l2_weight": l2_weight if "l2" in on else 0.0, "jitter": jitter if "jitter" in on else 0,
            "blur_every": blur_every if "blur" in on else 0,
            "norm_percentile": clip_percentile if "clip" in on else 0.0,
            "contribution_percentile": clip_percentile if "clip" in on else 0.0}


def class_probabilities(model, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities ``[N, classes]`` for pixel images ``x`` (in ``[0, 1]``)."""
    return torch.softmax(opt.scores(model, x), dim=1)


def high_frequency_share(x, cutoff: float = 0.25) -> float:
    """A naturalness figure: the share of an image's (luminance) power spectrum above ``cutoff``
    cycles per pixel (Nyquist is 0.5). Photos put little energy there (natural spectra fall as
    ``1/f^2``); unregularised visualisations put a lot. ``x``: ``[N, 3, H, W]`` or ``[3, H, W]``;
    the mean over the images is returned.
    """
    x = check_pixels(torch.as_tensor(x), "x").double()
    cutoff = check_number(cutoff, "cutoff", low=0, high=0.5, hint="cycles per pixel; Nyquist is 0.5")
    luma = (x * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)).sum(1)
    luma = luma - luma.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(luma).abs() ** 2
    h, w = luma.shape[-2:]
    f = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2)
    total = power.sum(dim=(-2, -1))
    high = (power * (f > cutoff)).sum(dim=(-2, -1))
    return float((high / total.clamp_min(1e-30)).mean())


def compare_score_and_probability(model, classes, steps: int = 100, progress: bool = False, **kwargs) -> list[dict]:
    """For each class: visualise it by ascending ``S_c`` and by ascending ``log p_c`` (same
    settings), and report the final score and probability of ``c`` reached by each, and the
    mean score of the *other* classes (does ``p_c`` rise by pushing the others down?)."""
    rows = []
    for c in classes:
        for objective in ("score", "probability"):
            img, _ = class_visualization(model, c, steps=steps, objective=objective, progress=progress, **kwargs)
            s = opt.scores(model, img)[0]
            others = torch.cat([s[:c], s[c + 1:]])
            rows.append({"class": c, "objective": objective, "score": float(s[c]),
                         "probability": float(torch.softmax(s, 0)[c]), "others_mean_score": float(others.mean())})
    return rows


def format_rows(rows: list[dict], keys=None) -> str:
    """Rows of dicts as an aligned text table (numbers with 3 decimals)."""
    if not rows:
        raise ValueError("rows is empty: nothing to format")
    keys = keys or list(rows[0])
    cells = [[k for k in keys]] + [[f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)


def mean_high_frequency_share_of_photos(dataset, label: int, n: int = 20, size: int = 128) -> float:
    """:func:`high_frequency_share` of ``n`` photos of class ``label`` (resized and centre-cropped to ``size``)."""
    from .imaging import fit_to_square, to_tensor

    n, size = check_int(n, "n", low=1), check_int(size, "size", low=1)
    idx = [i for i, y in enumerate(dataset.targets) if y == label][:n]
    if not idx:
        raise ValueError(f"the dataset has no photos of label {label!r}")
    xs = torch.cat([fit_to_square(to_tensor(dataset[i][0])[None], size) for i in idx])
    return float(np.mean([high_frequency_share(x) for x in xs]))
