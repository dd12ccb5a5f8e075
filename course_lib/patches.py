"""Receptive fields and maximally activating patches: what makes a unit fire?

A unit of a convolutional layer sees only a window of the input image, its
**receptive field**. Walking the chain of conv/pool layers from the input, each
layer with kernel ``k``, stride ``s`` and padding ``p`` (effective kernel
``d*(k-1)+1`` with dilation ``d``) updates three numbers:

    size   r_out     = r_in + (k - 1) * j_in        (how many input pixels a unit sees)
    jump   j_out     = j_in * s                     (input pixels between neighbouring units)
    start  start_out = start_in - p * j_in          (left edge of unit 0's window, may be < 0)

starting from the input itself (``r = 1, j = 1, start = 0``). Unit ``(i, j)`` of the
layer then sees input rows ``start + i*jump ... start + i*jump + size - 1`` (and the
same for columns), clipped to the image: the part outside is padding.

**Maximally activating patches** (Zeiler & Fergus 2014; Girshick et al. 2014) show
what a channel responds to: run many images through the network, find the
positions where the channel fires most, and crop the input window of those units.
:func:`scan_activations` does the expensive part once for every channel of a layer
(cached on disk), so switching channel is instant.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .cache import weights_hash
from .inputs import check_channel, check_image, check_int, check_position, model_device
from .layers import architecture, eval_mode, get_layer, lecture_names
from .models import BlurMaxPool2d, Normalize

#: Layers that act on each position separately: they leave the receptive field unchanged.
POINTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
             nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.LocalResponseNorm, Normalize)


# --------------------------------------------------------------------------- receptive fields

@dataclass(frozen=True)
class ReceptiveField:
    """Where a layer's units look in the input (one number per axis: square kernels only).

    Unit ``i`` (along rows or columns) sees input pixels ``start + i*jump`` to
    ``start + i*jump + size - 1``; its centre is ``start + i*jump + (size - 1) / 2``.
    """

    size: int
    jump: int
    start: int

    def window(self, i: int) -> tuple[int, int]:
        """Unit ``i``'s input window ``[lo, hi)`` along one axis, not clipped (may leave the image)."""
        lo = self.start + i * self.jump
        return lo, lo + self.size

    def center(self, i: int) -> float:
        """The centre of unit ``i``'s window along one axis, in input pixels."""
        return self.start + i * self.jump + (self.size - 1) / 2

    def nearest_unit(self, y: float, x: float, map_size) -> tuple[int, int]:
        """The unit ``(i, j)`` of a ``map_size`` (``n`` or ``(h, w)``) map whose window is centred nearest to
        input pixel ``(y, x)``."""
        h, w = (map_size, map_size) if isinstance(map_size, int) else map_size
        i = round((y - self.center(0)) / self.jump)
        j = round((x - self.center(0)) / self.jump)
        return min(max(i, 0), h - 1), min(max(j, 0), w - 1)

    def box(self, i: int, j: int, input_size) -> tuple[int, int, int, int]:
        """The input box ``(top, left, bottom, right)`` (bottom/right exclusive) of unit ``(i, j)``,
        clipped to an image of ``input_size`` (``S`` or ``(H, W)``) pixels."""
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        top, bottom = self.window(i)
        left, right = self.window(j)
        return max(top, 0), max(left, 0), min(bottom, h), min(right, w)


def _square(value, what: str, name: str) -> int:
    """``value`` (an int or a pair) as one int; raise for non-square kernels, strides, paddings."""
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"layer {name!r} has a non-square {what} {tuple(value)}; "
                             f"receptive_field handles square kernels, strides and paddings only")
        value = value[0]
    return int(value)


