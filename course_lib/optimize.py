"""The optimisation core of notebooks 05-08: make an image by gradient ascent through a frozen network.

Every generative method of the course -- class visualisation, adversarial examples,
DeepDream, feature inversion, texture synthesis, style transfer -- is one call of
:func:`optimize` with three ingredients (the decomposition of Lucid/Lucent):

* an **objective** ``J(image)``, a scalar built from the activations of named layers
  (:class:`Objective`; objectives add, subtract and scale: ``class_score(model, target) - 1e-3 * l2(model)``);
* a **parameterisation**: what the optimiser actually changes. :class:`PixelImage` holds the
  pixels themselves (in ``[0, 1]``); :class:`FourierImage` holds a decorrelated colour
  spectrum, which makes gradient steps favour natural, low-frequency images;
* **transforms** applied to the image before each forward pass (random jitter: the result
  must work under all of them, which suppresses high-frequency tricks), and
  **projections** applied to the parameters after each step (clamping to the valid range or
  an epsilon-ball, periodic blur, clipping small pixels).

The loop maximises ``J`` with one of four step rules:

    "adam"        Adam on -J
    "lbfgs"       L-BFGS on -J (few, expensive, very effective steps: style and texture;
                  J is rescaled so that its first gradient has mean magnitude 1)
    "sign"        x <- x + lr * sign(dJ/dx)            (steepest ascent in L-inf: FGSM/PGD)
    "normalized"  x <- x + lr * g / mean|g|,  g = dJ/dx (DeepDream)

or with any ``torch.optim`` optimiser you pass in (it minimises -J; its state carries over
from one call to the next, so a long run can be cut into resumable pieces). It returns
``Optimized(image, history)``: the image and the :class:`History` of the objective, step by step,
as do the methods built on it (class visualisation, DeepDream, inversion, texture synthesis, style
transfer); the adversarial attacks return only their adversarial image or perturbation.

A parameterisation may itself be a network: in fast style transfer (notebook 08) the
images are ``T_theta(photos)`` and the optimiser trains the weights ``theta``.

Images are always ``[N, 3, H, W]`` in ``[0, 1]`` pixel space; the model's own
normalisation ``(x - mean) / std`` is applied inside, so every function takes and returns
ordinary pictures. Any memory layout works (``array.permute(2, 0, 1)``, channels-last): the
optimised tensor is made contiguous at the start. An image too small for the network is
refused with the smallest size that fits (:func:`smallest_size`). A layer whose module runs
more than once in one forward pass (ResNet's ``BasicBlock.relu``, applied inside the block and
again after the skip connection) means its **first** call, for :func:`activations` and for
objectives alike; name the block (``"layer1.0"``) for its output.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch
from torch import nn

from .inputs import (check_channel, check_int, check_model_dtype, check_number, check_perturbation, check_pixels,
                     check_size, check_targets, model_device, model_dtype)
from .layers import eval_mode, get_layer, record_activations
from .models import normalization

#: Most objective evaluations one L-BFGS step may use (1 + its line search).
LBFGS_MAX_EVALS = 25
#: The name objectives use for the model's output (the class scores), whatever the model calls its last layer.
OUTPUT = "output"


# --------------------------------------------------------------------------- model input


def _stats(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's per-channel ``(mean, std)`` (:func:`course_lib.models.normalization`), ``[1, 3, 1, 1]``
    each, like ``x``."""
    mean, std = normalization(model)
    return torch.tensor(mean).to(x).view(1, 3, 1, 1), torch.tensor(std).to(x).view(1, 3, 1, 1)


