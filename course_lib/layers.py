"""Finding and looking inside a model's layers: lecture names, layer lists, hooks.

* :func:`lecture_names`, :func:`get_layer` -- the names the lectures use (``"conv5_3"``, ``"relu4_2"``,
  ``"pool3"``, ``"fc"``) next to plain module paths (``"features.28"``, ``"layer4.1.conv2"``);
* :func:`conv_layers`, :func:`feature_layers`, :func:`conv_stages`, :func:`unit_layers`,
  :func:`last_conv_stage`, :func:`spread_layers` -- the layers a method picks by default;
* :func:`eval_mode`, :class:`record_activations`, :func:`layer_table` -- running a model and
  recording what its layers output.

What differs between model families (lecture names, conv stages, the classifier layer, style and
content layers, ...) is in one table, :data:`ARCHITECTURES`, one :class:`Architecture` per family;
``architecture(model)`` gives a model's. Teaching the course another family is one entry there.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import takewhile
from typing import Callable

import torch
from torch import nn

from .inputs import check_int, model_device


# --------------------------------------------------------------------------- model families

def _course_names(model: nn.Module) -> dict:
    """The course model's lecture names: every layer of ``features`` by its own name, ``gap``, ``fc``."""
    return {**{n: f"features.{n}" for n, _ in model.features.named_children()}, "gap": "gap", "fc": "fc"}


def _chain_names(model: nn.Module, by_block: bool) -> dict:
    """VGG's (``by_block``: ``conv{block}_{i}``, a block ending at each pool) or AlexNet's
    (``conv1``, ``conv2``, ...; a pool named after the conv before it) lecture names of ``features``,
    then ``fc6, relu6, drop7, fc7, ...`` (a dropout numbered as the linear layer after it) and ``fc``
    (the last linear layer) of ``classifier``."""
    names: dict = {}
    features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
    if not isinstance(features, nn.Sequential):
        return names
    block, i, n_conv, tag = 1, 0, 0, ""
    for idx, m in features.named_children():
        if isinstance(m, nn.Conv2d):
            i, n_conv = i + 1, n_conv + 1
            tag = f"{block}_{i}" if by_block else f"{n_conv}"
            names[f"conv{tag}"] = f"features.{idx}"
        elif isinstance(m, nn.ReLU):                        # the ReLU after a conv: its tag
            names[f"relu{tag}"] = f"features.{idx}"
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):  # average: style.with_average_pooling's copies
            names[f"pool{block if by_block else n_conv}"] = f"features.{idx}"
            block, i = block + 1, 0
    if isinstance(classifier, nn.Sequential):
        n, last = 6, None
        for idx, m in classifier.named_children():
            if isinstance(m, nn.Linear):
                names[f"fc{n}"] = last = f"classifier.{idx}"
            elif isinstance(m, nn.ReLU):
                names[f"relu{n}"] = f"classifier.{idx}"
                n += 1
            elif isinstance(m, nn.Dropout):
                names[f"drop{n}"] = f"classifier.{idx}"
        if last is not None:
            names["fc"] = last
    return names


def _resnet_names(model: nn.Module) -> dict:
    """A ResNet's lecture names: its stem, its four stages (``layer1 .. layer4``), ``gap`` and ``fc``."""
    stages = {f"layer{i}": f"layer{i}" for i in range(1, 5)}
    return {"conv1": "conv1", "bn1": "bn1", "relu1": "relu", "pool1": "maxpool", **stages, "gap": "avgpool", "fc": "fc"}


def _squeezenet_names(model: nn.Module) -> dict:
    """A SqueezeNet's lecture names: ``conv1, relu1``, the Fire modules ``fire2 .. fire9`` and the pools
    (each named after the layer before it), then the 1x1 classifier ``conv10, relu10`` and ``gap``."""
    names, n = {}, 1
    for idx, m in model.features.named_children():
        if isinstance(m, nn.Conv2d):
            names["conv1"] = f"features.{idx}"
        elif isinstance(m, nn.ReLU):
            names["relu1"] = f"features.{idx}"
        elif isinstance(m, nn.MaxPool2d):
            names[f"pool{n}"] = f"features.{idx}"
        else:                                      # a Fire module
            n += 1
            names[f"fire{n}"] = f"features.{idx}"
    return {**names, "conv10": "classifier.1", "relu10": "classifier.2", "gap": "classifier.3"}