def _geometry(name: str, m: nn.Module) -> list[tuple[int, int, int]]:
    """The ``(effective kernel, stride, padding)`` steps of a layer, in order: none for a pointwise
    layer, one for a conv or pool, and for a block its widest path: a ResNet block's main path (its
    window contains the shortcut's, a 1x1 conv or nothing), a SqueezeNet Fire module's squeeze and
    3x3 expand convs (its 1x1 branch sees a window inside that one), a Sequential's children in turn."""
    if isinstance(m, POINTWISE):
        return []
    if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
        raise ValueError(f"layer {name!r} pads with {m.padding_mode!r}: its units read pixels outside their "
                         f"window, so the window arithmetic only holds for zero padding")
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, BlurMaxPool2d)):
        k = _square(m.kernel_size, "kernel", name)
        d = _square(getattr(m, "dilation", 1), "dilation", name)
        k = d * (k - 1) + 1
        s = _square(m.stride if m.stride is not None else m.kernel_size, "stride", name)
        p = m.padding
        if p == "valid":
            p = 0
        elif p == "same":  # stride 1 only (PyTorch's rule): pads (k-1)//2 before, the rest after
            p = (k - 1) // 2
        return [(k, s, _square(p, "padding", name))]
    kind = type(m).__name__
    if isinstance(m, nn.Sequential):
        parts = list(m.named_children())
    elif kind in ("BasicBlock", "Bottleneck"):       # torchvision's residual blocks: out = F(x) + shortcut(x)
        parts = [(c, getattr(m, c)) for c in ("conv1", "conv2", "conv3") if hasattr(m, c)]
    elif kind == "Fire":                             # squeeze 1x1, then [expand 1x1 | expand 3x3]
        parts = [("squeeze", m.squeeze), ("expand3x3", m.expand3x3)]
    else:
        raise ValueError(
            f"layer {name!r} is a {kind}: receptive-field arithmetic knows conv, max/avg-pool, pointwise "
            f"layers (ReLU, BatchNorm, Dropout, ...), ResNet blocks and Fire modules only")
    return [g for c, part in parts for g in _geometry(f"{name}.{c}", part)]


def _feature_chain(model: nn.Module, layer: str) -> list[tuple[str, nn.Module]]:
    """The layers from the input (pixels) up to and including ``layer``, as ``(name, module)`` pairs.

    The model must be an ``nn.Sequential`` itself, or have one that its forward pass starts with
    (its family's ``chain``, :class:`course_lib.layers.Architecture`: ``features`` of the course
    model, VGG, AlexNet, SqueezeNet; a ResNet's own children up to its global pooling; for another
    model ``features``), and ``layer`` must be one of that sequence's children. A model's :class:`course_lib.models.Normalize` layer (its
    first, ``normalize``) comes first: the chain takes pixels, as the model does.
    """
    module = get_layer(model, layer)  # KeyError listing the valid names for an unknown layer
    norm = getattr(model, "normalize", None)
    norm = norm if isinstance(norm, Normalize) else None
    if norm is not None and module is norm:
        return [("normalize", norm)]
    path = lecture_names(model).get(layer, layer)
    family = architecture(model, None)
    home = "features" if family is None else family.chain
    if isinstance(model, nn.Sequential):
        seq, prefix = model, ""
    elif home:
        seq, prefix = getattr(model, home, None), f"{home}."
    else:   # the model's own children up to its head, which its forward runs in turn (ResNet)
        head = lecture_names(model)[family.head]
        seq = nn.Sequential(OrderedDict(takewhile(lambda child: child[0] != head, model.named_children())))
        prefix = ""
    child = path[len(prefix):] if path.startswith(prefix) else None
    if not isinstance(seq, nn.Sequential) or child not in seq._modules:
        if isinstance(seq, nn.Sequential) and layer in lecture_names(model):
            raise ValueError(
                f"layer {layer!r} comes after the convolutional part of {type(model).__name__} (after global "
                f"pooling or in the fully connected classifier): each of its units sees the whole image, "
                f"so it has no receptive field to compute. Pick a conv, ReLU or pool layer.")
        why = "the layer is not a direct child of its `features`" if isinstance(seq, nn.Sequential) \
            else "it has no nn.Sequential `features`"
        raise ValueError(
            f"layer {layer!r} is not in a sequential chain of layers from the input "
            f"({type(model).__name__}: {why}). Receptive fields are computed for the layers of one "
            f"nn.Sequential from the input (the course model, VGG, AlexNet, SqueezeNet's `features`) and "
            f"for a ResNet's stem and stages (conv1 ... layer4), not inside a block.")
    short = {path: name for name, path in lecture_names(model).items()}
    # the course model, VGG, AlexNet, SqueezeNet: `features` comes after the model's own normalize
    chain = [("normalize", norm)] if norm is not None and all(m is not norm for m in seq.children()) else []
    for c, m in seq.named_children():
        chain.append((short.get(prefix + c, prefix + c), m))
        if c == child:
            return chain
    raise AssertionError("unreachable: the child was found above")