def network_view(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``I = (x - mean) / std``: the pixels ``x`` as the network's first layer sees them (0 = the mean colour).
    The models normalise their own input; this is for regularisers measured from the mean colour."""
    mean, std = _stats(model, x)
    return (x - mean) / std


@torch.no_grad()
def scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The class scores (logits) ``[N, classes]`` of pixel images ``x``, in eval mode, without gradient.

    ``x``: ``[N, 3, H, W]`` (or ``[3, H, W]``) pixels in ``[0, 1]`` of the model's float type
    (:func:`course_lib.inputs.check_pixels`)."""
    return evaluate(model, Objective((OUTPUT,), lambda a, x: a[OUTPUT], "scores"), x)


# --------------------------------------------------------------------------- objectives


@dataclass
class Objective:
    """A scalar to maximise: ``fn(acts, image) -> tensor [N]`` (one value per image), where
    ``acts[name]`` are the activations of the named ``layers`` for the (transformed)
    batch (``acts["output"]``: the model's output, the class scores; a module that runs twice in
    one forward pass is recorded at its first call) and ``image`` the batch in pixel space.
    Objectives combine linearly:
    ``a + b``, ``a - b``, ``2.0 * a``. :func:`optimize` maximises the sum over the batch.
    """

    layers: tuple
    fn: Callable
    name: str = "objective"

    def __call__(self, acts: dict, image: torch.Tensor) -> torch.Tensor:
        return self.fn(acts, image)

    def __add__(self, other: "Objective") -> "Objective":
        return Objective(tuple(dict.fromkeys(self.layers + other.layers)),
                         lambda a, x: self(a, x) + other(a, x), f"{self.name} + {other.name}")

    def __neg__(self) -> "Objective":
        return Objective(self.layers, lambda a, x: -self(a, x), f"-({self.name})")

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-other)

    def __rmul__(self, k: float) -> "Objective":
        return Objective(self.layers, lambda a, x: k * self(a, x), f"{k:g} * {self.name}")

    __mul__ = __rmul__


def _check_layer(model, layer: str) -> None:
    if layer != OUTPUT:
        get_layer(model, layer)  # KeyError listing the valid names


def _classes(model, target) -> torch.Tensor:
    """One class index, or one per image of the batch (a list, array or tensor), each checked by
    :func:`course_lib.inputs.check_targets` against the model's classes."""
    return torch.tensor(check_targets(target, len(model.class_names), name="target"))


def class_score(model, target, *, layer: str = OUTPUT) -> Objective:
    """``S_c``: the *unnormalised* score (logit) of class ``c = target`` (or of ``target[i]`` for image ``i``)."""
    _check_layer(model, layer)
    cs = _classes(model, target)

    def score(a, x):
        idx = cs.to(a[layer].device)
        if len(idx) == 1:
            idx = idx.expand(len(x))
        elif len(idx) != len(x):
            raise ValueError(f"{len(idx)} classes for a batch of {len(x)} images")
        return a[layer].gather(1, idx[:, None])[:, 0]

    return Objective((layer,), score, f"S_{target}")


def class_probability(model, target, *, layer: str = OUTPUT, log: bool = True) -> Objective:
    """``log p_c`` (or ``p_c``) of class ``c = target``, the softmax of the scores: rises also by
    *lowering the other classes*."""
    _check_layer(model, layer)
    score = class_score(model, target, layer=layer)
    f = torch.log_softmax if log else torch.softmax
    return Objective((layer,), lambda a, x: score({layer: f(a[layer], 1)}, x), f"{'log ' if log else ''}p_{target}")


def channel(model, *, layer: str, channel: int) -> Objective:
    """Mean activation of channel ``channel`` of ``layer`` over all positions."""
    _check_layer(model, layer)
    return Objective((layer,), lambda a, x: a[layer][:, check_channel(channel, a[layer].shape[1], layer)].mean((-2, -1)),
                     f"{layer}[{channel}]")