@dataclass(frozen=True)
class Architecture:
    """What the course knows about one family of models: every fact that differs between families,
    in one place. :data:`ARCHITECTURES` holds one per family; :func:`architecture` finds a model's.

    * ``names``: ``model -> {lecture name: module path}`` in depth order (:func:`lecture_names`);
    * ``stages``: how the lecture names of the conv stages' outputs begin (``"relu"``; also ResNet's
      stages ``"layer"``, SqueezeNet's Fire modules ``"fire"``). These and the pools before ``head``
      are the :func:`feature_layers`; the last stage is the Grad-CAM layer and the deepest layer of
      patches (:func:`last_conv_stage`); DeepDream's layers are spread over the stages
      (:func:`spread_layers`: the depth differs within a family, VGG11 to VGG19);
    * ``head``: the first layer after the convolutional part (global pooling or the first fully
      connected layer): from there on each unit sees the whole image;
    * ``classifier``: the final classifier layer, whose input is the image's feature vector
      (:func:`course_lib.neighbors.classifier_layer`);
    * ``plain_chain``: the convolutions run one after another, with no skip connection or parallel
      branch. Then every convolution lies on the one path from the input and is a unit layer
      (:func:`unit_layers`; otherwise the stage outputs are), and Gram-matrix style works well
      (Gatys et al. made it for VGG);
    * ``style_layers``, ``content_layer``: the default layers of texture synthesis and style transfer
      (:func:`course_lib.style.default_layers`);
    * ``chain``: the ``nn.Sequential`` whose children run one after another from the input to
      ``head`` (receptive fields, :mod:`course_lib.patches`); ``""``: the model's own children,
      which its ``forward`` calls in turn (ResNet).
    """

    names: Callable[[nn.Module], dict]
    stages: tuple[str, ...]
    head: str
    classifier: str
    plain_chain: bool
    style_layers: tuple[str, ...]
    content_layer: str
    chain: str = "features"


#: One :class:`Architecture` per model family, under the family's class name: adding a family is one entry.
ARCHITECTURES = {
    # style: the first ReLU of every block; content: a deep one
    "CourseNet": Architecture(_course_names, stages=("relu",), head="gap", classifier="fc", plain_chain=True,
                              style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1"), content_layer="relu4_1"),
    # Gatys et al.'s layers (their "conv1_1" is Caffe's in-place ReLU output: our relu1_1)
    "VGG": Architecture(lambda model: _chain_names(model, by_block=True), stages=("relu",), head="fc6",
                        classifier="fc", plain_chain=True,
                        style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), content_layer="relu4_2"),
    "AlexNet": Architecture(lambda model: _chain_names(model, by_block=False), stages=("relu",), head="fc6",
                            classifier="fc", plain_chain=True,
                            style_layers=("relu1", "relu2", "relu3", "relu4", "relu5"), content_layer="relu4"),
    # ResNet's and SqueezeNet's style layers are their stage outputs. Gatys's method was made for plain chains
    # such as VGG; with these networks it runs, but skip connections and concatenated branches give much weaker
    # textures (a known finding, e.g. Wang et al. 2021, "Rethinking and improving the robustness of image style
    # transfer").
    "ResNet": Architecture(_resnet_names, stages=("relu", "layer"), head="gap", classifier="fc", plain_chain=False,
                           style_layers=("relu1", "layer1", "layer2", "layer3", "layer4"), content_layer="layer3",
                           chain=""),
    "SqueezeNet": Architecture(_squeezenet_names, stages=("relu", "fire"), head="conv10", classifier="conv10",
                               plain_chain=False, style_layers=("relu1", "fire2", "fire4", "fire6", "fire8"),
                               content_layer="fire6"),
}

_REQUIRED = object()   # architecture()'s default: raise for an unknown family


def architecture(model: nn.Module, default=_REQUIRED, *, what: str = "architecture facts",
                 instead: str = "pass layer names or module paths yourself") -> Architecture:
    """The :class:`Architecture` of ``model``'s family: the entry of :data:`ARCHITECTURES` named by its
    class or a base class (so a subclass finds it too, e.g. the one
    :func:`course_lib.models.with_normalization` makes).

    For a model of another family: ``default`` where given (``architecture(model, None)``), else a
    ValueError naming the class, saying there is no ``what`` for it, and that one can ``instead``
    or describe the family in :data:`ARCHITECTURES`."""
    for cls in type(model).__mro__:
        if cls.__name__ in ARCHITECTURES:
            return ARCHITECTURES[cls.__name__]
    if default is not _REQUIRED:
        return default
    name = type(model).__name__
    raise ValueError(f"no {what} for a {name}: the course knows the model families {', '.join(ARCHITECTURES)}. "
                     f"Either {instead}, or describe the {name} family by one Architecture entry in "
                     f"course_lib.layers.ARCHITECTURES.")