def receptive_fields(model: nn.Module, layer: str) -> "OrderedDict[str, ReceptiveField]":
    """The receptive field of every layer from the input up to ``layer``, in order.

    Each layer updates ``(r, j, start)`` as in the module docstring; pointwise layers
    (ReLU, BatchNorm, ...) keep them; a ResNet block or a Fire module counts as its widest path.
    The model's ``normalize`` layer (pixels to the network's input, one pixel at a time) is
    left out unless it is ``layer`` itself. Raises ValueError for a layer that is not in a chain
    of layers from the input (see :func:`receptive_field`).
    """
    r, j, start = 1, 1, 0
    out: "OrderedDict[str, ReceptiveField]" = OrderedDict()
    chain = _feature_chain(model, layer)
    for n, (name, m) in enumerate(chain):
        for k, s, p in _geometry(name, m):
            r, j, start = r + (k - 1) * j, j * s, start - p * j
        if not isinstance(m, Normalize) or n == len(chain) - 1:
            out[name] = ReceptiveField(r, j, start)
    return out


def receptive_field(model: nn.Module, layer: str) -> ReceptiveField:
    """The receptive field of ``layer`` (a lecture name like ``"conv3_2"`` or a module path).

    Returns :class:`ReceptiveField` ``(size, jump, start)``: unit ``(i, j)`` sees the input
    box ``rf.box(i, j, input_size)``. Works for models whose convolutional part is
    one ``nn.Sequential`` (``model.features`` of the course model, VGG, AlexNet, SqueezeNet, or an
    ``nn.Sequential`` model) and for a ResNet's stem and stages (``conv1 ... layer4``); a residual
    block counts as its main path and a Fire module as its 3x3 branch, the widest windows. A layer
    after global pooling or in the classifier, or one inside a block, raises ValueError; an
    unknown name raises KeyError.
    """
    return receptive_fields(model, layer)[_chain_name(model, layer)]


def _chain_name(model: nn.Module, layer: str) -> str:
    """The name :func:`receptive_fields` uses for ``layer`` (its lecture name when it has one)."""
    path = lecture_names(model).get(layer, layer)
    short = {p: n for n, p in lecture_names(model).items()}
    return short.get(path, path)


def unit_gradient(model: nn.Module, x: torch.Tensor, *, layer: str, channel: int, position) -> torch.Tensor:
    """``d a / d x``: the gradient of one unit ``a = layer[channel, i, j]`` w.r.t. the input image,
    ``(i, j) = position``.

    ``x`` is one image of pixels in [0, 1], ``[1, 3, H, W]`` or ``[3, H, W]`` (finite, of the model's float
    type: :func:`course_lib.inputs.check_image`); ``channel`` and ``position = (i, j)`` are ints inside
    the layer's output. Returns ``[3, H, W]``. It is zero
    outside the unit's receptive field; its spread inside shows the *effective*
    receptive field, usually much smaller than the theoretical one (Luo et al. 2016).
    The model's parameters and their ``.grad`` are left untouched.
    """
    chain = _feature_chain(model, layer)
    x = check_image(x, model=model)
    with eval_mode(model), torch.enable_grad():
        x = x.detach().clone().to(model_device(model)).requires_grad_(True)
        out = x
        for _, m in chain:
            out = m(out)
        channel = check_channel(channel, out.shape[1], layer)
        i, j = check_position(position, tuple(out.shape[-2:]), layer)
        (grad,) = torch.autograd.grad(out[0, channel, i, j], x)
    return grad[0]


# --------------------------------------------------------------------------- scanning a data set

