"""How to tell a good saliency map from a bad one (lecture notebook 03, second half).

Two tests, both about the *model*, not about whether a map looks nice:

* **Deletion and insertion** (Petsiuk et al. 2018, RISE). Remove the pixels from the most
  to the least salient and watch the class probability: a map that found the evidence makes
  it drop fast (small area under the *deletion* curve). Or start from an image without
  information and insert the pixels in the same order: it should rise fast (large area
  under the *insertion* curve). "Removed" pixels take a *substrate* value:

  - ``"mean"``: the training images' mean colour (:func:`course_lib.models.mean_colour`, what the
    network sees as zero; deletion's default);
  - ``"blur"``: the same pixel of a heavily blurred copy of the image (Gaussian, sigma
    ``BLUR_SIGMA`` = 5 px, kernel 21 px; insertion's default, as in RISE), so that inserting
    pixels does not also insert sharp artificial edges.

* **Model randomization** (Adebayo et al. 2018, "Sanity checks for saliency maps"). Re-initialize
  the layers from the top (``fc``) down, cumulatively, on a *copy* of the model. A map that
  explains the model must change when the model's weights are destroyed; one that hardly
  changes shows the image's edges rather than what the network learnt. We measure the change
  by the Spearman rank correlation of each map with the original one.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from .layers import eval_mode, get_layer, lecture_names
from .models import IMAGENET_MEAN, mean_colour
from .inputs import check_image, check_int, check_target, model_device
from .saliency import clip_for_display, compute_saliency, predicted_class

BLUR_SIGMA = 5.0
SUBSTRATES = ("mean", "blur")

# --------------------------------------------------------------------------- baselines


def random_map(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A saliency map of i.i.d. uniform noise: pixels in a random order (a baseline)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(height, width, generator=g)


def centre_map(height: int, width: int) -> torch.Tensor:
    """A centre prior: saliency ``-distance to the image centre`` (objects tend to be in the middle)."""
    yy = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    xx = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    return -torch.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)



def saliency_methods(smoothgrad_samples: int = 50, ig_steps: int = 64, noise_level: float = 0.15,
                     baselines: bool = True, seed: int = 0) -> dict:
    """The course's methods as ``name -> (model, x, target) -> [H, W] map`` functions.

    ``gradient``, ``SmoothGrad``, ``integrated gradients`` (zero = mean-colour baseline,
    midpoint Riemann sum) and ``guided backprop``, each reduced to ``max_c |A_c|``; with
    ``baselines``, also ``random`` (a new random order for every call, from a generator seeded
    once with ``seed``) and ``centre`` (the centre prior), which ignore the model.
    """
    methods = {
        "gradient": lambda m, x, c: compute_saliency(m, x, c, method="gradient"),
        "SmoothGrad": lambda m, x, c: compute_saliency(m, x, c, method="SmoothGrad", n_samples=smoothgrad_samples,
                                                       noise_level=noise_level, seed=seed),
        "integrated gradients": lambda m, x, c: compute_saliency(m, x, c, method="integrated gradients", steps=ig_steps),
        "guided backprop": lambda m, x, c: compute_saliency(m, x, c, method="guided backprop"),
    }
    if baselines:
        g = torch.Generator().manual_seed(seed)
        methods["random"] = lambda m, x, c: torch.rand(tuple(x.shape[-2:]), generator=g)
        methods["centre"] = lambda m, x, c: centre_map(*x.shape[-2:])
    return methods


# --------------------------------------------------------------------------- grid imprint


def grid_energy(saliency, period: int = 16, window: int = 2) -> float:
    """How much of a map is a periodic grid: the share of its power spectrum in *peaks* at the
    harmonics of ``period`` pixels (a network whose strides multiply to 16 prints its
    imprint with that period or a divisor of it: 2, 4, 8, 16).

    With ``P(u, v) = |FFT(s - mean s)|^2`` of an ``H x W`` map, the harmonics are the
    frequencies ``(u, v) = (a H / period, b W / period)`` other than ``(0, 0)``. A harmonic's
    *excess* is its power above the median of its neighbours (``|du|, |dv| <= window``,
    harmonics excluded), so smooth content that merely passes through the bin does not count:

        grid energy = sum over harmonics of max(0, P - median of neighbours) / sum of all P

    A checkerboard gives 1, a map without periodic structure about 0. ``H`` and ``W`` must be
    multiples of ``period``.
    """
    s = torch.as_tensor(np.asarray(saliency) if not isinstance(saliency, torch.Tensor) else saliency)
    if s.ndim != 2:
        raise ValueError(f"expected one 2-D map [H, W], got shape {list(s.shape)}")
    h, w = s.shape
    if h % period or w % period:
        raise ValueError(f"the map's size {h}x{w} must be a multiple of the period {period}")
    s = s.double()
    power = torch.fft.fft2(s - s.mean()).abs() ** 2
    total = power.sum().item()
    if total == 0:
        return 0.0
    ys, xs = range(0, h, h // period), range(0, w, w // period)
    harmonic = torch.zeros(h, w, dtype=torch.bool)
    harmonic[torch.tensor(list(ys))[:, None], torch.tensor(list(xs))[None, :]] = True
    excess = 0.0
    offsets = [(dy, dx) for dy in range(-window, window + 1) for dx in range(-window, window + 1) if dy or dx]
    for u in ys:
        for v in xs:
            if u == 0 and v == 0:
                continue
            near = [power[(u + dy) % h, (v + dx) % w] for dy, dx in offsets if not harmonic[(u + dy) % h, (v + dx) % w]]
            excess += max(0.0, power[u, v].item() - torch.stack(near).median().item())
    return excess / total


# --------------------------------------------------------------------------- deletion / insertion


def blurred(x: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """``x`` blurred with a Gaussian of standard deviation ``sigma`` pixels (kernel ``4 sigma + 1``)."""
    from torchvision.transforms.functional import gaussian_blur

    k = 2 * math.ceil(2 * sigma) + 1
    return gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])


def substrate_image(x: torch.Tensor, substrate: str, mean=IMAGENET_MEAN) -> torch.Tensor:
    """The image that "removed" pixels are taken from: ``"mean"`` (every pixel the colour ``mean``)
    or ``"blur"``."""
    if substrate == "mean":
        return torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1).expand_as(x).clone()
    if substrate == "blur":
        return blurred(x)
    raise ValueError(f"unknown substrate {substrate!r}; choose one of {', '.join(SUBSTRATES)}")


def _check_map(saliency, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(np.asarray(saliency) if not isinstance(saliency, torch.Tensor) else saliency)
    if s.shape != x.shape[-2:]:
        raise ValueError(f"the saliency map must be H x W = {list(x.shape[-2:])}, got shape {list(s.shape)}")
    return s.detach().float().cpu()


def pixel_ranks(saliency: torch.Tensor) -> torch.Tensor:
    """``rank[i, j]``: the position of pixel ``(i, j)`` when sorted from most to least salient (ties: raster order)."""
    order = torch.argsort(-saliency.flatten(), stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks.view(saliency.shape)


def step_counts(n_pixels: int, steps: int) -> list[int]:
    """How many pixels are changed at each point of a curve: ``0, n/steps, ..., n`` (``steps + 1`` points)."""
    return [round(k * n_pixels / steps) for k in range(steps + 1)]


def perturbed_images(x, saliency, mode: str = "deletion", steps: int = 16, substrate: str | None = None,
                     mean=IMAGENET_MEAN):
    """The images along a deletion or insertion curve, ``[steps + 1, 3, H, W]``.

    Image ``k`` has the ``n_k`` most salient pixels (:func:`step_counts`) changed: set to the
    substrate (deletion) or, starting from the substrate, set to the original (insertion).
    ``mean``: the colour of the ``"mean"`` substrate (the model's :func:`course_lib.models.mean_colour`).
    """
    x = check_image(x)
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    steps = check_int(steps, "steps", low=1)
    s = _check_map(saliency, x)
    substrate = substrate or ("mean" if mode == "deletion" else "blur")
    base = substrate_image(x, substrate, mean)
    ranks = pixel_ranks(s).to(x.device)
    counts = torch.tensor(step_counts(s.numel(), steps), device=x.device)
    changed = (ranks[None] < counts[:, None, None])[:, None]  # [steps+1, 1, H, W]
    if mode == "deletion":
        return torch.where(changed, base, x)
    return torch.where(changed, x, base)


@torch.no_grad()
def perturbation_curve(model, x, saliency, target: int, *, mode: str = "deletion", steps: int = 16,
                       substrate: str | None = None, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(fractions, probabilities)``: the softmax probability of class ``target`` as the
    fraction ``0, 1/steps, ..., 1`` of the pixels is deleted (or inserted) in saliency order.

    ``x``: one pixel image ``[1, 3, H, W]`` or ``[3, H, W]``; ``target``: a class index
    (an int in ``0 .. classes - 1``; negative indices are refused, they do not count from the
    end). Batched: the ``steps + 1`` images go through the model ``batch_size`` at a time.
    """
    x = check_image(x, model=model).detach().to(model_device(model))
    check_target(target, None, allow_none=False)         # the type now, the range once the classes are known
    batch_size = check_int(batch_size, "batch_size", low=1)
    images = perturbed_images(x, saliency, mode, steps, substrate, mean_colour(model))
    probs = []
    with eval_mode(model):
        for s in range(0, len(images), batch_size):
            p = torch.softmax(model(images[s:s + batch_size]), dim=1)
            probs.append(p[:, check_target(target, p.shape[1])].cpu())
    fractions = np.array(step_counts(int(np.prod(images.shape[-2:])), steps)) / np.prod(images.shape[-2:])
    return fractions, torch.cat(probs).double().numpy()


def auc(fractions, values) -> float:
    """Area under a curve sampled at ``fractions`` in ``[0, 1]``, by the trapezoidal rule."""
    return float(np.trapezoid(np.asarray(values, dtype=np.float64), np.asarray(fractions, dtype=np.float64)))


def evaluate_saliency(model, images, methods: dict, *, steps: int = 16, batch_size: int = 32,
                      deletion_substrate: str = "mean", insertion_substrate: str = "blur",
                      progress: bool = True) -> dict:
    """Deletion and insertion curves of every method on every image, for the predicted class.

    ``images``: PIL images or pixel ``[1, 3, H, W]`` tensors. ``methods``: name ->
    function ``(model, x, target) -> [H, W] map``. Returns a dict with ``fractions``,
    ``targets`` (class explained per image) and, per method, ``curves[method][mode]``
    (``[images, steps + 1]`` array) and ``auc[method][mode]`` (one AUC per image).
    """
    from tqdm.auto import tqdm

    from .imaging import preprocess

    if not methods:
        raise ValueError("give at least one method")
    curves = {name: {"deletion": [], "insertion": []} for name in methods}
    targets, fractions = [], None
    for image in tqdm(list(images), desc="deletion/insertion", disable=not progress, unit="image"):
        x = image if isinstance(image, torch.Tensor) else preprocess(image, model)
        x = check_image(x, model=model).to(model_device(model))
        c = predicted_class(model, x)
        targets.append(c)
        for name, method in methods.items():
            sal = method(model, x, c)
            for mode, sub in (("deletion", deletion_substrate), ("insertion", insertion_substrate)):
                fractions, p = perturbation_curve(model, x, sal, c, mode=mode, steps=steps, substrate=sub,
                                                  batch_size=batch_size)
                curves[name][mode].append(p)
    curves = {n: {m: np.stack(v) for m, v in d.items()} for n, d in curves.items()}
    aucs = {n: {m: np.array([auc(fractions, p) for p in v]) for m, v in d.items()} for n, d in curves.items()}
    return {"fractions": fractions, "targets": targets, "curves": curves, "auc": aucs}


def auc_table(results: dict) -> list[dict]:
    """One row per method: mean deletion AUC (lower is better), mean insertion AUC (higher is
    better), their standard errors, and ``insertion - deletion``; sorted best first by that difference."""
    rows = []
    for name, d in results["auc"].items():
        dele, ins = d["deletion"], d["insertion"]
        n = len(dele)
        sem = (lambda a: float(a.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"))
        rows.append({"method": name, "deletion": float(dele.mean()), "deletion_sem": sem(dele),
                     "insertion": float(ins.mean()), "insertion_sem": sem(ins),
                     "difference": float((ins - dele).mean()), "images": n})
    return sorted(rows, key=lambda r: -r["difference"])


def format_auc_table(rows: list[dict]) -> str:
    """:func:`auc_table`'s rows as a text table with the rank of each method by each measure."""
    del_rank = {r["method"]: i + 1 for i, r in enumerate(sorted(rows, key=lambda r: r["deletion"]))}
    ins_rank = {r["method"]: i + 1 for i, r in enumerate(sorted(rows, key=lambda r: -r["insertion"]))}
    lines = [f"{'method':22s} {'deletion AUC (lower better)':>28s} {'insertion AUC (higher better)':>30s} "
             f"{'ins - del':>9s}",
             "-" * 92]
    for r in rows:
        lines.append(f"{r['method']:22s} {r['deletion']:14.3f} ± {r['deletion_sem']:.3f}  (#{del_rank[r['method']]})"
                     f" {r['insertion']:16.3f} ± {r['insertion_sem']:.3f}  (#{ins_rank[r['method']]})"
                     f" {r['difference']:9.3f}")
    lines.append(f"(mean ± standard error over {rows[0]['images']} images; #k = rank by that column)")
    return "\n".join(lines)


def plot_curves(results: dict, image: int | None = None):
    """Deletion and insertion curves of every method: the mean over images (or one ``image``)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    f = results["fractions"]
    for ax, mode in zip(axes, ("deletion", "insertion")):
        for name, c in results["curves"].items():
            curve = c[mode].mean(0) if image is None else c[mode][image]
            style = ":" if name in ("random", "centre") else "-"
            ax.plot(f, curve, style, label=f"{name} ({auc(f, curve):.2f})")
        ax.set(xlabel=f"fraction of pixels {'deleted' if mode == 'deletion' else 'inserted'}",
               title=f"{mode} ({'lower' if mode == 'deletion' else 'higher'} AUC is better)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("probability of the explained class")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- model randomization


def randomization_layers(model: nn.Module) -> list[str]:
    """The layers with weights, from the top (output) down: the order of cascading randomization.

    Lecture names where the model has them (``fc, conv4_2, ..., conv1_1`` for the course
    model), else module paths; each module once.
    """
    short: dict[str, str] = {}
    for name, path in lecture_names(model).items():
        short.setdefault(path, name)              # the first name of a module (VGG: fc8, not its alias fc)
    seen, names = set(), []
    for path, m in model.named_modules():         # in the order the model defines them: input to output
        if path and id(m) not in seen and any(True for _ in m.parameters(recurse=False)):
            seen.add(id(m))
            names.append(short.get(path, path))
    if not names:
        raise ValueError(f"{type(model).__name__} has no layers with weights")
    return names[::-1]


@torch.no_grad()
def reinitialize(module: nn.Module, generator: torch.Generator) -> None:
    """Fresh random weights for one layer: He-normal weights ``N(0, 2 / fan_in)``, zero biases."""
    for name, p in module.named_parameters(recurse=False):
        if name == "weight" and p.ndim > 1:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=generator).to(p) * math.sqrt(2.0 / fan_in))
        elif name == "bias":
            p.zero_()
        else:
            p.copy_(torch.randn(p.shape, generator=generator).to(p))


def cascading_randomizations(model: nn.Module, layers=None, seed: int = 0):
    """Yield ``(layer, model copy)`` with the layers re-initialized cumulatively from the top.

    Step ``k`` is a copy of ``model`` in which ``layers[0..k]`` have random weights. The copy
    is made once (``copy.deepcopy``) and re-used: the given model is never modified.
    """
    layers = randomization_layers(model) if layers is None else list(layers)
    net = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for name in layers:
        reinitialize(get_layer(net, name), g)
        yield name, net


def spearman(a, b) -> float:
    """Spearman's rank correlation of two maps (flattened), via ``scipy.stats.spearmanr``."""
    from scipy.stats import spearmanr

    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {a.shape} and {b.shape}")
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def randomization_test(model, x, methods: dict, target=None, *, layers=None, seed: int = 0,
                       progress: bool = True) -> dict:
    """Adebayo et al.'s cascading model-randomization sanity check for one image.

    For each method (name -> ``(model, x, target) -> [H, W] map``) the map of the trained
    model and of each cascading randomization (see :func:`cascading_randomizations`) for the
    same class ``target`` (default: the trained model's prediction). Returns ``layers``
    (``["original", "fc", ...]``), ``maps[method]`` (one map per stage) and
    ``correlations[method]`` (Spearman rank correlation of each map with the original map).
    """
    from tqdm.auto import tqdm

    x = check_image(x, model=model)
    target = predicted_class(model, x) if target is None else target
    with torch.no_grad(), eval_mode(model):
        check_target(target, model(x.to(model_device(model))).shape[1])
    layers = randomization_layers(model) if layers is None else list(layers)
    maps = {name: [method(model, x, target).cpu()] for name, method in methods.items()}
    stages = tqdm(cascading_randomizations(model, layers, seed), total=len(layers),
                  desc="randomizing layers", disable=not progress)
    for _, net in stages:
        for name, method in methods.items():
            maps[name].append(method(net, x, target).cpu())
    corr = {name: [spearman(ms[0], m) for m in ms] for name, ms in maps.items()}
    return {"layers": ["original"] + layers, "target": target, "maps": maps, "correlations": corr}


def format_correlations(result: dict) -> str:
    """:func:`randomization_test`'s correlations as a text table (rows: layers randomized so far)."""
    names = list(result["correlations"])
    lines = [f"{'randomized down to':20s}" + "".join(f"{n:>22s}" for n in names)]
    for i, layer in enumerate(result["layers"]):
        lines.append(f"{layer:20s}" + "".join(f"{result['correlations'][n][i]:22.3f}" for n in names))
    return "\n".join(lines)


def plot_randomization(result: dict, image=None):
    """The maps of :func:`randomization_test` (rows: methods; columns: layers randomized so far),
    with each map's Spearman correlation to the original in its title. ``image`` (optional, an
    ``H x W x 3`` array such as ``imaging.to_array(x)``) is drawn first."""
    import matplotlib.pyplot as plt

    from .imaging import rescale

    names, layers = list(result["maps"]), result["layers"]
    extra = image is not None
    fig, axes = plt.subplots(len(names), len(layers) + extra, figsize=(1.6 * (len(layers) + extra), 1.75 * len(names)),
                             squeeze=False)
    for r, name in enumerate(names):
        if extra:
            axes[r, 0].imshow(np.asarray(image))
            axes[r, 0].set_title("image", fontsize=8)
        for k, layer in enumerate(layers):
            ax = axes[r, k + extra]
            ax.imshow(rescale(clip_for_display(result["maps"][name][k])), cmap="gray")
            ax.set_title(f"{layer}\nrho={result['correlations'][name][k]:.2f}", fontsize=8)
        axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


__all__ = [
    "BLUR_SIGMA", "SUBSTRATES", "saliency_methods", "random_map", "centre_map", "blurred", "substrate_image", "pixel_ranks",
    "step_counts", "perturbed_images", "perturbation_curve", "auc", "evaluate_saliency", "auc_table",
    "format_auc_table", "randomization_layers", "reinitialize", "cascading_randomizations", "spearman",
    "randomization_test", "format_correlations", "plot_curves", "plot_randomization",
]
