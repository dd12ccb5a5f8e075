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
``with_normalization(net, mean, std)``.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .inputs import check_int

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


# --------------------------------------------------------------------------- lecture names

def lecture_names(model: nn.Module) -> "OrderedDict[str, str]":
    """Map lecture layer names to module paths.

    * the course model: ``conv1_1 -> features.conv1_1`` ... and ``fc -> fc``;
    * VGG: ``conv{block}_{i}``, ``relu{block}_{i}``, ``pool{block}`` in ``features``
      (a block ends at each max-pool), ``fc6, relu6, drop6, fc7, relu7, drop7, fc8``
      in ``classifier``;
    * AlexNet: ``conv1..conv5``, ``relu1..relu5``, ``pool1, pool2, pool5``, then as VGG;
    * ResNet: the stem ``conv1, bn1, relu1, pool1``, the four stages ``layer1..layer4`` (each the
      output of its last residual block), ``gap`` (global average pooling) and ``fc``;
    * SqueezeNet: ``conv1, relu1, pool1``, the Fire modules ``fire2..fire9`` with the pools
      between them named after the module before (``pool3``, ``pool5``: v1.1's places), then
      the classifier's 1x1 ``conv10, relu10`` and ``gap`` (its class scores: no ``fc``).

    Every model with a linear classifier also gets ``fc`` for the layer that outputs the class scores,
    and every model that takes pixels (:class:`Normalize` first) gets ``normalize`` first.
    """
    names: "OrderedDict[str, str]" = OrderedDict()
    if isinstance(getattr(model, "normalize", None), Normalize):
        names["normalize"] = "normalize"
    if isinstance(model, CourseNet):
        for n, _ in model.features.named_children():
            names[n] = f"features.{n}"
        names["gap"] = "gap"
        names["fc"] = "fc"
        return names
    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    kind = type(model).__name__
    if kind in ("VGG", "AlexNet") and isinstance(features, nn.Sequential):
        block, i, n_conv = 1, 0, 0
        last_relu_tag = ""
        for idx, m in features.named_children():
            if isinstance(m, nn.Conv2d):
                i += 1
                n_conv += 1
                tag = f"{block}_{i}" if kind == "VGG" else f"{n_conv}"
                names[f"conv{tag}"] = f"features.{idx}"
                last_relu_tag = tag
            elif isinstance(m, nn.ReLU):
                names[f"relu{last_relu_tag}"] = f"features.{idx}"
            elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):  # average: style.with_average_pooling's copies
                tag = block if kind == "VGG" else n_conv
                names[f"pool{tag}"] = f"features.{idx}"
                block, i = block + 1, 0
        if isinstance(classifier, nn.Sequential):
            n = 6
            for idx, m in classifier.named_children():
                if isinstance(m, nn.Linear):
                    names[f"fc{n}"] = f"classifier.{idx}"
                    last = f"classifier.{idx}"
                elif isinstance(m, nn.ReLU):
                    names[f"relu{n}"] = f"classifier.{idx}"
                elif isinstance(m, nn.Dropout):
                    names[f"drop{n}"] = f"classifier.{idx}"
                if isinstance(m, (nn.ReLU,)):
                    n += 1
            names["fc"] = last
    elif kind == "ResNet":
        names.update(conv1="conv1", bn1="bn1", relu1="relu", pool1="maxpool")
        names.update((f"layer{i}", f"layer{i}") for i in range(1, 5))
        names.update(gap="avgpool", fc="fc")
    elif kind == "SqueezeNet":
        n = 1
        for idx, m in features.named_children():
            if isinstance(m, nn.Conv2d):
                names["conv1"] = f"features.{idx}"
            elif isinstance(m, nn.ReLU):
                names["relu1"] = f"features.{idx}"
            elif isinstance(m, nn.MaxPool2d):
                names[f"pool{n}"] = f"features.{idx}"
            else:                                      # a Fire module
                n += 1
                names[f"fire{n}"] = f"features.{idx}"
        names.update(conv10="classifier.1", relu10="classifier.2", gap="classifier.3")
    return names


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's convolution layers, in order: lecture names (``conv1_1``, ...) where
    they name every convolution (course model, VGG, AlexNet), else module paths (``layer1.0.conv1``)."""
    convs = [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    named = [n for n, path in lecture_names(model).items() if path in convs]
    return named if len(named) == len(convs) else convs


def feature_layers(model: nn.Module) -> list[str]:
    """The layers whose outputs are feature maps ``[N, K, h, w]`` worth picking for a method, in
    depth order: every ReLU and pool of the convolutional part (course model, VGG, AlexNet), the
    stem and the four stages of a ResNet, the stem and the Fire modules of a SqueezeNet. Layers
    after the last of them see the whole image (global pooling, the classifier)."""
    layers = [n for n, path in lecture_names(model).items()
              if n.startswith(("relu", "pool", "fire", "layer")) and not path.startswith("classifier")]
    if not layers:
        raise ValueError(f"{type(model).__name__}: no known feature layers (the course model, VGG, AlexNet, "
                         f"ResNet and SqueezeNet have them); pass layer names or module paths yourself")
    return layers


def conv_stages(model: nn.Module) -> list[str]:
    """The :func:`feature_layers` that are not pools: the outputs of the conv stages, input to output."""
    return [n for n in feature_layers(model) if not n.startswith("pool")]


def unit_layers(model: nn.Module) -> list[str]:
    """Layers to look at units in: the convolutions where lecture names name them all (course model,
    VGG, AlexNet: ``conv1_1 ...``), else the :func:`conv_stages` (ResNet, SqueezeNet: a block's
    inner convolutions are not on one chain from the input)."""
    convs = conv_layers(model)
    return convs if set(convs) <= set(lecture_names(model)) else conv_stages(model)


def last_conv_stage(model: nn.Module) -> str:
    """The last of the :func:`conv_stages`: the output of the last conv stage (course model:
    ``relu4_2``, VGG16: ``relu5_3``, AlexNet: ``relu5``, ResNet: ``layer4``, SqueezeNet: ``fire9``).
    Grad-CAM, DeepDream and the deepest patches default to it."""
    return conv_stages(model)[-1]


def spread_layers(model: nn.Module, k: int = 3) -> list[str]:
    """``k`` conv-stage outputs spread over the depth: the last of each k-th of the
    :func:`conv_stages` (course model: ``relu2_1, relu3_2, relu4_2``; VGG16: ``relu2_2, relu4_2,
    relu5_3``; ResNet: ``layer1, layer2, layer4``), ending with :func:`last_conv_stage`."""
    stages = conv_stages(model)
    k = min(check_int(k, "k", low=1), len(stages))
    return [stages[round(len(stages) * (i + 1) / k) - 1] for i in range(k)]


def layer_paths(model: nn.Module) -> list[str]:
    """Every valid name for :func:`get_layer`: lecture names first, then all module paths."""
    paths = [p for p, _ in model.named_modules() if p]
    return list(lecture_names(model)) + paths


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name``: a lecture name (``"conv5_3"``, ``"relu4_2"``, ``"pool3"``,
    ``"fc"``) or a plain module path (``"features.28"``, ``"layer4.1.conv2"``)."""
    if not isinstance(name, str):
        raise TypeError(f"layer name must be a string, not {type(name).__name__}")
    path = lecture_names(model).get(name, name)
    try:
        return model.get_submodule(path)
    except AttributeError:
        valid = layer_paths(model)
        raise KeyError(f"{type(model).__name__} has no layer {name!r}. Valid names: {', '.join(valid)}") from None


