"""Adversarial examples ("fooling images"): tiny changes that flip the network's decision.

Szegedy et al. (2014) found, for an image ``x`` and a wrong label ``l``, the smallest change
``r`` that makes the network answer ``l``, by solving (box-constrained, ``x + r`` a valid image)

    min_r  c |r|^2 + loss(f(x + r), l)                   (:func:`minimum_perturbation`, c = ``penalty``)

The changes are invisible to a person. Goodfellow et al. (2015) explained them by the
network's near-linearity and gave a one-step attack under an L-inf budget ``eps``
(every pixel changes by at most ``eps``):

    FGSM      x' = clip_[0,1]( x + eps sign(grad_x loss(f(x), y)) )          (untargeted)

and Madry et al. (2018) iterated it, projecting back into the budget after every step:

    PGD       x_{t+1} = Proj_{|x' - x|_inf <= eps, [0,1]}( x_t -/+ alpha sign(grad loss) )

(targeted: *descend* the loss of the target class; untargeted: *ascend* the loss of the
true class; here without PGD's random start). All three are :func:`course_lib.optimize.optimize`
with the ``"sign"`` or ``"lbfgs"`` step rule, but unlike the visualisations they return only the
adversarial images, not ``Optimized(image, history)``: an attack's result is the image that fools
the network, used like the photo it replaces. Each takes the class as ``target``: for the
untargeted attacks the class whose score they lower (normally the true label ``y``; None: the
predicted class), for the targeted ones the class to reach.

**Universal perturbations** (Moosavi-Dezfooli et al. 2017): one ``v`` with ``|v|_inf <= xi``
that fools the network on *most* images. We find it by projected stochastic gradient
ascent of the loss over batches of training images (the SGD variant of Shafahi et al. 2020,
instead of the original's DeepFool inner loop), and measure its fooling rate on held-out images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import optimize as opt
from .inputs import check_int, check_number, check_perturbation, check_pixels, check_targets


def _check_eps(eps, name="eps") -> float:
    eps = check_number(eps, name, low=0, hint="a budget in pixel units, e.g. 4/255")
    if eps > 1:
        raise ValueError(f"{name} = {eps} is larger than the whole pixel range [0, 1]: did you mean {eps}/255?")
    return eps


def _labels(model, x: torch.Tensor, target, name: str = "target", predicted_if_none: bool = False) -> torch.Tensor:
    """One class index per image of ``x`` (:func:`course_lib.inputs.check_targets`), as a tensor;
    with ``predicted_if_none``, ``target=None`` means the model's predictions."""
    if target is None and predicted_if_none:
        return predict(model, x)[0]
    return torch.tensor(check_targets(target, len(model.class_names), count=len(x), name=name), device=x.device)


def cross_entropy(model, target: torch.Tensor, *, sign: float = 1.0) -> opt.Objective:
    """``sign * CE(f(x_i), t_i) / N`` per image, ``t = target`` (a tensor of class indices, one per
    image): the batch-mean cross-entropy, split per image."""
    return opt.Objective((opt.OUTPUT,),
                         lambda a, x: sign * F.cross_entropy(a[opt.OUTPUT], target, reduction="none") / len(target),
                         f"{'+' if sign > 0 else '-'}CE")


def predict(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels, probabilities of those labels)`` for pixel images ``x``."""
    conf, labels = torch.softmax(opt.scores(model, x), dim=1).max(1)
    return labels, conf


def fgsm(model, x: torch.Tensor, target=None, *, eps: float) -> torch.Tensor:
    """Untargeted FGSM: ``clip(x + eps * sign(grad_x CE(f(x), target)), 0, 1)``.

    ``target``: the class whose score the attack lowers, normally the true label (one index, or
    one per image); None: the class the model predicts for each image. Returns the adversarial
    images ``x'`` only (an attack: no history)."""
    eps = _check_eps(eps)
    x = check_pixels(x, model=model)
    target = _labels(model, x, target, predicted_if_none=True)
    return opt.optimize(model, cross_entropy(model, target), opt.PixelImage(x), steps=1, lr=eps, step_rule="sign",
                        projections=[opt.linf_ball(x, eps)], progress=False).image