def channels(model, *, layer: str, channels) -> Objective:
    """``a_{l,c_i}(x_i) = mean_jk A_l(x_i)[c_i, j, k]``: image ``i`` of the batch scores the mean activation of
    its own channel ``c_i = channels[i]`` (one channel for all images: :func:`channel`). A batch of
    feature visualisations is then one optimisation: image ``i``'s gradient depends on image ``i`` only.
    ``channels``: an int or a list of ints, each checked against the layer's channels at the first pass."""
    _check_layer(model, layer)
    many = channels.tolist() if hasattr(channels, "tolist") else channels   # arrays and tensors: their ints
    cs = [check_int(c, "channel") for c in (many if isinstance(many, (list, tuple, range)) else [many])]
    if not cs:
        raise ValueError("channels: give at least one channel")

    def f(a, x):
        act = a[layer]
        idx = [check_channel(c, act.shape[1], layer) for c in cs]
        if len(idx) == 1:
            idx = idx * len(act)
        elif len(idx) != len(act):
            raise ValueError(f"{len(idx)} channels for a batch of {len(act)} images")
        return act[torch.arange(len(act)), idx].reshape(len(act), -1).mean(1)

    return Objective((layer,), f, f"{layer}[{', '.join(map(str, cs))}]")


def layer_l2(model, *, layer: str, channel: int | None = None) -> Objective:
    """``||A_l||^2 / size``: the mean squared activation of a layer (or of one ``channel``). DeepDream's objective."""
    _check_layer(model, layer)

    def f(a, x):
        act = a[layer]
        if channel is not None:
            act = act[:, check_channel(channel, act.shape[1], layer)]
        return act.pow(2).flatten(1).mean(1)

    return Objective((layer,), f, f"|{layer}{'' if channel is None else f'[{channel}]'}|^2")


def feature_match(model, *, layer: str, features: torch.Tensor) -> Objective:
    """``-||phi_l(x) - phi_l(y)||^2 / ||phi_l(y)||^2``: minus the relative feature error to
    ``features = phi_l(y)`` (the activations of ``layer`` for the reference image ``y``)."""
    _check_layer(model, layer)
    features = features.detach()
    norm = features.pow(2).sum().clamp_min(1e-12)
    return Objective((layer,), lambda a, x: -(a[layer] - features).pow(2).flatten(1).sum(1) / norm, f"match {layer}")


def l2(model, power: float = 2.0) -> Objective:
    """``||I||_p^p / size`` of the image the network sees, ``I = (x - mean) / std`` (0 = the mean colour).
    Subtract it from an objective to keep the image near the data's mean."""
    power = check_number(power, "power", low=0, low_open=True)
    return Objective((), lambda a, x: network_view(model, x).abs().pow(power).flatten(1).mean(1), f"|I|^{power:g}")


def total_variation(power: float = 2.0) -> Objective:
    """``sum |x_{i+1,j} - x_ij|^p + |x_{i,j+1} - x_ij|^p`` (mean over pixels): large for noisy images."""
    power = check_number(power, "power", low=0, low_open=True)
    def f(a, x):
        dh = (x[..., 1:, :] - x[..., :-1, :]).abs().pow(power).flatten(1).mean(1)
        dw = (x[..., :, 1:] - x[..., :, :-1]).abs().pow(power).flatten(1).mean(1)
        return dh + dw
    return Objective((), f, "TV")


# --------------------------------------------------------------------------- parameterisations


class PixelImage(nn.Module):
    """The pixels themselves, ``[N, 3, H, W]`` in ``[0, 1]``: ``image() = x``.

    Initialised from ``init`` (copied into a contiguous tensor, never modified: any memory layout
    works). Use with the :func:`clamp_pixels` projection so the image stays valid.
    """

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.x = nn.Parameter(check_pixels(init, "init").detach().clone(memory_format=torch.contiguous_format))

    def forward(self) -> torch.Tensor:
        return self.x


#: Colour decorrelation (Lucid): the square root of the RGB covariance of ImageNet pixels, so
#: parameters are roughly independent "colour" directions scaled to their natural strengths.
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])