# --------------------------------------------------------------------------- loading

TORCHVISION_MODELS = ("vgg16", "vgg19", "resnet18", "squeezenet1_1", "alexnet")
MODEL_NAMES = ("course",) + TORCHVISION_MODELS


class ModelUnavailableError(RuntimeError):
    """Weights for a model could not be found or downloaded."""


def _prepare(model: nn.Module, class_names, input_size, mean, std, device) -> nn.Module:
    """Eval mode, frozen parameters, and the attributes the course relies on."""
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
    record = json.loads(record_path.read_text())
    from .data import ChecksumError, sha256_of
    actual = sha256_of(weights)
    if actual != record["weights_sha256"]:
        raise ChecksumError(
            f"{weights} is corrupt or was replaced: sha256 {actual}, expected {record['weights_sha256']} "
            f"(from {record_path.name}). Restore it with `git checkout -- {weights.name}` or retrain.")
    # records written before the first conv and the pooling were configurable: 5x5/2 conv, max-pooling
    model = CourseNet(num_classes=len(record["classes"]), blocks=tuple(tuple(b) for b in record["blocks"]),
                      conv1=record.get("conv1", (5, 2, 2)), pool=record.get("pool", "max"),
                      mean=record["mean"], std=record["std"])          # the statistics it was trained with
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.record = record
    # channels-last weights: every conv, pool and ReLU then runs in the NHWC layout, PyTorch's
    # faster CPU path for this network (1.4x for one image; 2x with anti-aliased pooling).
    # Inputs can stay ordinary [N, C, H, W] tensors; only the memory order of activations changes.
    model.to(memory_format=torch.channels_last)
    return _prepare(model, record["classes"], record["input_size"], record["mean"], record["std"], device)


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
    return _prepare(model, meta["categories"], 224, IMAGENET_MEAN, IMAGENET_STD, device)


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