def _pgd_arguments(model, x, target, eps, alpha, targeted: bool, name: str):
    """PGD's arguments checked: ``(x, target as one label per image, eps, alpha)``, ``alpha``
    defaulting to ``eps / 4`` and ``target`` to the predicted classes (untargeted only)."""
    eps = _check_eps(eps)
    alpha = eps / 4 if alpha is None else _check_eps(alpha, "alpha")
    x = check_pixels(x, model=model)
    if targeted and target is None:
        raise TypeError(f"{name}(..., targeted=True) needs target: the class to reach (an int, or one per image)")
    return x, _labels(model, x, target, predicted_if_none=True), eps, alpha


def pgd(model, x: torch.Tensor, target=None, *, eps: float, alpha: float | None = None, steps: int = 10,
        targeted: bool = False, progress: bool = False) -> torch.Tensor:
    """Projected gradient descent under ``|x' - x|_inf <= eps`` (no random start).

    ``targeted=False``: ``target`` is the class whose loss is ascended, normally the true label
    (None: the predicted class). ``targeted=True``: ``target`` is the class to reach (required),
    its loss is descended. One index, or one per image. ``alpha`` (default ``eps / 4``) is the
    step size. Returns the adversarial images ``x'`` only (an attack: no history), in ``[0, 1]``,
    within budget.
    """
    x, target, eps, alpha = _pgd_arguments(model, x, target, eps, alpha, targeted, "pgd")
    j = cross_entropy(model, target, sign=-1.0 if targeted else 1.0)
    return opt.optimize(model, j, opt.PixelImage(x), steps=steps, lr=alpha, step_rule="sign",
                        projections=[opt.linf_ball(x, eps)], progress=progress, desc="PGD").image