@dataclass
class ActivationScan:
    """Every channel's strongest response in every scanned image, for one layer.

    ``values[n, c]`` is the largest activation of channel ``c`` over all positions in
    image ``n`` (the data set's image ``indices[n]``), ``positions[n, c]`` where it is
    (flat index ``row * W + col`` in the layer's ``map_size = (H, W)`` map).
    """

    layer: str
    values: torch.Tensor
    positions: torch.Tensor
    map_size: tuple[int, int]
    indices: list[int]
    input_size: int
    receptive_field: ReceptiveField

    @property
    def channels(self) -> int:
        return self.values.shape[1]

    def top(self, channel: int, k: int = 9) -> list[tuple[int, float, int, int]]:
        """The ``k`` strongest responses of ``channel``: ``[(dataset index, value, row, col), ...]``.

        Each image gives at most one response (its best position), so the patches
        are not near-copies of the same object.
        """
        channel = check_channel(channel, self.channels, self.layer)
        k = check_int(k, "k", low=1)
        vals, rows = self.values[:, channel].topk(min(k, len(self.indices)))
        out = []
        for v, n in zip(vals.tolist(), rows.tolist()):
            row, col = divmod(int(self.positions[n, channel]), self.map_size[1])
            out.append((self.indices[n], v, row, col))
        return out


