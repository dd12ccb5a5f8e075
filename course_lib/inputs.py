"""The checks every module runs on what it is given: images, class targets, numbers.

One kind of image travels through the course: a ``torch`` tensor of **pixels** in ``[0, 1]``,
``[N, 3, H, W]`` (or ``[3, H, W]`` for one image), what :func:`course_lib.imaging.preprocess`
returns, what every method takes and what the optimisations return. Every model normalises its
own input (its first layer, :class:`course_lib.models.Normalize`).

:func:`check_image` (one image, ``[1, 3, H, W]``; ``batch=True`` for ``[N, 3, H, W]``) and
:func:`check_pixels` (the same check, a batch by default) take ``[3, H, W]`` as one image and
return the 4-D tensor, contiguous (an image that is not, e.g. ``array.permute(2, 0, 1)`` or
channels-last, is copied, so that every memory layout gives exactly the same result).
They refuse, with a message that says what to do instead: anything that is not a tensor
(numpy arrays, PIL images, lists), the wrong number of dimensions or colour channels
(greyscale, RGBA, channels last), a batch where one image is wanted, an empty image,
integer pixels (``uint8``), NaN or infinite values, values outside ``[0, 1]`` (an image
normalised by hand, or pixels in 0..255), and, when the ``model`` is given, a floating-point
type other than the model's (a ``float64`` image for a ``float32`` model).

Beside images: :func:`check_perturbation` (a change added to pixel images, in pixel units).

Indices and numbers: :func:`check_target` (a class index: an ``int``, numpy or torch
integer in ``0 .. classes - 1``; floats, bools and strings are refused, never converted),
:func:`check_index` (any index, e.g. a channel), :func:`check_int` and
:func:`check_number` (parameters such as ``k``, ``steps``, ``lr``, ``style_weight``: give the
range with ``low=``/``high=``; numpy scalars accepted, bools and NaN refused) and
:func:`check_size` (an image size: ``S`` or ``(H, W)``).

Errors: ``TypeError`` for a value of the wrong kind, ``ValueError`` for one of the right
kind whose value or shape is wrong.
"""
from __future__ import annotations

import math
import numbers
import operator

import numpy as np
import torch

ONE_IMAGE = "[1, 3, H, W]"
BATCH = "[N, 3, H, W]"

_MAKE = "course_lib.imaging.preprocess(image, model) makes one from a PIL image or an H x W x 3 array"
#: Rounding allowed outside [0, 1] (a resize or a sum of pixel values may land a few ulps outside).
PIXEL_SLACK = 1e-5


# --------------------------------------------------------------------------- images


def model_dtype(model) -> torch.dtype | None:
    """The floating-point type of ``model``'s weights (None for a model without any)."""
    if model is None:
        return None
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def model_device(model) -> torch.device | None:
    """The device of ``model``'s weights (None for no model or a model without any:
    ``x.to(model_device(model))`` then leaves ``x`` where it is)."""
    if model is None:
        return None
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return None


def check_model_dtype(model, x: torch.Tensor, name: str = "image") -> None:
    """Raise a ``TypeError`` unless the floating tensor ``x`` has the type of ``model``'s weights
    (instead of torch's "Input type (double) and bias type (float) should be the same")."""
    want = model_dtype(model)
    if want is not None and x.dtype != want:
        how = "x.float()" if want == torch.float32 else f"x.to({want})"
        raise TypeError(f"{name} is {x.dtype} but the model's weights are {want}: convert the image with {how}")


def check_image(x, name: str = "image", *, batch: bool = False, model=None) -> torch.Tensor:
    """``x``, a pixel image in ``[0, 1]``, as ``[1, 3, H, W]`` (``batch=True``: ``[N, 3, H, W]``), contiguous.

    Accepted: a finite floating-point tensor ``[1, 3, H, W]`` or ``[3, H, W]`` (with
    ``batch=True`` also ``[N, 3, H, W]``, N >= 1) with every value in ``[0, 1]``, of ``model``'s
    floating type when ``model`` is given. Anything else raises a ``TypeError`` or ``ValueError``
    saying what to do (see the module docstring).
    """
    want = (BATCH if batch else ONE_IMAGE) + " of pixels in [0, 1]"
    if not isinstance(x, torch.Tensor):
        if isinstance(x, np.ndarray):
            got = f"a numpy array of shape {x.shape}"
        else:
            got = "a PIL image" if type(x).__module__.startswith("PIL") else type(x).__name__
        raise TypeError(f"{name} must be a tensor {want}, got {got}; {_MAKE}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape {want} (or [3, H, W] for one image), got shape {list(x.shape)}")
    if x.shape[1] != 3:
        hint = "a greyscale or RGBA image? convert it to RGB first (PIL: image.convert(\"RGB\"))"
        if x.shape[-1] == 3:
            hint = "channels last? put the channels first with x.permute(0, 3, 1, 2)"
        raise ValueError(f"{name} must have 3 channels (RGB), shape {want}; got {x.shape[1]} "
                         f"(shape {list(x.shape)}): {hint}")
    if not batch and x.shape[0] != 1:
        raise ValueError(f"{name} must be a single image {ONE_IMAGE}, got a batch of {x.shape[0]} "
                         f"(shape {list(x.shape)}); pass the images one at a time, e.g. x[i:i + 1]")
    if not x.is_floating_point():
        fix = "divide uint8 pixels by 255: x.float() / 255"
        raise TypeError(f"{name} must be a floating-point (float) tensor, got dtype {x.dtype}: {fix}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {list(x.shape)}): it needs at least one image of at least "
                         f"one pixel; check the crop or resize that made it")
    bad = int((~torch.isfinite(x.detach())).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s): every pixel must be a finite number; "
                         f"check how the image was made (a division by zero, a diverged optimisation, torch.empty)")
    check_model_dtype(model, x, name)
    check_pixel_range(x, name)
    return x.contiguous()