def pgd_until_fooled(model, x: torch.Tensor, target=None, *, eps: float, alpha: float | None = None,
                     steps: int = 10, targeted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`pgd` that stops on each image as soon as the network is fooled, as an attacker would.

    The iterates are PGD's, ``x_t = pgd(model, x, target, eps=eps, alpha=alpha, steps=t,
    targeted=targeted)``. Returns ``(x', fooled)``: for each image the first of ``x_0 = x, x_1, ...,
    x_steps`` that fools the network (untargeted: its label is not ``target``; targeted: it is
    ``target``), or ``x_steps`` if none does, and whether one did (a boolean per image).

    Each step runs only on the images not fooled yet, and the prediction for ``x_t`` comes free with
    the forward pass of step ``t + 1``: an image that falls at step ``t`` costs ``t + 1`` passes
    instead of ``steps``. Success "at any step" is at least PGD's success after its last step (an
    image can be fooled at step 3 and not at step 10)."""
    x, target, eps, alpha = _pgd_arguments(model, x, target, eps, alpha, targeted, "pgd_until_fooled")
    steps = check_int(steps, "steps", low=0)

    def fools(labels, t):
        return labels == t if targeted else labels != t

    adversarial = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    left = torch.arange(len(x), device=x.device)          # the images not fooled yet
    for _ in range(steps):
        seen = []
        j = cross_entropy(model, target[left], sign=-1.0 if targeted else 1.0)

        def j_noting_labels(acts, image, j=j, seen=seen):
            seen.append(acts[opt.OUTPUT].detach().argmax(1))    # the labels of the images before this step
            return j(acts, image)

        stepped = opt.optimize(model, opt.Objective(j.layers, j_noting_labels, j.name), opt.PixelImage(adversarial[left]),
                               steps=1, lr=alpha, step_rule="sign", projections=[opt.linf_ball(x[left], eps)],
                               progress=False).image
        won = fools(seen[0], target[left])                  # fooled before this step: keep that image
        fooled[left[won]] = True
        adversarial[left[~won]] = stepped[~won]
        left = left[~won]
        if len(left) == 0:
            break
    if len(left):
        fooled[left] = fools(predict(model, adversarial[left])[0], target[left])
    return adversarial, fooled


def minimum_perturbation(model, x: torch.Tensor, target, *, penalty: float = 0.1, steps: int = 20,
                         progress: bool = False) -> torch.Tensor:
    """Szegedy et al.'s targeted attack: ``min_r c |r|_2^2 + CE(f(x + r), target)`` with
    ``x + r`` in ``[0, 1]`` and ``c = penalty``, by L-BFGS on the pixels (as in the paper; the box
    constraint by clipping after every step). A larger ``penalty`` (``>= 0``) buys a smaller change
    at the risk of not reaching the target (the paper searches for the smallest ``c`` that still
    succeeds). ``target``: the class to reach (one index, or one per image). Returns the adversarial
    images ``x + r`` only: like FGSM and PGD it is an attack, compared with them image for image (no
    history). A batch ``x`` is one L-BFGS run on the sum of the images' (independent) objectives: the
    same minimum, but one shared line search, so the steps differ from one call per image."""
    x = check_pixels(x, model=model)
    penalty = check_number(penalty, "penalty", low=0)
    t = _labels(model, x, target)
    size_of_r = opt.Objective((), lambda a, img: (img - x).pow(2).flatten(1).sum(1) / len(img), "|r|^2")
    j = cross_entropy(model, t, sign=-1.0) - penalty * size_of_r
    return opt.optimize(model, j, opt.PixelImage(x), steps=steps, lr=1.0, step_rule="lbfgs",
                        projections=[opt.clamp_pixels()], progress=progress, desc="min |r|").image


def success_rates(model, x: torch.Tensor, labels, *, epsilons, targets=None, steps: int = 10,
                  batch_size: int = 50, progress: bool = True) -> list[dict]:
    """Attack success on a set of images ``x`` with true ``labels``, for each budget ``eps`` in ``epsilons``.

    Only images the model classifies correctly are attacked (an attack on a mistake means
    nothing). Untargeted: FGSM and PGD, success = the label changes. Targeted (PGD towards
    ``targets``, default ``(labels + 1) mod classes``): success = the target is predicted.
    PGD stops on an image as soon as it is fooled (:func:`pgd_until_fooled`): its success is
    "fooled at some step within ``steps``", as an attacker counts it, at a fraction of the passes
    when most images fall early (large budgets).
    Returns one row per eps: ``eps``, ``images`` attacked, ``fgsm``, ``pgd``, ``pgd_targeted``.
    """
    from tqdm.auto import tqdm

    epsilons = [_check_eps(eps, "epsilons") for eps in epsilons]
    batch_size = check_int(batch_size, "batch_size", low=1)
    x = check_pixels(x, model=model)
    y = _labels(model, x, labels, "labels")
    pred, _ = predict(model, x)
    keep = pred == y
    x, y = x[keep], y[keep]
    n_classes = len(model.class_names)
    targets = (y + 1) % n_classes if targets is None else _labels(model, x, torch.as_tensor(targets)[keep.cpu()], "targets")
    rows = []
    for eps in tqdm(list(epsilons), desc="budgets", disable=not progress):
        hits = {"fgsm": 0, "pgd": 0, "pgd_targeted": 0}
        for s in range(0, len(x), batch_size):
            xb, yb, tb = x[s:s + batch_size], y[s:s + batch_size], targets[s:s + batch_size]
            hits["fgsm"] += int((predict(model, fgsm(model, xb, yb, eps=eps))[0] != yb).sum())
            hits["pgd"] += int(pgd_until_fooled(model, xb, yb, eps=eps, steps=steps)[1].sum())
            hits["pgd_targeted"] += int(pgd_until_fooled(model, xb, tb, eps=eps, steps=steps, targeted=True)[1].sum())
        rows.append({"eps": eps, "images": len(x)} | {k: v / max(1, len(x)) for k, v in hits.items()})
    return rows


# --------------------------------------------------------------------------- universal perturbations


def universal_perturbation(model, images: torch.Tensor, *, xi: float, epochs: int = 5, batch_size: int = 32,
                           lr: float | None = None, seed: int = 0, progress: bool = True) -> torch.Tensor:
    """One perturbation ``v`` ``[1, 3, H, W]``, ``|v|_inf <= xi``, that raises the loss of the
    model's own predictions on as many of ``images`` as possible.

    Each step takes a batch of images, ascends ``sum_i CE(f(clip(x_i + v)), f(x_i))`` by a sign
    step of size ``lr`` (default ``xi / 10``) and projects ``v`` back into the budget; ``epochs``
    (``>= 0``) passes over the shuffled images in batches of ``batch_size`` (``>= 1``). Returns the
    perturbation ``v`` only (an attack: no history; each step is a run of its own).
    """
    from tqdm.auto import tqdm

    xi = _check_eps(xi, "xi")
    lr = xi / 10 if lr is None else check_number(lr, "lr", low=0, hint="the step size")
    epochs, batch_size = check_int(epochs, "epochs", low=0), check_int(batch_size, "batch_size", low=1)
    images = check_pixels(images, "images", model=model)
    labels, _ = predict(model, images)
    g = torch.Generator().manual_seed(seed)
    param = opt.Perturbation(images[:1], shared=True)
    n_batches = max(1, len(images) // batch_size)
    bar = tqdm(total=epochs * n_batches, desc="universal perturbation", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=g)
        for b in range(n_batches):
            idx = order[b * batch_size:(b + 1) * batch_size]
            param.x = images[idx]
            opt.optimize(model, cross_entropy(model, labels[idx]), param, steps=1, lr=lr, step_rule="sign",
                         projections=[opt.linf_ball(None, xi)], progress=False)
            bar.update()
    bar.close()
    return param.delta.detach().clone()


def cached_universal_perturbation(model, images: torch.Tensor, *, xi: float, epochs: int = 5, batch_size: int = 32,
                                  seed: int = 0, progress: bool = True) -> torch.Tensor:
    """:func:`universal_perturbation`, computed once and then read from ``data/cache/results/``
    (:func:`course_lib.cache.remember`: the key covers the model's weights, the images, ``xi``,
    ``epochs``, ``batch_size``, ``seed`` and the library's source)."""
    from .cache import remember

    return remember(universal_perturbation, model, images, xi=xi, epochs=epochs, batch_size=batch_size, seed=seed,
                    progress=progress)


def fooling_rate(model, images: torch.Tensor, v: torch.Tensor, *, batch_size: int = 100) -> float:
    """The share of ``images`` whose predicted label changes when ``v`` is added (clipped to [0, 1]).
    ``v``: ``[1, 3, H, W]`` (or one per image) in pixel units, values in ``[-1, 1]``
    (:func:`course_lib.inputs.check_perturbation`)."""
    images = check_pixels(images, "images", model=model)
    v = check_perturbation(v, images, "v")
    batch_size = check_int(batch_size, "batch_size", low=1)
    changed = 0
    for s in range(0, len(images), batch_size):
        xb, vb = images[s:s + batch_size], v if len(v) == 1 else v[s:s + batch_size]
        changed += int((predict(model, xb)[0] != predict(model, (xb + vb).clamp(0, 1))[0]).sum())
    return changed / len(images)


def random_sign_noise(shape, xi: float, seed: int = 0) -> torch.Tensor:
    """Noise with the same L-inf norm as a perturbation of budget ``xi``: every pixel ``+-xi`` at random."""
    xi = _check_eps(xi, "xi")
    g = torch.Generator().manual_seed(check_int(seed, "seed"))
    return xi * (torch.randint(0, 2, tuple(shape), generator=g) * 2 - 1).float()