def _image_set_key(dataset, indices) -> str | None:
    """A key naming the scanned images (file names and labels), or None if the data set cannot say."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return None
    h = hashlib.sha256(f"{type(dataset).__name__}:{getattr(dataset, 'split', '')};".encode())
    for i in indices:
        path, label = samples[i]
        h.update(f"{Path(path).parent.name}/{Path(path).name}:{label};".encode())
    return h.hexdigest()


def _cache_file(model, layer: str, key_parts: str) -> Path:
    from .data import data_dir

    key = hashlib.sha256(f"{key_parts}|{layer}".encode()).hexdigest()[:24]
    safe = "".join(ch if ch.isalnum() or ch in "_-" else "-" for ch in layer)
    return data_dir() / "cache" / f"scan_{type(model).__name__}_{safe}_{key}.pt"


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@torch.no_grad()
def scan_activations(model: nn.Module, dataset, layers, indices=None, batch_size: int = 32,
                     cache: bool = True, progress: bool = True) -> dict[str, ActivationScan]:
    """Run the images ``dataset[i]`` (``i`` in ``indices``, default all) through the model once and keep,
    for every channel ``c`` of every layer in ``layers`` and every image ``n``,

        values[n, c]    = max over positions (y, x) of a_c(y, x)
        positions[n, c] = argmax over positions

    Returns ``{layer: ActivationScan}``. Images are preprocessed for the model and
    batched; only the convolutional chain up to the deepest requested layer runs. With
    ``cache=True`` each layer's scan is saved under ``data_dir()/cache``, keyed by the
    model's weights, the layer and the image set, and reused the next time.
    """
    from tqdm.auto import tqdm

    from .imaging import preprocess

    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError("give at least one layer to scan")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    if not idx:
        raise ValueError("no images to scan")
    names = [_chain_name(model, layer) for layer in layers]
    rfs = {n: receptive_field(model, layer) for n, layer in zip(names, layers)}  # errors before any work
    size = int(getattr(model, "input_size", 224))

    files, scans = {}, {}
    image_key = _image_set_key(dataset, idx) if cache else None
    if image_key is not None:
        parts = f"{weights_hash(model)}|{size}|{getattr(model, 'mean', '')}|{getattr(model, 'std', '')}|{image_key}"
        for n in names:
            files[n] = _cache_file(model, n, parts)
            if files[n].exists():
                d = torch.load(files[n], map_location="cpu", weights_only=True)
                scans[n] = ActivationScan(n, d["values"], d["positions"], tuple(d["map_size"]), d["indices"],
                                          d["input_size"], rfs[n])
    todo = [n for n in names if n not in scans]
    if todo:
        chain = max((_feature_chain(model, n) for n in todo), key=len)  # up to the deepest layer
        device = model_device(model)
        vals = {n: [] for n in todo}
        poss = {n: [] for n in todo}
        shapes = {}
        with eval_mode(model):
            for s in tqdm(range(0, len(idx), batch_size), desc=f"scan {', '.join(todo)}", unit="batch",
                          disable=not progress):
                x = torch.cat([preprocess(dataset[i][0], model) for i in idx[s:s + batch_size]]).to(device)
                for name, m in chain:
                    x = m(x)
                    if name in vals:  # reduce now: an in-place ReLU next would overwrite x
                        v, p = x.flatten(2).max(dim=2)
                        vals[name].append(v.cpu())
                        poss[name].append(p.cpu().to(torch.int32))
                        shapes[name] = tuple(x.shape[-2:])
        for n in todo:
            scans[n] = ActivationScan(n, torch.cat(vals[n]), torch.cat(poss[n]), shapes[n], idx, size, rfs[n])
            if n in files:
                _save_atomic({"values": scans[n].values, "positions": scans[n].positions,
                              "map_size": list(shapes[n]), "indices": idx, "input_size": size}, files[n])
    return {layer: scans[n] for layer, n in zip(layers, names)}


# --------------------------------------------------------------------------- patches

def crop_patch(image: np.ndarray, rf: ReceptiveField, i: int, j: int, pad_value: float = 0.5) -> np.ndarray:
    """The input window of unit ``(i, j)`` cut out of ``image`` (``H x W x 3``), as a ``size x size x 3`` array.

    Where the window leaves the image (border units) the patch is filled with
    ``pad_value`` (grey), so the unit's centre is always the patch's centre.
    """
    h, w = image.shape[:2]
    top, left, bottom, right = rf.box(i, j, (h, w))
    out = np.full((rf.size, rf.size) + image.shape[2:], pad_value, dtype=np.float64)
    wy, wx = rf.window(i)[0], rf.window(j)[0]
    if bottom > top and right > left:
        out[top - wy:bottom - wy, left - wx:right - wx] = image[top:bottom, left:right]
    return out


def top_patches(scan: ActivationScan, dataset, model: nn.Module, channel: int, k: int = 9,
                pad_value: float = 0.5) -> list[np.ndarray]:
    """The input windows of the ``k`` units of ``channel`` that fire most over the scanned images.

    Each patch is ``r x r x 3`` (``r`` = receptive-field size), cropped from the image
    exactly as the model saw it (resized and centre-cropped), grey where the window
    leaves the image.
    """
    from .imaging import preprocess, to_array

    out = []
    for index, _, row, col in scan.top(channel, k):
        image = to_array(preprocess(dataset[index][0], model, size=scan.input_size))
        out.append(crop_patch(image, scan.receptive_field, row, col, pad_value))
    return out


def show_top_patches(scan: ActivationScan, dataset, model: nn.Module, channels, k: int = 9, ncols: int = 4,
                     size: float = 2.6):
    """Draw the ``k`` top patches of each channel in ``channels`` as one grid per channel; return the figure."""
    import matplotlib.pyplot as plt

    from .figures import show_image
    from .imaging import make_grid

    channels = [channels] if isinstance(channels, (int, np.integer)) else list(channels)
    if not channels:
        raise ValueError("give at least one channel")
    ncols = min(ncols, len(channels))
    nrows = math.ceil(len(channels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size), squeeze=False)
    for ax in axes.flat[len(channels):]:
        ax.set_axis_off()
    for c, ax in zip(channels, axes.flat):
        grid = make_grid(top_patches(scan, dataset, model, c, k), nrow=math.ceil(math.sqrt(k)),
                         padding=max(1, scan.receptive_field.size // 16))
        show_image(grid, title=f"{scan.layer} ch {c}", ax=ax)
    fig.suptitle(f"{scan.layer}: top {k} patches per channel (receptive field {scan.receptive_field.size} px)")
    fig.tight_layout()
    return fig


def draw_receptive_fields(image, rf: ReceptiveField, units, ax=None, title=None, color="yellow"):
    """Draw ``image`` (``H x W x 3``) with the clipped input box of each unit ``(i, j)`` in ``units``; return the figure."""
    import matplotlib.patches
    import matplotlib.pyplot as plt

    from .figures import show_image

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    show_image(image, title=title, ax=ax)
    h, w = np.asarray(image).shape[:2]
    for i, j in units:
        top, left, bottom, right = rf.box(i, j, (h, w))
        ax.add_patch(matplotlib.patches.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                                  fill=False, edgecolor=color, linewidth=2))
        ax.plot([rf.center(j)], [rf.center(i)], "+", color=color, markersize=10)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    return ax.figure
