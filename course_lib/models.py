"""Models used in the course.

* ``load_model("course")`` -- the course's own small VGG-style CNN, trained from
  scratch on Imagenette (10 ImageNet classes) by ``python -m course_lib.train``.
  Its weights ship in ``data/course_model.pt``.
* ``load_model("vgg16" | "vgg19" | "resnet18" | "squeezenet1_1" | "alexnet")`` --
  torchvision's ImageNet models, through torchvision's own weights API
  (downloaded on first use and cached under ``$TORCH_HOME``).

Every model comes back in eval mode with frozen parameters and carries what the
course needs as attributes:

    model.class_names   list of class names (index -> name)
    model.input_size    side of the square input the model was trained at
    model.mean, .std    the per-channel statistics its first layer normalises with
    model.layer_names   lecture names ("normalize", "conv1_1", "relu5_3", "pool4", "fc", ...)

Every model takes **pixels**: ``[N, 3, H, W]`` in ``[0, 1]``. Its first module, ``normalize``
(a :class:`Normalize`, visible in ``print(model)``), computes ``(x - mean) / std`` per colour
channel, so gradients, baselines and budgets are all per pixel. Bring your own network with
``with_normalization(net, mean, std)`` and ``prepare_model``.

Finding and looking inside a model's layers (lecture names, hooks, the table of model families) is
:mod:`course_lib.layers`'s job; running a model on images is :mod:`course_lib.predict`'s.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .layers import lecture_names
from .records import load_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The course model's architecture: one tuple per block, (out_channels of each
#: conv in the block). Block 1 is a single large strided conv (big RGB filters
#: worth looking at, as in AlexNet); the other convs are 3x3, padding 1.
COURSE_BLOCKS = ((64,), (128,), (192, 192), (384, 384))
#: The first convolution, (kernel, stride, padding): 5x5 at stride 2. (A kernel that is a
#: multiple of its stride, e.g. 8x8/2, covers every input pixel equally often and leaves no
#: checkerboard imprint on input gradients; ``python -m course_lib.train --conv1 8 2 3`` trains one.)
COURSE_CONV1 = (5, 2, 2)
#: How blocks end: "max" (plain 2x2 max-pooling, stride 2) or "blur" (max over 2x2 at stride 1,
#: then a blur that downsamples by 2; Zhang 2019: :class:`BlurMaxPool2d`).
COURSE_POOL = "max"
COURSE_INPUT_SIZE = 128

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
COURSE_WEIGHTS = DATA_DIR / "course_model.pt"
COURSE_RECORD = DATA_DIR / "course_model.json"
#: What the course model's JSON record must hold (besides its weights' sha256) for :func:`load_course_model`.
COURSE_RECORD_KEYS = ("classes", "blocks", "input_size", "mean", "std")


class BlurMaxPool2d(nn.Module):
    """Anti-aliased max-pooling, "MaxBlurPool" (Zhang 2019, *Making CNNs shift-invariant again*).

    Plain 2x2/2 max-pooling keeps one pixel in four: it aliases (a one-pixel shift of the
    input changes the output a lot) and routes gradients to a fixed grid of winners. Here
    the max is taken densely and the subsampling happens after a low-pass filter:

        y = subsample_2( B * maxpool_{2x2, stride 1}(x) ),   B = [1 2 1]^T [1 2 1] / 16

    (B applied to each channel, zero padding 1). As one window it is a 4x4 kernel,
    stride 2, padding 1: those are ``kernel_size, stride, padding`` (used for receptive fields).
    """

    kernel_size, stride, padding = 4, 2, 1

    def __init__(self):
        super().__init__()
        b = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("blur", (b[:, None] * b[None, :] / 16).view(1, 1, 3, 3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(x, kernel_size=2, stride=1)
        weight = self.blur.to(x.dtype).expand(x.shape[1], 1, 3, 3)
        return nn.functional.conv2d(x, weight, stride=2, padding=1, groups=x.shape[1])


class Normalize(nn.Module):
    """The first layer of every course model: pixels ``x`` in [0, 1] to the network's input,

        x_norm[c] = (x[c] - mean[c]) / std[c]      for each colour channel c.

    ``mean`` and ``std`` are buffers (they follow ``.to(device)`` and ``.double()``), not
    parameters, and are not saved in ``state_dict`` (the weights files stay as they were)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        for name, v in (("mean", mean), ("std", std)):
            v = tuple(float(t) for t in v)
            if len(v) != 3:
                raise ValueError(f"{name} must have 3 values (one per RGB channel), got {len(v)}: {v}")
            self.register_buffer(name, torch.tensor(v).view(1, 3, 1, 1), persistent=False)
        if (self.std <= 0).any():
            raise ValueError(f"std must be positive, got {tuple(self.std.flatten().tolist())}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        fmt = lambda t: "(" + ", ".join(f"{v:.3f}" for v in t.flatten().tolist()) + ")"
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"


def normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)``, the per-channel statistics of ``model``'s :class:`Normalize` layer (for a model
    without one: its ``mean``/``std`` attributes, else ImageNet's)."""
    norm = getattr(model, "normalize", None)
    if isinstance(norm, Normalize):
        return tuple(norm.mean.flatten().tolist()), tuple(norm.std.flatten().tolist())
    return (tuple(float(v) for v in getattr(model, "mean", IMAGENET_MEAN)),
            tuple(float(v) for v in getattr(model, "std", IMAGENET_STD)))