def check_pixels(x, name: str = "image", *, model=None, batch: bool = True) -> torch.Tensor:
    """:func:`check_image` with a batch ``[N, 3, H, W]`` accepted by default (``batch=False``: one
    image, ``[1, 3, H, W]``; a batch is refused with a message saying to pass the images one at a time)."""
    return check_image(x, name, batch=batch, model=model)


def check_pixel_range(x: torch.Tensor, name: str = "image") -> None:
    """Raise a ``ValueError`` unless ``x`` (a floating tensor) has pixels and every one is in ``[0, 1]``."""
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {list(x.shape)}): it needs at least one pixel")
    if not bool(torch.isfinite(x.detach()).all()):
        raise ValueError(f"{name} contains NaN or infinite values: every pixel must be a number in [0, 1]")
    lo, hi = float(x.detach().min()), float(x.detach().max())
    if lo < -PIXEL_SLACK or hi > 1 + PIXEL_SLACK:
        hint = ("pixels in 0..255? divide them by 255" if hi > 1 and lo >= 0
                else "normalised by hand, (x - mean) / std? pass the pixels instead: every course model "
                     "normalises its own input (its first layer, 'normalize')")
        raise ValueError(f"{name} must hold pixels in [0, 1], got values in [{lo:.3g}, {hi:.3g}] ({hint})")


def check_perturbation(v, images: torch.Tensor, name: str = "v") -> torch.Tensor:
    """``v``, a change added to the pixel images ``images`` ``[N, 3, H, W]``, as ``[1, 3, H, W]``
    (one for every image) or ``[N, 3, H, W]`` (one each); ``[3, H, W]`` is one. Its values are in
    pixel units, so within ``[-1, 1]``: anything larger (a perturbation in 0..255 units) is refused.
    Returned as 4-D, in the images' floating type and on their device."""
    if not isinstance(v, torch.Tensor) or not v.is_floating_point():
        got = f"dtype {v.dtype}" if isinstance(v, torch.Tensor) else type(v).__name__
        raise TypeError(f"{name} must be a floating-point tensor [1, 3, H, W] (a perturbation in pixel units), "
                        f"got {got}")
    v = v.unsqueeze(0) if v.ndim == 3 else v
    if v.ndim != 4 or v.shape[1:] != images.shape[1:] or len(v) not in (1, len(images)):
        raise ValueError(f"{name} must have shape [1, 3, H, W] or [N, 3, H, W] for images of shape "
                         f"{list(images.shape)}, got {list(v.shape)}")
    if not bool(torch.isfinite(v.detach()).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    big = float(v.detach().abs().max())
    if big > 1:
        raise ValueError(f"{name} must be a perturbation in pixel units, with values in [-1, 1], got values up to "
                         f"{big:.3g}: in 0..255 units? divide it by 255")
    return v.to(images)


# --------------------------------------------------------------------------- indices and numbers


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool)


def check_int(value, name: str, *, low: int | None = None, high: int | None = None, what: str = "an int") -> int:
    """``value`` as a Python ``int``: ints, numpy and (one-element) torch integers; bools and
    floats (even ``2.0``) raise a ``TypeError``, values outside ``[low, high]`` a ``ValueError``.
    ``what`` describes the wanted value in the type error."""
    if _is_bool(value):
        raise TypeError(f"{name} must be {what}, not a bool ({value!r})")
    try:
        i = operator.index(value)
    except TypeError:
        hint = f"; use int({value!r}) if you mean {int(value)}" if isinstance(value, float) and value.is_integer() else ""
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}{hint}") from None
    if (low is not None and i < low) or (high is not None and i > high):
        if low is not None and high is not None:
            raise ValueError(f"{name} must be an int between {low} and {high}, got {i}")
        raise ValueError(f"{name} must be an int {'>= ' + str(low) if low is not None else '<= ' + str(high)}, "
                         f"got {i}")
    return i