class FourierImage(nn.Module):
    """A decorrelated Fourier parameterisation (Mordvintsev et al. 2018, *Differentiable image
    parameterizations*):

        x = sigmoid( C . IFFT( s(f) * z ) ),   s(f) = 1 / max(f, 1/size)^decay

    ``z`` are complex spectrum coefficients per colour channel, ``s`` scales each frequency
    ``f`` so that a unit step changes every frequency's *visible* energy equally (natural images
    have a 1/f spectrum), and ``C`` (:data:`COLOR_CORRELATION_SQRT`) maps independent colour
    components to correlated RGB. Plain pixel steps are dominated by high frequencies; here
    they are not, and images look smoother and more natural.
    """

    def __init__(self, size, batch: int = 1, sd: float = 0.01, decay: float = 1.0, seed: int = 0):
        super().__init__()
        h, w = check_size(size)
        batch, seed = check_int(batch, "batch", low=1), check_int(seed, "seed")
        sd, decay = check_number(sd, "sd", low=0), check_number(decay, "decay")
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freq = torch.sqrt(fx ** 2 + fy ** 2)
        self.register_buffer("scale", 1.0 / freq.clamp_min(1.0 / max(h, w)) ** decay)
        g = torch.Generator().manual_seed(seed)
        self.spectrum = nn.Parameter(sd * torch.randn(batch, 3, *freq.shape, 2, generator=g))
        self.size = (h, w)

    def forward(self) -> torch.Tensor:
        coeffs = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(coeffs, s=self.size, norm="ortho")
        img = torch.einsum("nchw,dc->ndhw", img, COLOR_CORRELATION_SQRT.to(img) / COLOR_CORRELATION_SQRT.norm(dim=0).max())
        return torch.sigmoid(img * 4)


class Perturbation(nn.Module):
    """An additive perturbation of fixed images: ``image() = clamp(x + delta, 0, 1)``.

    ``delta`` has the shape of ``x`` (one per image), or ``[1, 3, H, W]`` with ``shared=True``
    (a *universal* perturbation: one delta for every image). ``x`` may be replaced between
    steps (``p.x = next_batch``), as universal perturbations are trained on many batches.
    ``init`` (default zeros): a starting delta in pixel units (:func:`course_lib.inputs.check_perturbation`;
    ``[1, 3, H, W]`` is repeated for every image unless ``shared``).
    """

    def __init__(self, x: torch.Tensor, shared: bool = False, init: torch.Tensor | None = None):
        super().__init__()
        self.x = check_pixels(x).detach()
        shape = (1, *self.x.shape[1:]) if shared else tuple(self.x.shape)
        like = self.x[:1] if shared else self.x
        delta = torch.zeros(shape) if init is None else check_perturbation(init, like, "init")
        self.delta = nn.Parameter(delta.detach().to(self.x).expand(shape).clone(memory_format=torch.contiguous_format))

    def forward(self) -> torch.Tensor:
        return (self.x + self.delta).clamp(0, 1)


# --------------------------------------------------------------------------- transforms (before each forward)