def mean_colour(model: nn.Module) -> tuple[float, ...]:
    """The pixel colour that ``model``'s first layer maps to zero: the mean colour of its training
    images (ImageNet's for a model without a :class:`Normalize` layer). The neutral fill of
    occlusion, deletion curves and integrated gradients' baseline."""
    return normalization(model)[0]


def _normalized_forward(base: type):
    def forward(self, x):
        return base.forward(self, self.normalize(x))
    return forward


#: One pixel-taking subclass per class :func:`with_normalization` was applied to.
_PIXEL_CLASSES: dict = {}


def _new_pixel_model(base: type):
    """An empty instance of ``base``'s pixel-taking subclass (unpickling fills in its state)."""
    cls = _pixel_class(base)
    return cls.__new__(cls)


def _reduce_pixel_model(self, protocol):
    """Pickle (and deepcopy) a model made by :func:`with_normalization`: the subclass is made afresh from its
    base class on loading (it is not importable by name: it has its base's name)."""
    rv = object.__reduce_ex__(self, max(int(protocol), 2))      # (copyreg.__newobj__, (cls,), state, ...)
    return (_new_pixel_model, (type(self)._pixel_base,)) + tuple(rv[2:])


def _pixel_class(base: type) -> type:
    """``base`` with a ``forward`` that runs ``self.normalize`` first; same name, module and docstring."""
    cls = _PIXEL_CLASSES.get(base)
    if cls is None:
        cls = type(base.__name__, (base,), {"forward": _normalized_forward(base), "_pixel_base": base,
                                            "__reduce_ex__": _reduce_pixel_model, "__module__": base.__module__,
                                            "__qualname__": base.__qualname__, "__doc__": base.__doc__})
        _PIXEL_CLASSES[base] = cls
    return cls