# --------------------------------------------------------------------------- looking inside

@contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` in eval mode for the block; afterwards restore every module's training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


class record_activations:
    """Context manager that records the outputs of named layers during forward passes.

        with record_activations(model, ["conv1_1", "fc"]) as acts:
            model(x)
        acts["conv1_1"]   # tensor [N, C, H, W]

    A module that runs more than once in one forward pass (ResNet's ``BasicBlock.relu``, applied
    inside the block and again after the skip connection) is recorded at its **first** call; each
    new pass through ``model`` records afresh. The hooks are removed when the block ends, even if it
    raises.
    """

    def __init__(self, model: nn.Module, names, detach: bool = True):
        self.model, self.names, self.detach = model, list(names), detach
        self.activations: dict[str, torch.Tensor] = {}
        self._handles = []
        self._seen: set[str] = set()   # the layers already recorded in this forward pass

    def __enter__(self):
        layers = [get_layer(self.model, name) for name in self.names]   # a KeyError naming the valid layers first
        self._handles.append(self.model.register_forward_pre_hook(lambda *_: self._seen.clear()))
        for name, layer in zip(self.names, layers):

            def hook(_m, _inp, out, name=name):
                if name in self._seen:
                    return None
                self._seen.add(name)
                # A following in-place ReLU would overwrite ``out``: keep a copy (detached),
                # or keep ``out`` with its graph and hand the network a copy to modify.
                if self.detach:
                    self.activations[name] = out.detach().clone()
                    return None
                self.activations[name] = out
                return out.clone()

            self._handles.append(layer.register_forward_hook(hook))
        return self.activations

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False


def layer_table(model: nn.Module, input_size: int | None = None) -> list[dict]:
    """One row per lecture layer: name, type, output shape (for one input image) and parameter count."""
    size = input_size or getattr(model, "input_size", 224)
    names = [n for n in lecture_names(model)] or [p for p, m in model.named_modules() if p and not list(m.children())]
    device = next(model.parameters()).device
    with torch.no_grad(), record_activations(model, names) as acts:
        model(torch.zeros(1, 3, size, size, device=device))
    rows = []
    for n in names:
        m = get_layer(model, n)
        rows.append({"name": n, "type": type(m).__name__, "output": tuple(acts[n].shape[1:]),
                     "params": sum(p.numel() for p in m.parameters(recurse=False))})
    return rows


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset, indices=None, batch_size: int = 64,
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores for the images ``dataset[i]`` (PIL image, label) for ``i`` in ``indices`` (default: all).

    Returns ``(logits [N, classes], labels [N])``, batched, with a progress bar. The model runs
    in eval mode (dropout off, batch norm with its running statistics); afterwards every
    submodule gets its own training flag back.
    """
    from tqdm.auto import tqdm

    from .imaging import preprocess

    batch_size = check_int(batch_size, "batch_size", low=1)
    idx = list(range(len(dataset))) if indices is None else list(indices)
    logits, labels = [], []
    device = next(model.parameters()).device
    with eval_mode(model):
        for s in tqdm(range(0, len(idx), batch_size), desc="predict", disable=not progress, unit="batch"):
            batch = [dataset[i] for i in idx[s:s + batch_size]]
            x = torch.cat([preprocess(img, model) for img, _ in batch]).to(device)
            logits.append(model(x).cpu())
            labels += [y for _, y in batch]
    return torch.cat(logits), torch.tensor(labels)


@torch.no_grad()
def classify(model: nn.Module, image, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image: ``[(class name, softmax probability), ...]``.

    ``image``: anything :func:`course_lib.imaging.preprocess` takes (an RGB PIL image, an
    ``H x W x 3`` array, a ``[3, H, W]`` tensor of pixels in [0, 1]); ``k``: an int >= 1 (all
    classes if the model has fewer). The model runs in eval mode, so the answer does not
    change from call to call; afterwards every submodule gets its own training flag back.
    """
    from .imaging import preprocess

    k = check_int(k, "k", low=1)
    x = preprocess(image, model)
    with eval_mode(model):
        probs = torch.softmax(model(x), dim=1)[0]
    top = probs.topk(min(k, probs.numel()))
    return [(model.class_names[i], p) for p, i in zip(top.values.tolist(), top.indices.tolist())]