def check_index(value, n: int, name: str, context: str, what: str = "indices", kind: str = "an int") -> int:
    """``value`` as an index into ``n`` things (``0 .. n - 1``), else a clear error.

    ``context`` says what has the ``n`` things (``"the model has 10 classes"``), ``what``
    names the valid indices and ``kind`` the wanted value in the messages. Negative indices
    are refused: they do not count from the end here.
    """
    i = check_int(value, name, what=kind)
    if not 0 <= i < n:
        neg = "; negative indices do not count from the end here" if i < 0 else ""
        raise ValueError(f"{name} {i} is out of range: {context} ({what} 0..{n - 1}){neg}")
    return i


def check_channel(channel, n: int, layer: str) -> int:
    """``channel`` as an index into the ``n`` channels of ``layer`` (:func:`check_index`)."""
    return check_index(channel, n, "channel", f"layer {layer!r} has {n} channels", "channels")


def check_position(position, spatial: tuple, layer: str) -> tuple[int, ...]:
    """A unit's ``(row, col)`` inside ``layer``'s output of size ``spatial`` (``(h, w)``), as a tuple of ints."""
    try:
        where = tuple(check_int(p, "position") for p in position)
    except TypeError:
        raise TypeError(f"position must be a (row, col) tuple of ints, got {position!r}") from None
    if len(where) != len(spatial) or not all(0 <= p < n for p, n in zip(where, spatial)):
        raise ValueError(f"position {position!r} is outside layer {layer!r}'s "
                         f"{' x '.join(map(str, spatial)) or 'non-spatial'} output")
    return where


def check_target(target, num_classes: int | None, *, name: str = "target", allow_none: bool = True) -> int | None:
    """A class index: ``target`` as an ``int`` in ``0 .. num_classes - 1`` (``None`` stays ``None``
    when ``allow_none``: "the predicted class").

    Accepted: ``int``, numpy integers, one-element integer tensors. Refused with a ``TypeError``:
    floats (``2.7``, also ``2.0``), bools, strings (look a class name up with
    ``model.class_names.index(name)``); with a ``ValueError``: indices outside the model's classes
    (negative ones included). ``num_classes=None`` checks the type only.
    """
    if target is None:
        if allow_none:
            return None
        raise TypeError(f"{name} is required: give a class index (an int)")
    if isinstance(target, str):
        raise TypeError(f"{name} must be a class index (an int), got the string {target!r}; find a class "
                        f"name's index with model.class_names.index(name). A layer is passed by keyword, "
                        f"after the class: f(model, x, target, layer={target!r})")
    kind = "a class index (an int)"
    if num_classes is None:
        return check_int(target, name, what=kind)
    return check_index(target, num_classes, name, f"the model has {num_classes} classes", "class indices", kind)


def check_targets(target, num_classes: int, *, count: int | None = None, name: str = "target") -> list[int]:
    """Class indices, one per image: ``target`` is one index (for every image) or a list, tuple,
    array or tensor of them; each is checked by :func:`check_target`. With ``count`` (the number
    of images) one index is repeated ``count`` times, and any other length than 1 or ``count``
    raises a ``ValueError``."""
    if isinstance(target, torch.Tensor) and target.ndim > 0:
        targets = target.flatten().tolist()
    elif isinstance(target, (list, tuple, np.ndarray)):
        targets = list(target)
    else:
        targets = [target]
    targets = [check_target(t, num_classes, name=name, allow_none=False) for t in targets]
    if not targets:
        raise ValueError(f"{name}: no class indices given")
    if count is not None and len(targets) == 1:
        targets = targets * count
    if count is not None and len(targets) != count:
        raise ValueError(f"got {len(targets)} targets for {count} images ({name}: give one class index, "
                         f"or one per image)")
    return targets


def check_number(value, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite Python ``float``: ints, floats, numpy scalars and one-element torch
    tensors; bools raise a ``TypeError``, NaN, infinities and values outside ``[low, high]``
    (``(low, high]`` with ``low_open``) a ``ValueError`` (``hint`` is added to range errors)."""
    if _is_bool(value):
        raise TypeError(f"{name} must be a number, not a bool ({value!r})")
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v}")
    below = low is not None and (v <= low if low_open else v < low)
    if below or (high is not None and v > high):
        parts = ([f"{'>' if low_open else '>='} {low:g}"] if low is not None else []) + \
                ([f"<= {high:g}"] if high is not None else [])
        raise ValueError(f"{name} must be {' and '.join(parts)}, got {v:g}" + (f" ({hint})" if hint else ""))
    return v


def check_size(size, name: str = "size") -> tuple[int, int]:
    """An image size as ``(H, W)``: one int ``S`` (a square ``S x S``) or a pair ``(H, W)``, each an
    int >= 1 (:func:`check_int`)."""
    what = "an int S or a pair (H, W) of ints"
    if isinstance(size, (tuple, list, torch.Size)) and len(size) == 2:
        return tuple(check_int(s, name, low=1, what=what) for s in size)
    s = check_int(size, name, low=1, what=what)
    return s, s


__all__ = ["check_image", "check_pixels", "check_pixel_range", "check_model_dtype", "model_dtype", "model_device",
           "check_perturbation", "check_int", "check_index", "check_channel", "check_target", "check_targets",
           "check_number", "check_size"]