def with_normalization(model: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> nn.Module:
    """``model`` made to take pixels in [0, 1]: a :class:`Normalize` layer named ``normalize`` runs
    first, ``model(x) = old_model((x - mean) / std)``. For a network trained on normalised images
    (torchvision's, or your own). Changes ``model`` in place (its class becomes a subclass of the
    same name whose ``forward`` normalises first; every other module keeps its name and path) and
    returns it. An ``nn.Sequential`` keeps its class: its ``forward`` runs its modules in order, so
    ``normalize`` simply becomes its first module (``net[0]``; the others keep their names ``"0"``,
    ``"1"``, ... as paths, their integer indices move up by one). A model that already has a
    ``normalize`` layer is refused."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if hasattr(model, "normalize"):
        raise ValueError(f"{type(model).__name__} already has a 'normalize' attribute: it takes pixels already")
    base = type(model)
    norm = Normalize(mean, std)
    first = next(iter(model.parameters()), None)
    if first is not None:
        norm.to(device=first.device, dtype=first.dtype)
    if not isinstance(model, nn.Sequential):    # a Sequential runs every module in _modules: normalize too
        model.__class__ = _pixel_class(base)
    model._modules = OrderedDict([("normalize", norm), *model._modules.items()])   # shown first
    return model


class CourseNet(nn.Module):
    """A small VGG-style CNN: normalisation, conv/ReLU/pool blocks, global average pooling, one linear layer.

    It takes pixels in [0, 1]; its first module ``normalize`` (:class:`Normalize`) computes
    ``(x - mean) / std`` with the training set's statistics (ImageNet's). Shapes for a 128x128 input (the model's ``input_size``)::

        conv1_1  5x5/2, 3->64      64x64     pool1 -> 32x32
        conv2_1  3x3,  64->128     32x32     pool2 -> 16x16
        conv3_1,2 3x3, ->192       16x16     pool3 ->  8x8
        conv4_1,2 3x3, ->384        8x8      (last conv: 8x8 maps for CAM)
        gap: mean over the 8x8 positions -> 384 numbers
        fc:  384 -> 10 class scores

    ``conv1 = (kernel, stride, padding)`` of the first conv; ``pool`` is ``"blur"``
    (:class:`BlurMaxPool2d`) or ``"max"`` (plain ``MaxPool2d(2, 2)``).
    ``batch_norm=True`` adds a BatchNorm after every conv (used only while
    training; :func:`fold_batch_norm` removes it again for the shipped model).
    """

    def __init__(self, num_classes: int = 10, blocks=COURSE_BLOCKS, batch_norm: bool = False,
                 conv1=COURSE_CONV1, pool: str = COURSE_POOL, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__()
        if pool not in ("blur", "max"):
            raise ValueError(f"pool must be 'blur' or 'max', not {pool!r}")
        self.normalize = Normalize(mean, std)
        self.conv1_spec, self.pool_kind = tuple(int(v) for v in conv1), pool
        k1, s1, p1 = self.conv1_spec
        layers: "OrderedDict[str, nn.Module]" = OrderedDict()
        in_ch = 3
        for b, widths in enumerate(blocks, start=1):
            for i, out_ch in enumerate(widths, start=1):
                if b == 1 and i == 1:
                    conv = nn.Conv2d(in_ch, out_ch, kernel_size=k1, stride=s1, padding=p1, bias=not batch_norm)
                else:
                    conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=not batch_norm)
                layers[f"conv{b}_{i}"] = conv
                if batch_norm:
                    layers[f"bn{b}_{i}"] = nn.BatchNorm2d(out_ch)
                layers[f"relu{b}_{i}"] = nn.ReLU(inplace=True)
                in_ch = out_ch
            if b < len(blocks):
                layers[f"pool{b}"] = BlurMaxPool2d() if pool == "blur" else nn.MaxPool2d(kernel_size=2, stride=2)
        self.features = nn.Sequential(layers)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.gap(self.features(self.normalize(x))), 1))


@torch.no_grad()
def fold_batch_norm(model: CourseNet) -> CourseNet:
    """Return a plain conv/ReLU/pool copy of ``model`` with every BatchNorm folded into its conv.

    In eval mode BN computes y = gamma * (z - mu) / sqrt(var + eps) + beta with
    z = W * x + b, which is again a convolution:

        W' = W * s,   b' = (b - mu) * s + beta,   s = gamma / sqrt(var + eps)
    """
    blocks = []
    current, b_prev = [], 1
    for name, m in model.features.named_children():
        if name.startswith("conv"):
            b = int(name[4:].split("_")[0])
            if b != b_prev:
                blocks.append(tuple(current))
                current, b_prev = [], b
            current.append(m.out_channels)
    blocks.append(tuple(current))
    plain = CourseNet(num_classes=model.fc.out_features, blocks=tuple(blocks), batch_norm=False,
                      conv1=model.conv1_spec, pool=model.pool_kind,
                      mean=model.normalize.mean.flatten().tolist(), std=model.normalize.std.flatten().tolist())
    src = dict(model.features.named_children())
    for name, conv in plain.features.named_children():
        if not name.startswith("conv"):
            continue
        c = src[name]
        bn = src.get("bn" + name[4:])
        w = c.weight.detach().clone()
        bias = c.bias.detach().clone() if c.bias is not None else torch.zeros(w.shape[0])
        if bn is not None:
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w = w * s[:, None, None, None]
            bias = (bias - bn.running_mean) * s + bn.bias
        conv.weight.copy_(w)
        conv.bias.copy_(bias)
    plain.fc.load_state_dict(model.fc.state_dict())
    return plain.eval()


# --------------------------------------------------------------------------- loading

TORCHVISION_MODELS = ("vgg16", "vgg19", "resnet18", "squeezenet1_1", "alexnet")
MODEL_NAMES = ("course",) + TORCHVISION_MODELS


class ModelUnavailableError(RuntimeError):
    """Weights for a model could not be found or downloaded."""


def prepare_model(model: nn.Module, class_names, input_size, mean, std, device=None) -> nn.Module:
    """``model`` made ready for the course, in place, and returned: eval mode, frozen parameters, moved
    to ``device`` (if given), and the attributes every course function relies on: ``class_names``,
    ``input_size`` (the side of the square input it was trained at), ``mean`` and ``std`` (the
    statistics its :class:`Normalize` layer uses) and ``layer_names`` (:func:`course_lib.layers.lecture_names`).
    :func:`load_model` does this to every model; do it to your own (after :func:`with_normalization`
    if it was trained on normalised images)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.class_names = list(class_names)
    model.input_size = int(input_size)
    model.mean = tuple(float(m) for m in mean)
    model.std = tuple(float(s) for s in std)
    model.layer_names = list(lecture_names(model))
    if device is not None:
        model.to(device)
    return model


def load_course_model(weights: Path | str = COURSE_WEIGHTS, device=None) -> CourseNet:
    """The course's own CNN with its shipped weights (checked against the sha256 in its JSON record)."""
    weights = Path(weights)
    record_path = weights.with_suffix(".json")
    if not weights.exists() or not record_path.exists():
        raise ModelUnavailableError(
            f"the course model's weights are missing ({weights} and {record_path.name}). "
            f"They ship with the repository; restore them with `git checkout -- data/` or retrain "
            f"them with `python -m course_lib.train`.")
    state, record = load_weights(weights, COURSE_RECORD_KEYS, fix=f"restore it with `git checkout -- data/` "
                                                                 f"or retrain with `python -m course_lib.train`")
    # records written before the first conv and the pooling were configurable: 5x5/2 conv, max-pooling
    model = CourseNet(num_classes=len(record["classes"]), blocks=tuple(tuple(b) for b in record["blocks"]),
                      conv1=record.get("conv1", (5, 2, 2)), pool=record.get("pool", "max"),
                      mean=record["mean"], std=record["std"])          # the statistics it was trained with
    model.load_state_dict(state)
    model.record = record
    # channels-last weights: every conv, pool and ReLU then runs in the NHWC layout, PyTorch's
    # faster CPU path for this network (1.4x for one image; 2x with anti-aliased pooling).
    # Inputs can stay ordinary [N, C, H, W] tensors; only the memory order of activations changes.
    model.to(memory_format=torch.channels_last)
    return prepare_model(model, record["classes"], record["input_size"], record["mean"], record["std"], device)


def _check_reachable(url: str, timeout: float = 5.0) -> None:
    """Raise OSError quickly if ``url``'s host cannot be reached (on some offline machines a
    download would otherwise hang for minutes before failing)."""
    import socket
    import threading
    import urllib.parse

    host = urllib.parse.urlparse(url).hostname
    result: list = []

    def connect():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(err)

    t = threading.Thread(target=connect, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        raise OSError(f"no answer from {host} within {timeout:.0f} s")
    if result[0] is not None:
        raise result[0]


def load_torchvision_model(name: str, device=None) -> nn.Module:
    """A torchvision ImageNet model with its default weights, via torchvision's weights API.

    The weights file is downloaded on first use into ``$TORCH_HOME/hub/checkpoints``
    (``~/.cache/torch`` by default). Offline, with no cached file, a clear error says
    which file to put where.
    """
    import torchvision
    from torch.hub import get_dir

    weights = torchvision.models.get_model_weights(name).DEFAULT
    filename = os.path.basename(weights.url)
    folder = Path(get_dir()) / "checkpoints"
    if (folder / filename).exists():
        model = torchvision.models.get_model(name, weights=weights)
    else:
        try:
            _check_reachable(weights.url)
            model = torchvision.models.get_model(name, weights=weights)  # downloads the file
        except OSError as err:  # URLError, timeouts, DNS failures are all OSErrors
            raise ModelUnavailableError(
                f"cannot load {name}'s ImageNet weights: {filename} is not in {folder} and downloading "
                f"{weights.url} failed ({err}). Connect to the internet once, or download that file and "
                f"put it in {folder} (set TORCH_HOME to use another cache folder).") from err
    meta = weights.meta
    with_normalization(model, IMAGENET_MEAN, IMAGENET_STD)
    return prepare_model(model, meta["categories"], 224, IMAGENET_MEAN, IMAGENET_STD, device)


def load_model(name: str = "course", device=None) -> nn.Module:
    """Load a model by name: ``"course"`` or one of ``vgg16, vgg19, resnet18, squeezenet1_1, alexnet``.

    The model takes pixels in [0, 1] (its first layer, ``normalize``, normalises them), is in eval
    mode, its parameters are frozen, and it carries ``class_names``, ``input_size``, ``mean``,
    ``std`` and ``layer_names``.
    """
    if name == "course":
        return load_course_model(device=device)
    if name in TORCHVISION_MODELS:
        return load_torchvision_model(name, device=device)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