# --------------------------------------------------------------------------- lecture names

def lecture_names(model: nn.Module) -> "OrderedDict[str, str]":
    """Map lecture layer names to module paths, in depth order: its family's names
    (``Architecture.names``, see :data:`ARCHITECTURES`; none for a model of another family):

    * the course model: ``conv1_1 -> features.conv1_1`` ... and ``fc -> fc``;
    * VGG: ``conv{block}_{i}``, ``relu{block}_{i}``, ``pool{block}`` in ``features``
      (a block ends at each max-pool), ``fc6, relu6, drop7, fc7, relu7, drop8, fc8``
      in ``classifier`` (a dropout is numbered as the linear layer after it);
    * AlexNet: ``conv1..conv5``, ``relu1..relu5``, ``pool1, pool2, pool5``, then as VGG;
    * ResNet: the stem ``conv1, bn1, relu1, pool1``, the four stages ``layer1..layer4`` (each the
      output of its last residual block), ``gap`` (global average pooling) and ``fc``;
    * SqueezeNet: ``conv1, relu1, pool1``, the Fire modules ``fire2..fire9`` with the pools
      between them named after the module before (``pool3``, ``pool5``: v1.1's places), then
      the classifier's 1x1 ``conv10, relu10`` and ``gap`` (its class scores: no ``fc``).

    Every model with a linear classifier also gets ``fc`` for the layer that outputs the class scores,
    and every model that takes pixels gets ``normalize`` first: its first layer, named ``normalize``
    (a :class:`course_lib.models.Normalize`, as the course model and
    :func:`course_lib.models.with_normalization` name it).
    """
    names: "OrderedDict[str, str]" = OrderedDict()
    if isinstance(getattr(model, "normalize", None), nn.Module):   # by its name: models imports this module
        names["normalize"] = "normalize"
    family = architecture(model, None)
    if family is not None:
        names.update(family.names(model))
    return names


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's convolution layers, in order: lecture names (``conv1_1``, ...) where
    they name every convolution (course model, VGG, AlexNet), else module paths (``layer1.0.conv1``)."""
    convs = [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    named = [n for n, path in lecture_names(model).items() if path in convs]
    return named if len(named) == len(convs) else convs


def feature_layers(model: nn.Module) -> list[str]:
    """The layers whose outputs are feature maps ``[N, K, h, w]`` worth picking for a method, in
    depth order: the conv stages' outputs and the pools before the model's head (its
    :class:`Architecture`'s ``stages`` and ``head``): every ReLU and pool of the convolutional part
    (course model, VGG, AlexNet), the stem and the four stages of a ResNet, the stem and the Fire
    modules of a SqueezeNet. Layers from the head on see the whole image (global pooling, the classifier)."""
    family = architecture(model, what="known feature layers")
    body = takewhile(lambda name: name != family.head, lecture_names(model))
    return [name for name in body if name.startswith(("pool",) + family.stages)]


def conv_stages(model: nn.Module) -> list[str]:
    """The :func:`feature_layers` that are not pools: the outputs of the conv stages, input to output."""
    return [n for n in feature_layers(model) if not n.startswith("pool")]


def unit_layers(model: nn.Module) -> list[str]:
    """Layers to look at units in: the convolutions of a plain chain (``Architecture.plain_chain``:
    course model, VGG, AlexNet: ``conv1_1 ...``), else the :func:`conv_stages` (ResNet, SqueezeNet:
    a block's inner convolutions are not on one chain from the input)."""
    plain = architecture(model, what="known unit layers").plain_chain
    return conv_layers(model) if plain else conv_stages(model)


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
    device = model_device(model)
    with torch.no_grad(), record_activations(model, names) as acts:
        model(torch.zeros(1, 3, size, size, device=device))
    rows = []
    for n in names:
        m = get_layer(model, n)
        rows.append({"name": n, "type": type(m).__name__, "output": tuple(acts[n].shape[1:]),
                     "params": sum(p.numel() for p in m.parameters(recurse=False))})
    return rows
