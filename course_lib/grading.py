"""Helpers for the exercises' self-check tests (the notebooks in ``exercises/``).

The test cells of an exercise call the student's function on inputs built here and compare
the answer with the course's reference implementation or with an exact property:

* :func:`tiny_net` -- a small random-weight CourseNet (same layer names as the course model),
  built from a seed, for any input size;
* :func:`random_image` -- a random image of pixels ``[1, 3, S, S]``;
* :func:`feature_net` -- a model that is one chain of given layers (other kernel sizes, strides,
  paddings, dilations than the course model's);
* :func:`check_close`, :func:`check_shape` -- comparisons whose failure message says what
  differs (shape, largest difference, where), not just ``AssertionError``;
* :func:`check_no_side_effects` -- calls a function and fails if it changed its arguments:
  an input tensor modified in place, a model left in another mode, hooks left registered,
  ``.grad`` of parameters filled, weights changed, layers swapped and not put back.

When an exercise is graded, the test cells run in a separate process from the student's
code; the student's functions there are stand-ins that forward each call (see
``exercises/grader``): arguments travel pickled, so models passed to them must be instances
of importable classes (torch's, course_lib's, :class:`FeatureNet`), not classes defined in a
cell. :func:`check_no_side_effects` then asks the student's process only for the *state* of the
arguments after the call (plain data, :func:`state`) and judges it here (:func:`changes`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def tiny_net(seed: int = 0, input_size: int = 64, widths=((8,), (8,), (8, 8), (16, 16)),
             num_classes: int = 10) -> nn.Module:
    """A random-weight CourseNet with narrow layers, in eval mode, with frozen parameters.

    Same structure and lecture names as the course model (``conv1_1`` ... ``relu4_2``, ``gap``,
    ``fc``); ``widths`` gives the channels of each block's convolutions.
    """
    from .models import CourseNet, prepare_model

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = CourseNet(num_classes=num_classes, blocks=tuple(tuple(b) for b in widths))
    finally:
        torch.random.set_rng_state(gen_state)
    return prepare_model(net, [f"class {i}" for i in range(num_classes)], input_size, IMAGENET_MEAN, IMAGENET_STD)


class FeatureNet(nn.Module):
    """A model that is one chain of layers, ``self.features`` (an ``nn.Sequential``), and nothing else."""

    def __init__(self, layers):
        super().__init__()
        from collections import OrderedDict

        self.features = nn.Sequential(OrderedDict(layers) if not isinstance(layers, nn.Sequential) else layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def feature_net(layers, seed: int = 0) -> FeatureNet:
    """A :class:`FeatureNet` of ``layers`` (``[(name, module), ...]``), weights drawn from ``seed``,
    in eval mode with frozen parameters (for tests of other geometries: kernels, strides, dilations)."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = FeatureNet([(n, m) for n, m in layers])
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
    finally:
        torch.random.set_rng_state(gen_state)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def random_image(size: int = 64, seed: int = 0, height: int | None = None) -> torch.Tensor:
    """A random image ``[1, 3, height or size, size]``: pixels drawn uniformly from [0, 1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, height or size, size, generator=g)


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu")
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise AssertionError(f"{name} should be a torch tensor or a numpy array, but it is a {type(x).__name__}")


def check_shape(actual, shape, name: str = "your result") -> None:
    """Fail with a clear message unless ``actual`` (tensor or array) has exactly ``shape``."""
    t = _as_tensor(actual, name)
    if tuple(t.shape) != tuple(shape):
        raise AssertionError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def check_close(actual, expected, name: str = "your result", rtol: float = 1e-4, atol: float | None = None) -> None:
    """Fail with a clear message unless ``actual`` equals ``expected`` up to ``rtol``/``atol``:
    ``|actual - expected| <= atol + rtol * |expected|`` at every position.

    By default ``atol`` is ``1e-5`` times the largest ``|expected|``: a floor that scales with the
    values compared, so that an answer never depends on their units or on the CPU that computes
    them (other SIMD kernels, other summation orders: other rounding, which a value that cancels to
    almost 0 shows on the scale of its terms). Where every expected value is 0 there is no scale to
    take, and the floor is ``1e-6``. Pass ``atol`` where the scale is known (pixels in [0, 1]), and
    ``rtol=0, atol=0`` for exact equality. The message gives the shapes, or the largest difference
    and where it is.
    """
    a = _as_tensor(actual, name).double()
    e = _as_tensor(expected, "the expected value").double()
    if a.shape != e.shape:
        raise AssertionError(f"{name} has shape {tuple(a.shape)}, expected {tuple(e.shape)}")
    if not torch.isfinite(a).all():
        raise AssertionError(f"{name} contains NaN or infinite values")
    if atol is None:
        scale = float(e.abs().max()) if e.numel() else 0.0
        atol = 1e-5 * scale if scale > 0 else 1e-6
    diff = (a - e).abs()
    bad = diff > atol + rtol * e.abs()
    if bad.any():
        i = int(torch.argmax(torch.where(bad, diff, torch.zeros_like(diff))))
        where = tuple(int(v) for v in np.unravel_index(i, tuple(a.shape))) if a.ndim else ()
        raise AssertionError(
            f"{name} differs from the expected values at {int(bad.sum())} of {a.numel()} positions; "
            f"the largest difference is {float(diff.max()):.3g} (at index {where}: got "
            f"{float(a.flatten()[i]):.6g}, expected {float(e.flatten()[i]):.6g})")


# --------------------------------------------------------------------------- side effects

def _hooks(model: nn.Module) -> int:
    n = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            n += len(getattr(m, attr, {}) or {})
    return n


def _digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and values (equal digests: ``torch.equal`` tensors)."""
    import hashlib

    t = t.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{t.dtype} {tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def state(args, kwargs) -> list:
    """What a call could change in its arguments, as plain data (lists, strings, numbers, bools).

    For each tensor argument: a digest of its values and its ``requires_grad``; for each model:
    every submodule's name, type, in-place flag and mode, the number of hooks, per parameter
    whether ``.grad`` is empty and ``requires_grad``, and a digest of every weight. Plain data,
    so that the state seen in the student's process can be sent back and judged elsewhere.
    """
    out = []
    for key, v in list(enumerate(args)) + list(kwargs.items()):
        if isinstance(v, torch.Tensor):
            out.append([key, "tensor", _digest(v), bool(v.requires_grad)])
        elif isinstance(v, nn.Module):
            out.append([key, "module", bool(v.training), _hooks(v),
                        [[p.grad is None, bool(p.requires_grad)] for p in v.parameters()],
                        [[k, _digest(t)] for k, t in v.state_dict().items()],
                        [[name, type(m).__name__, getattr(m, "inplace", None), bool(m.training)]
                         for name, m in v.named_modules()]])
    return out


def changes(before: list, after) -> list[str]:
    """What differs between two :func:`state` s, as sentences (empty list: nothing changed).

    ``before`` is trusted; ``after`` may come from elsewhere (the student's process) and is
    checked for form first: anything that is not a state of the same arguments is a change.
    """
    if not isinstance(after, list) or len(after) != len(before):
        return ["the state of the arguments after the call could not be read"]
    problems = []
    for b, a in zip(before, after):
        key = b[0]
        what = f"argument {key + 1}" if isinstance(key, int) else f"argument {key}="
        if not isinstance(a, list) or len(a) != len(b) or a[:2] != b[:2]:
            problems.append(f"{what}: its state after the call could not be read")
        elif b[1] == "tensor":
            if a[2] != b[2]:
                problems.append(f"{what} (a tensor) was modified in place")
            if a[3] != b[3]:
                problems.append(f"{what} (a tensor) had its requires_grad changed to {bool(a[3])}")
        else:
            _, _, training, hooks, params, weights, layers = b
            if a[2] != training:
                problems.append(f"{what} (the model) was left in {'training' if a[2] else 'eval'} mode")
            if a[3] != hooks:
                n = a[3] - hooks if isinstance(a[3], int) else "some"
                problems.append(f"{what} (the model) has {n} hook(s) left registered")
            same_length = isinstance(a[4], list) and len(a[4]) == len(params)
            if not same_length or any(x[0] != y[0] for x, y in zip(a[4], params)):
                problems.append(f"{what} (the model): the .grad of some parameters was filled")
            if not same_length or any(x[1] != y[1] for x, y in zip(a[4], params)):
                problems.append(f"{what} (the model): requires_grad of some parameters was changed")
            if a[6] != layers:
                problems.append(f"{what} (the model): its layers (their types, in-place flags or modes) were "
                                f"changed and not put back")
            if a[5] != weights:
                problems.append(f"{what} (the model): its weights were changed")
    return problems


def call_with_report(fn, args, kwargs):
    """``(fn(*args, **kwargs), problems)``: ``problems`` lists what the call changed in its arguments.

    The state before the call is taken here; when ``fn`` is a student's function being graded
    (it runs in another process), that process sends back the state after the call as data,
    and the judgement is made here, not there.
    """
    before = state(args, kwargs)
    remote = getattr(fn, "__grading_call__", None)
    if remote is not None:
        result, after = remote(args, kwargs, report=True)
    else:
        result = fn(*args, **kwargs)
        after = state(args, kwargs)
    return result, changes(before, after)


def check_no_side_effects(fn, *args, **kwargs):
    """Call ``fn(*args, **kwargs)``; fail if it changed any argument. Returns the result."""
    result, problems = call_with_report(fn, args, kwargs)
    if problems:
        name = getattr(fn, "__name__", "the function")
        raise AssertionError(f"{name} must leave its arguments as they were, but: " + "; ".join(problems))
    return result