def jitter(d: int) -> Callable:
    """Shift the image by a random ``(dy, dx)``, ``|dy|, |dx| <= d`` pixels (wrapping around)."""
    d = check_int(d, "jitter", low=0)
    def t(x, g):
        dy, dx = (int(v) for v in torch.randint(-d, d + 1, (2,), generator=g))
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    return t


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``x`` blurred by a Gaussian of ``sigma`` pixels (torchvision; kernel ``2 ceil(3 sigma) + 1``)."""
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    if check_number(sigma, "sigma", low=0) == 0:
        return x
    k = 2 * math.ceil(3 * sigma) + 1
    return tv_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])


# --------------------------------------------------------------------------- projections (after each step)


def clamp_pixels() -> Callable:
    """Keep a :class:`PixelImage` in ``[0, 1]``."""
    def p(param, step):
        param.x.data.clamp_(0, 1)
    return p


def linf_ball(x0: torch.Tensor, eps: float) -> Callable:
    """Keep ``x`` within ``|x - x0|_inf <= eps`` and in ``[0, 1]`` (PGD's projection), for a
    :class:`PixelImage`; for a :class:`Perturbation`, keep ``|delta|_inf <= eps``."""
    eps = check_number(eps, "eps", low=0, hint="a budget in pixel units, e.g. 4/255")
    def p(param, step):
        if isinstance(param, Perturbation):
            param.delta.data.clamp_(-eps, eps)
        else:
            delta = (param.x.data - x0).clamp(-eps, eps)
            param.x.data.copy_((x0 + delta).clamp(0, 1))
    return p


def blur_every(every: int, sigma: float) -> Callable:
    """Blur a :class:`PixelImage` with a Gaussian of ``sigma`` px every ``every`` steps
    (Yosinski et al. 2015): a regulariser that removes high frequencies the objective built up.
    ``every=0`` never blurs."""
    every, sigma = check_int(every, "blur_every", low=0), check_number(sigma, "blur_sigma", low=0)
    def p(param, step):
        if every and (step + 1) % every == 0:
            param.x.data.copy_(gaussian_blur(param.x.data, sigma))
    return p


def clip_small(model, norm_percentile: float = 0.0, contribution_percentile: float = 0.0) -> Callable:
    """Yosinski et al. 2015: set pixels to the mean colour (``I = 0``) where, per image,

    * the pixel's norm ``|I_ij|`` (over colours) is below the ``norm_percentile``-th percentile, or
    * its *contribution* ``|sum_c I_cij * dJ/dI_cij|`` (a first-order estimate of how much the
      objective would drop if the pixel were set to 0) is below ``contribution_percentile``.

    ``I = (x - mean) / std`` is the image the network sees. Uses the gradient of the last step.
    """
    norm_percentile = check_number(norm_percentile, "norm_percentile", low=0, high=100)
    contribution_percentile = check_number(contribution_percentile, "contribution_percentile", low=0, high=100)
    def p(param, step):
        x = param.x.data
        mean, std = _stats(model, x)
        centred = (x - mean) / std
        keep = torch.ones_like(x[:, :1], dtype=torch.bool)
        if norm_percentile > 0:
            norm = centred.norm(dim=1, keepdim=True)
            keep &= norm >= torch.quantile(norm.flatten(1), norm_percentile / 100, dim=1).view(-1, 1, 1, 1)
        if contribution_percentile > 0 and param.x.grad is not None:
            contrib = (centred * param.x.grad * std).sum(1, keepdim=True).abs()  # dJ/dI = dJ/dx * std
            keep &= contrib >= torch.quantile(contrib.flatten(1), contribution_percentile / 100, dim=1).view(-1, 1, 1, 1)
        x.copy_(torch.where(keep, x, mean.expand_as(x)))
    return p


# --------------------------------------------------------------------------- the loop


@dataclass
class History:
    """What :func:`optimize` records after every step: the objective (sum over the batch) and
    the number of objective evaluations (forward + backward passes) so far. First-order rules
    take one per step; an L-BFGS step takes one more per line-search trial."""

    objective: list = field(default_factory=list)
    evaluations: list = field(default_factory=list)


class Optimized(NamedTuple):
    """What an optimisation returns: the ``image`` it made (``param()`` after the last step,
    detached) and the :class:`History` of the run. A tuple, so it unpacks
    (``x, history = class_visualization(model, 3)``), or read by name (``result.image``)."""

    image: torch.Tensor
    history: History


def _hooked(objective: Objective) -> list:
    return [name for name in objective.layers if name != OUTPUT]


class _Enough(Exception):
    """Raised inside the forward pass once every wanted activation is recorded."""


class stop_after(contextlib.AbstractContextManager):
    """While active, a forward pass stops as soon as all of ``names`` are in ``acts``: layers after
    the deepest wanted one are never run (inverting ``conv1_1`` costs one conv, not the network)."""

    def __init__(self, model, names, acts: dict):
        self.handles, self.names, self.acts = [], list(names), acts
        for name in self.names:
            self.handles.append(get_layer(model, name).register_forward_hook(self._check))

    def _check(self, *_):
        if all(n in self.acts for n in self.names):
            raise _Enough

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        return False


def _forward(model, objective: Objective, x: torch.Tensor, acts: dict) -> None:
    """Run the model on ``x`` (pixels) as far as the objective needs; fill ``acts``."""
    check_model_dtype(model, x)
    acts.clear()
    if OUTPUT in objective.layers:
        acts[OUTPUT] = model(x)
    elif objective.layers:
        try:
            model(x)
        except _Enough:
            pass


def _recording(model, objective: Objective):
    """Context: record the objective's layers (a module that runs twice: its first call) and stop the
    forward pass after the deepest one."""
    stack = contextlib.ExitStack()
    acts = stack.enter_context(record_activations(model, _hooked(objective), detach=False))
    if OUTPUT not in objective.layers and objective.layers:
        stack.enter_context(stop_after(model, _hooked(objective), acts))
    return stack, acts


def _zeros(model, h: int, w: int) -> torch.Tensor:
    """A black image ``[1, 3, h, w]`` of the model's floating type, on its device."""
    return torch.zeros(1, 3, h, w, dtype=model_dtype(model), device=model_device(model))


def _probe(model: nn.Module, layers, x: torch.Tensor) -> None:
    """One forward pass of ``x`` as far as ``layers`` need, without gradient; torch's error if it does not fit."""
    probe = Objective(tuple(layers), lambda a, x: None)
    stack, acts = _recording(model, probe)
    with eval_mode(model), torch.no_grad(), stack:
        _forward(model, probe, x, acts)


def smallest_size(model: nn.Module, layers=(OUTPUT,)) -> int | None:
    """The smallest side ``S`` for which an ``S x S`` image passes through ``model`` as far as ``layers``
    need (``"output"``: the whole network), found by bisection with zero images up to the model's
    ``input_size``; None if even that fails (then the trouble is not the size)."""
    def fits(s: int) -> bool:
        try:
            _probe(model, layers, _zeros(model, s, s))
            return True
        except RuntimeError:
            return False

    lo, hi = 0, int(getattr(model, "input_size", 224))
    if not fits(hi):
        return None
    while hi - lo > 1:   # fits(hi), and lo is known to fail (or 0)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


@contextlib.contextmanager
def _says_if_too_small(model, layers, image, name: str, hint: str = "use a larger image"):
    """Context (outside the hooks): a ``RuntimeError`` raised inside because ``image`` (a tensor, or a
    function giving it) is too small for the network becomes a ``ValueError`` naming ``name`` and the
    smallest size that fits, instead of torch's "Output size is too small"."""
    try:
        yield
    except RuntimeError as err:
        with torch.no_grad():
            h, w = (image() if callable(image) else image).shape[-2:]
        need = smallest_size(model, layers)
        if need is None or need <= min(h, w):
            raise
        upto = "" if OUTPUT in layers else f" up to {', '.join(layers)}"
        raise ValueError(f"{name} is {h}x{w} pixels, too small for the model{upto}: it needs at least "
                         f"{need}x{need} pixels ({hint})") from err


def check_fits(model: nn.Module, size, layers=(OUTPUT,), name: str = "size", hint: str = "use a larger size") -> None:
    """Raise a ``ValueError`` naming ``name`` and the smallest size that fits (:func:`smallest_size`)
    unless an image of ``size`` (``S`` or ``(H, W)``) passes through ``model`` as far as ``layers``."""
    x = _zeros(model, *check_size(size, name))
    with _says_if_too_small(model, tuple(layers), x, name, hint):
        _probe(model, layers, x)


def evaluate(model: nn.Module, objective: Objective, image: torch.Tensor, *, name: str = "image") -> torch.Tensor:
    """``J`` per image for a batch of pixel images (no transforms, no gradient). ``name``: what the
    error messages call ``image``."""
    image = check_pixels(image, name, model=model)
    stack, acts = _recording(model, objective)
    with _says_if_too_small(model, objective.layers, image, name), eval_mode(model), torch.no_grad(), stack:
        _forward(model, objective, image, acts)
        return objective(acts, image)


def activations(model: nn.Module, image: torch.Tensor, layers, *, name: str = "image") -> dict:
    """The activations ``{layer: tensor}`` of pixel images ``image`` at ``layers`` (names, or one
    name), in one forward pass that stops after the deepest of them (no gradient). A module that
    runs twice in one pass is recorded at its first call, as objectives see it. ``name``: what the
    error messages call ``image``."""
    layers = [layers] if isinstance(layers, str) else list(layers)
    image = check_pixels(image, name, model=model)
    probe = Objective(tuple(layers), lambda a, x: a)
    stack, acts = _recording(model, probe)
    with _says_if_too_small(model, probe.layers, image, name), eval_mode(model), torch.no_grad(), stack:
        _forward(model, probe, image, acts)
        return {layer: acts[layer].detach() for layer in layers}


# --------------------------------------------------------------------------- step rules
# Each makes ``step(objective_value) -> J``: one update of the parameters ``theta`` that raises
# ``J``, where ``objective_value()`` evaluates J at the current parameters (a forward pass,
# ready for backward). It returns J where the step started.


def _optimizer_step(optimizer: torch.optim.Optimizer) -> Callable:
    """One step of a ``torch.optim`` optimiser on ``-J`` (it minimises; Adam, or any optimiser passed in)."""
    def step(objective_value):
        optimizer.zero_grad(set_to_none=True)
        j = objective_value()
        (-j).backward()
        optimizer.step()
        return float(j.detach())
    return step


def _adam_step(params, lr: float) -> Callable:
    """Adam (Kingma & Ba 2015) on ``-J`` with step size ``lr``."""
    return _optimizer_step(torch.optim.Adam(params, lr=lr))


def _lbfgs_scale(objective_value, params) -> float:
    """``1 / mean |dJ/dparams|`` at the start. PyTorch's L-BFGS drops every curvature pair with
    ``y . s < 1e-10`` and then crawls along the raw gradient, so an objective with tiny
    gradients (a relative loss spread over a large image) would never move. Maximising
    ``scale * J`` has the same solution and gradients of order 1."""
    for p in params:
        p.grad = None
    objective_value().backward()
    mean_abs = torch.cat([p.grad.abs().flatten() for p in params]).mean().item()
    for p in params:
        p.grad = None
    return 1.0 / mean_abs if math.isfinite(mean_abs) and mean_abs > 0 else 1.0


def _lbfgs_step(params, lr: float) -> Callable:
    """L-BFGS on ``-s J``, ``s = 1 / mean |dJ/dtheta|`` at the first step (:func:`_lbfgs_scale`):
    one iteration per step, its strong-Wolfe line search taking up to ``LBFGS_MAX_EVALS``
    evaluations of ``J`` in all."""
    # max_eval defaults to 1.25 * max_iter = 1, which leaves the line search no evaluation at all.
    # Tolerances 0: the number of steps is ours to choose.
    optimizer = torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=LBFGS_MAX_EVALS, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
    scale = None

    def step(objective_value):
        nonlocal scale
        if scale is None:
            scale = _lbfgs_scale(objective_value, params)

        def closure():
            optimizer.zero_grad(set_to_none=True)
            loss = -scale * objective_value()
            loss.backward()
            return loss
        return -float(optimizer.step(closure).detach()) / scale
    return step


def _ascent_step(params, direction: Callable) -> Callable:
    """Gradient ascent ``theta <- theta + direction(g)``, ``g = dJ/dtheta``, for each parameter tensor."""
    def step(objective_value):
        for p in params:
            p.grad = None
        j = objective_value()
        j.backward()
        value = float(j.detach())
        with torch.no_grad():
            for p in params:
                p.add_(direction(p.grad))
        return value
    return step


def _sign_step(params, lr: float) -> Callable:
    """``theta <- theta + lr * sign(g)``: steepest ascent in the L-inf norm (FGSM, PGD)."""
    return _ascent_step(params, lambda g: lr * g.sign())


def _normalized_step(params, lr: float) -> Callable:
    """``theta <- theta + lr * g / mean|g|``: steps of mean size ``lr`` whatever the gradient's scale (DeepDream)."""
    return _ascent_step(params, lambda g: lr * g / g.abs().mean().clamp_min(1e-12))


#: The step rules by name: ``STEP_RULES[name](params, lr)`` makes the step of one run.
STEP_RULES = {"adam": _adam_step, "lbfgs": _lbfgs_step, "sign": _sign_step, "normalized": _normalized_step}


# --------------------------------------------------------------------------- optimize


@contextlib.contextmanager
def _frozen(model: nn.Module):
    """Context: ``model``'s parameters need no gradient (only the image's do); restored afterwards."""
    before = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        yield
    finally:
        for p, r in zip(model.parameters(), before):
            p.requires_grad_(r)


def optimize(model: nn.Module, objective: Objective, param: nn.Module, steps: int = 100, lr: float = 0.05,
             step_rule: str = "adam", transforms=(), projections=(), seed: int = 0, callback=None,
             every: int = 10, progress: bool = True, desc: str | None = None) -> Optimized:
    """Maximise ``objective`` over ``param`` (a parameterisation: ``param()`` gives the images).

    Each of the ``steps`` steps, with ``theta`` the parameters of ``param``:

        x = t_n(... t_1(param()))    the ``transforms``, each ``t(x, generator)`` (random draws
                                      from one generator seeded with ``seed``)
        J = sum over the batch of objective(acts, x),  acts: the model's activations at objective.layers
        theta <- one step of ``step_rule``:
            "adam"        Adam on -J
            "lbfgs"       one L-BFGS iteration (and its line search) on -s J,  s = 1 / mean|dJ/dtheta| at the start
            "sign"        theta <- theta + lr * sign(g),   g = dJ/dtheta
            "normalized"  theta <- theta + lr * g / mean|g|
            an optimiser  its own step on -J (a ``torch.optim.Optimizer`` over theta: ``lr`` is then
                          its own, and its state carries over from one call to the next)
        p(param, step) for each of the ``projections``

    ``callback(step, image, J)`` is called every ``every`` steps and after the last (a live
    preview). The model is put in eval mode and restored; its parameters are not touched;
    every hook is removed.

    Returns ``Optimized(image, history)``: ``param()`` after the last step, detached, and the run's
    :class:`History`.
    ``steps >= 0``, ``lr >= 0`` (0: no step, e.g. FGSM with a budget of 0; L-BFGS: ``lr > 0``),
    ``every >= 1``; anything else raises a ``ValueError``.
    """
    from tqdm.auto import tqdm

    given = isinstance(step_rule, torch.optim.Optimizer)
    if not given and step_rule not in STEP_RULES:
        raise ValueError(f"unknown step_rule {step_rule!r}; choose one of {', '.join(STEP_RULES)}")
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective (e.g. class_score(model, target)), got {type(objective).__name__}")
    if not isinstance(param, nn.Module):
        raise TypeError(f"param must be a parameterisation (e.g. PixelImage(x)), got {type(param).__name__}")
    steps, every, seed = check_int(steps, "steps", low=0), check_int(every, "every", low=1), check_int(seed, "seed")
    lr = lr if given else check_number(lr, "lr", low=0, low_open=step_rule == "lbfgs", hint="the step size")

    g = torch.Generator().manual_seed(seed)
    params = [p for p in param.parameters() if p.requires_grad]
    take_step = _optimizer_step(step_rule) if given else STEP_RULES[step_rule](params, lr)
    history, evaluations = History(), 0

    def objective_value() -> torch.Tensor:
        """``J`` of the current images under new random transforms (one forward pass)."""
        nonlocal evaluations
        evaluations += 1
        x = param()
        for t in transforms:
            x = t(x, g)
        _forward(model, objective, x, acts)
        return objective(acts, x).sum()

    with _frozen(model):
        stack, acts = _recording(model, objective)
        with _says_if_too_small(model, objective.layers, param, "the optimised image"), eval_mode(model), \
                torch.enable_grad(), stack:
            for step in tqdm(range(steps), desc=desc or objective.name, disable=not progress, unit="step", leave=False):
                value = take_step(objective_value)
                if not math.isfinite(value):
                    raise FloatingPointError(f"the objective became {value} at step {step}: lower the learning rate")
                history.objective.append(value)
                history.evaluations.append(evaluations)
                with torch.no_grad():
                    for project in projections:
                        project(param, step)
                    if callback is not None and ((step + 1) % every == 0 or step == steps - 1):
                        callback(step, param().detach(), value)
    with torch.no_grad():
        return Optimized(param().detach().clone(), history)
