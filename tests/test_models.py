import copy
import json
import shutil
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from conftest import close
from course_lib import layers, models, predict
from course_lib.data import ChecksumError
from course_lib.layers import get_layer, layer_table, lecture_names, record_activations
from course_lib.models import CourseNet, ModelUnavailableError, fold_batch_norm, load_course_model, load_model


# ---------------------------------------------------------------- the shipped course model

def test_course_model_is_ready_to_use(course_model):
    m = course_model
    assert not m.training
    assert all(not p.requires_grad for p in m.parameters())
    assert len(m.class_names) == 10 and m.class_names[0] == "tench" and m.class_names[-1] == "parachute"
    assert m.input_size >= 112
    assert len(m.mean) == 3 and len(m.std) == 3


def test_course_model_architecture_matches_the_lecture(course_model):
    m = course_model
    first = get_layer(m, "conv1_1")
    assert first.in_channels == 3 and first.kernel_size[0] >= 5 and 32 <= first.out_channels <= 64
    # a plain conv/relu/pool stack: BatchNorm was folded away when exporting
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    kinds = {type(x) for x in m.features}
    assert kinds == {nn.Conv2d, nn.ReLU, nn.MaxPool2d}
    assert m.layer_names[0] == "normalize" and isinstance(m.normalize, models.Normalize)
    for name in m.layer_names[1:]:
        assert name in ("gap", "fc") or name[:4] in ("conv", "relu", "pool")
    # GAP + one linear layer, so CAM applies; the last conv map is at least 8x8
    assert isinstance(m.gap, nn.AdaptiveAvgPool2d) and isinstance(m.fc, nn.Linear)
    rows = {r["name"]: r for r in layer_table(m)}
    last_conv = [n for n in m.layer_names if n.startswith("conv")][-1]
    assert rows[last_conv]["output"][1] >= 8 and rows[last_conv]["output"][2] >= 8
    assert rows["fc"]["output"] == (10,)


def test_course_model_record_describes_the_weights(course_model):
    rec = json.loads(models.COURSE_RECORD.read_text())
    for key in ("val_top1", "epochs", "seed", "train_seconds", "data", "weights_sha256"):
        assert key in rec
    assert rec["val_top1"] >= 0.80 and rec["val_images"] == 3925
    assert models.COURSE_WEIGHTS.stat().st_size <= 20 * 2**20


def test_course_model_accuracy_on_a_fixed_val_subset(course_model, val_set):
    from course_lib.data import spread_indices
    logits, labels = predict.predict_dataset(course_model, val_set, spread_indices(len(val_set), 400), progress=False)
    acc = (logits.argmax(1) == labels).float().mean().item()
    assert set(labels.tolist()) == set(range(10))
    assert acc >= 0.75, f"accuracy {acc:.3f} on 400 val images"


def test_corrupt_weights_are_refused(tmp_path):
    w = tmp_path / "course_model.pt"
    shutil.copy(models.COURSE_WEIGHTS, w)
    shutil.copy(models.COURSE_RECORD, tmp_path / "course_model.json")
    load_course_model(w)  # the intact copy loads
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="course_model.pt"):
        load_course_model(w)


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(ModelUnavailableError, match="course_lib.train"):
        load_course_model(tmp_path / "course_model.pt")


def test_unknown_model_name():
    with pytest.raises(ValueError, match="vgg16"):
        load_model("vgg17")


# ---------------------------------------------------------------- BN folding

@pytest.mark.parametrize("conv1,pool", [((5, 2, 2), "max"), ((8, 2, 3), "blur")])
def test_fold_batch_norm_is_exact(conv1, pool):
    torch.manual_seed(0)
    net = CourseNet(blocks=((8,), (8,), (8, 8), (16, 16)), batch_norm=True, conv1=conv1, pool=pool)
    for m in net.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    net.eval()
    plain = fold_batch_norm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert (plain.conv1_spec, plain.pool_kind) == (conv1, pool)
    x = torch.rand(2, 3, 64, 64)
    close(plain(x), net(x), rtol=1e-4, floor=1e-5)  # folded weights: other products, through the whole net
    assert torch.equal(plain.normalize.mean, net.normalize.mean) and torch.equal(plain.normalize.std, net.normalize.std)
    assert [n for n, _ in plain.features.named_children()] == [
        "conv1_1", "relu1_1", "pool1", "conv2_1", "relu2_1", "pool2",
        "conv3_1", "relu3_1", "conv3_2", "relu3_2", "pool3", "conv4_1", "relu4_1", "conv4_2", "relu4_2"]


# ---------------------------------------------------------------- layer names

def test_blur_max_pool_is_max_then_binomial_blur():
    """Against the definition: a dense 2x2 max, then [1 2 1] x [1 2 1] / 16 at stride 2 with zero padding."""
    x = torch.randn(2, 3, 9, 12, generator=torch.Generator().manual_seed(0))
    m = torch.maximum(torch.maximum(x[..., :-1, :-1], x[..., 1:, :-1]), torch.maximum(x[..., :-1, 1:], x[..., 1:, 1:]))
    p = torch.nn.functional.pad(m, (1, 1, 1, 1))
    b = [1, 2, 1]
    want = sum(b[i] * b[j] * p[..., i:i + 2 * 4 - 1:2, j:j + 2 * 6 - 1:2] for i in range(3) for j in range(3)) / 16
    got = models.BlurMaxPool2d()(x)
    assert got.shape == (2, 3, 4, 6)  # 9x12 -> dense max 8x11 -> every second of the padded 10x13
    close(got, want)
    with pytest.raises(ValueError, match="'blur' or 'max'"):
        CourseNet(pool="avg")


def test_vgg16_lecture_names():
    vgg = torchvision.models.vgg16()
    names = lecture_names(vgg)
    assert names["conv1_1"] == "features.0" and names["relu1_1"] == "features.1"
    assert names["pool1"] == "features.4"
    assert names["conv5_3"] == "features.28" and names["relu5_3"] == "features.29"
    assert names["pool5"] == "features.30"
    assert names["fc6"] == "classifier.0" and names["fc8"] == "classifier.6" and names["fc"] == "classifier.6"
    assert get_layer(vgg, "conv4_2") is vgg.features[19]
    assert sum(n.startswith("conv") for n in names) == 13


def test_vgg19_and_alexnet_lecture_names():
    assert sum(n.startswith("conv") for n in lecture_names(torchvision.models.vgg19())) == 16
    alex = torchvision.models.alexnet()
    names = lecture_names(alex)
    assert [n for n in names if n.startswith("conv")] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert get_layer(alex, "conv5") is alex.features[10]
    assert get_layer(alex, "pool5") is alex.features[12]
    assert get_layer(alex, "fc8") is alex.classifier[6]


def test_plain_module_paths_work_for_any_model():
    r18 = torchvision.models.resnet18()
    assert get_layer(r18, "layer4.1.conv2") is r18.layer4[1].conv2
    assert get_layer(r18, "fc") is r18.fc


def test_unknown_layer_lists_valid_names(tiny_net):
    with pytest.raises(KeyError) as e:
        get_layer(tiny_net, "conv9_9")
    assert "conv9_9" in str(e.value) and "conv4_2" in str(e.value) and "pool3" in str(e.value)


def test_record_activations_removes_hooks_even_on_error(tiny_net):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with record_activations(tiny_net, ["conv1_1", "relu4_2", "fc"]) as acts:
        tiny_net(x)
    assert acts["conv1_1"].shape == (1, 8, 32, 32) and acts["relu4_2"].shape == (1, 16, 4, 4)
    assert (acts["relu4_2"] >= 0).all()
    # the conv output is recorded before the in-place ReLU that follows it overwrites it
    assert (acts["conv1_1"] < 0).any()
    close(acts["conv1_1"], tiny_net.features.conv1_1(tiny_net.normalize(x)))   # the model normalises first
    with record_activations(tiny_net, ["conv2_1"], detach=False) as acts:
        out = tiny_net(x.clone().requires_grad_(True))
    (g,) = torch.autograd.grad(out[0, 1], acts["conv2_1"])
    assert (acts["conv2_1"] < 0).any() and g.shape == acts["conv2_1"].shape
    with pytest.raises(RuntimeError, match="boom"):
        with record_activations(tiny_net, ["conv1_1"]):
            raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in tiny_net.modules())


# ---------------------------------------------------------------- the Normalize layer: every model takes pixels

_MEAN = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)


def test_normalize_is_x_minus_mean_over_std_per_channel():
    mean, std = (0.1, 0.5, 0.9), (0.5, 2.0, 0.25)
    norm = models.Normalize(mean, std)
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    out = norm(x)
    for c in range(3):
        close(out[:, c], (x[:, c] - mean[c]) / std[c])
    assert not list(norm.parameters())                                  # nothing to train
    assert norm.mean.shape == norm.std.shape == (1, 3, 1, 1)
    assert "mean=(0.100, 0.500, 0.900)" in repr(norm) and "std=(0.500, 2.000, 0.250)" in repr(norm)


def test_normalize_buffers_follow_double_and_are_not_saved():
    norm = models.Normalize().double()
    assert norm.mean.dtype == norm.std.dtype == torch.float64
    x = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    assert norm(x).dtype == torch.float64
    close(norm(x), (x - _MEAN.double()) / _STD.double(), rtol=1e-12, floor=1e-15)
    assert dict(norm.named_buffers()).keys() == {"mean", "std"}
    assert norm.state_dict() == {}                                      # the weights files stay as they were
    net = CourseNet(blocks=((4,), (4,)))
    assert not any(k.startswith("normalize") for k in net.state_dict())
    assert net.double().normalize.mean.dtype == torch.float64


@pytest.mark.parametrize("bad,match", [({"mean": (0.5, 0.5)}, "mean must have 3 values"),
                                       ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
                                       ({"std": (0.2, -1.0, 0.2)}, "std must be positive")])
def test_normalize_refuses_wrong_statistics(bad, match):
    with pytest.raises(ValueError, match=match):
        models.Normalize(**bad)


def test_course_net_normalises_first_with_its_own_statistics():
    torch.manual_seed(0)
    mean, std = (0.3, 0.4, 0.5), (0.1, 0.2, 0.3)
    net = CourseNet(blocks=((8,), (8,)), mean=mean, std=std).eval()
    assert list(net._modules)[0] == "normalize" and list(lecture_names(net))[0] == "normalize"
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net.fc(torch.flatten(net.gap(net.features((x - m) / s)), 1))
        close(net(x), expected)
    assert models.mean_colour(net) == pytest.approx(mean)


def test_load_model_course_prints_normalize_first(course_model):
    text = str(load_model("course"))
    first_child = text.splitlines()[1].strip()
    assert first_child.startswith("(normalize): Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))")
    assert text.index("(normalize)") < text.index("(features)") < text.index("(conv1_1)")
    assert course_model.layer_names[0] == "normalize" and list(lecture_names(course_model))[0] == "normalize"
    assert models.mean_colour(course_model) == pytest.approx(tuple(course_model.record["mean"]))
    assert torch.allclose(course_model.normalize.std.flatten(), torch.tensor(course_model.record["std"]))


def test_layer_lists_leave_normalize_out(course_model):
    from course_lib.layers import conv_layers, conv_stages, feature_layers, unit_layers

    for names in (feature_layers(course_model), conv_stages(course_model), unit_layers(course_model),
                  conv_layers(course_model)):
        assert "normalize" not in names and names
    assert get_layer(course_model, "normalize") is course_model.normalize


def test_mean_colour():
    net = CourseNet(blocks=((4,), (4,)), mean=(0.2, 0.3, 0.4))
    assert models.mean_colour(net) == pytest.approx((0.2, 0.3, 0.4))
    plain = nn.Conv2d(3, 2, 3)                                          # no Normalize: ImageNet's colour
    assert models.mean_colour(plain) == pytest.approx(models.IMAGENET_MEAN)
    plain.mean = (0.5, 0.5, 0.5)                                        # or the statistics it says it was trained with
    assert models.mean_colour(plain) == pytest.approx((0.5, 0.5, 0.5))
    # the colour maps to zero: what the network sees is all zeros
    colour = torch.tensor(models.mean_colour(net)).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert torch.allclose(net.normalize(colour), torch.zeros(1, 3, 4, 4), atol=1e-6)


@pytest.mark.parametrize("arch", ["vgg11", "resnet18"])
def test_with_normalization_makes_a_torchvision_model_take_pixels(arch):
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None).eval()
    old = copy.deepcopy(net)
    paths_before = [p for p, _ in net.named_modules()]
    names_before = list(lecture_names(net))
    keys_before = list(net.state_dict())
    name_before, base = type(net).__name__, type(net)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

    out = models.with_normalization(net, models.IMAGENET_MEAN, models.IMAGENET_STD)
    assert out is net                                                   # in place
    assert type(net).__name__ == name_before and isinstance(net, base) and type(net) is not base
    assert type(net).__module__ == base.__module__
    assert [p for p, _ in net.named_modules() if p != "normalize"] == paths_before   # every path as it was
    assert list(net._modules)[0] == "normalize" and isinstance(net.normalize, models.Normalize)
    assert str(net).splitlines()[1].strip().startswith("(normalize): Normalize(")
    assert list(lecture_names(net)) == ["normalize"] + names_before
    assert list(net.state_dict()) == keys_before                        # torchvision weights still load
    with torch.no_grad():
        close(net(x), old((x - _MEAN) / _STD))
    assert get_layer(net, "fc") is (net.fc if arch == "resnet18" else net.classifier[6])
    with pytest.raises(ValueError, match="already has a 'normalize'"):
        models.with_normalization(net)
    with pytest.raises(ValueError, match="already has a 'normalize'"):
        models.with_normalization(CourseNet(blocks=((4,), (4,))))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        models.with_normalization(lambda x: x)


def test_with_normalization_follows_the_models_dtype_and_custom_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).double()
    old = copy.deepcopy(net)
    mean, std = (0.25, 0.5, 0.625), (0.5, 0.25, 0.125)      # exact in float32 (the buffers are made float32 first)
    models.with_normalization(net, mean, std)
    assert net.normalize.mean.dtype == torch.float64
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    close(net(x), old((x - m) / s), rtol=1e-12, floor=1e-14)
    assert models.mean_colour(net) == pytest.approx(mean)
    # a Sequential runs its modules in order: normalize is simply its first one (and runs once)
    assert type(net) is nn.Sequential and net[0] is net.normalize and net[1] is net._modules["0"]
    assert [p for p, _ in net.named_modules()] == ["", "normalize", "0", "1"]
    x.requires_grad_(True)
    net(x).sum().backward()                                            # differentiable through the new layer
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------- torchvision ImageNet models, offline

def _offline(monkeypatch):
    def refuse(*a, **k):
        raise urllib.error.URLError("no network in tests")
    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    monkeypatch.setattr(models, "_check_reachable", refuse)


@pytest.mark.parametrize("name", ["squeezenet1_1", "resnet18"])
def test_imagenet_model_from_a_fake_torch_home(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _offline(monkeypatch)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    torch.manual_seed(1)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    ckpt = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    ckpt.parent.mkdir(parents=True)
    torch.save(state, ckpt)
    m = load_model(name)
    assert not m.training and all(not p.requires_grad for p in m.parameters())
    assert len(m.class_names) == 1000 and m.class_names[0] == "tench" and m.input_size == 224
    key = next(iter(state))
    torch.testing.assert_close(m.state_dict()[key], state[key], rtol=0, atol=0)  # it really loaded our file
    # it takes pixels: normalize first, and it is the torchvision network fed (x - mean) / std
    assert list(m._modules)[0] == "normalize" and m.layer_names[0] == "normalize"
    assert set(m.state_dict()) == set(state)                                     # no new entries in state_dict
    raw = torchvision.models.get_model(name, weights=None).eval()
    raw.load_state_dict(state)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        close(m(x), raw((x - _MEAN) / _STD))
    assert models.mean_colour(m) == pytest.approx(models.IMAGENET_MEAN)


def test_imagenet_model_offline_without_cache_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _offline(monkeypatch)
    with pytest.raises(ModelUnavailableError) as e:
        load_model("vgg16")
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg


def test_course_model_runs_channels_last_with_the_same_outputs(course_model):
    conv = course_model.features.conv1_1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    plain = copy.deepcopy(course_model).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        close(course_model(x), plain(x), rtol=1e-4, floor=1e-5)  # other memory formats: other kernels


# ---------------------------------------------------------------- issue 15: predictions in eval mode


def _dropout_model():
    """A model whose train-mode answers are random: dropout before the classifier."""
    from course_lib.models import prepare_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.9), nn.Linear(3 * 8 * 8, 4))
    return prepare_model(net, ["a", "b", "c", "d"], 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), None)


class _Photos:
    def __init__(self, n=5):
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        self.items = [(Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)), i % 4) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_classify_and_predict_dataset_run_in_eval_mode_and_restore_each_flag():
    net = _dropout_model().train()
    net[2].eval()                                  # a submodule with a mode of its own
    flags = [m.training for m in net.modules()]
    photos = _Photos()
    answers = [predict.classify(net, photos[0][0], k=4) for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]  # dropout off: the same answer every call
    logits = [predict.predict_dataset(net, photos, batch_size=2, progress=False)[0] for _ in range(2)]
    assert torch.equal(logits[0], logits[1])
    assert [m.training for m in net.modules()] == flags
    net.eval()
    assert predict.classify(net, photos[0][0], k=4) == answers[0]
    close(predict.predict_dataset(net, photos, progress=False)[0], logits[0])  # (another batch size)


def test_classify_and_predict_dataset_check_their_numbers():
    import numpy as np

    net, photos = _dropout_model(), _Photos(2)
    assert len(predict.classify(net, photos[0][0], k=np.int64(2))) == 2
    assert len(predict.classify(net, photos[0][0], k=99)) == 4
    with pytest.raises(ValueError, match="k must be an int >= 1, got 0"):
        predict.classify(net, photos[0][0], k=0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        predict.predict_dataset(net, photos, batch_size=0, progress=False)


# ---------------------------------------------------------------- issue 17: lecture names of every model

@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_1", "alexnet", "vgg16"])
def test_feature_layers_of_every_imagenet_model_are_feature_maps_in_depth_order(name):
    from course_lib.layers import feature_layers, last_conv_stage, lecture_names

    net = torchvision.models.get_model(name).eval()
    names = lecture_names(net)
    paths = [p for n, p in names.items() if n != "fc"]         # "fc" is an alias of the last linear layer
    assert len(set(paths)) == len(paths)                      # no two names for one module
    layers = feature_layers(net)
    order = []
    with torch.no_grad(), record_activations(net, layers) as acts:
        hooks = [get_layer(net, n).register_forward_hook(lambda *a, n=n: order.append(n)) for n in layers]
        net(torch.rand(1, 3, 96, 96))
        for h in hooks:
            h.remove()
    assert order == layers                                    # each runs once, in the order listed
    assert all(acts[n].ndim == 4 for n in layers)
    expected = {"resnet18": "layer4", "squeezenet1_1": "fire9", "alexnet": "relu5", "vgg16": "relu5_3"}
    assert last_conv_stage(net) == expected[name]
    from course_lib.layers import conv_stages, unit_layers
    assert conv_stages(net) == [n for n in layers if not n.startswith("pool")]
    # units: the named convolutions where names cover them all, else the stages (blocks are not one chain)
    first_units = {"resnet18": "relu1", "squeezenet1_1": "relu1", "alexnet": "conv1", "vgg16": "conv1_1"}
    assert unit_layers(net)[0] == first_units[name]
    assert unit_layers(net) == (conv_stages(net) if name in ("resnet18", "squeezenet1_1") else
                                [n for n in names if n.startswith("conv")])
    assert acts[layers[-1]].shape[-1] < acts[layers[0]].shape[-1]  # deeper: coarser maps


def test_feature_layers_of_an_unknown_model_is_a_clear_error():
    from course_lib.layers import feature_layers

    with pytest.raises(ValueError, match="no known feature layers"):
        feature_layers(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_record_activations_takes_a_reused_modules_first_call_in_each_pass():
    """A module applied twice in one forward pass (ResNet's BasicBlock.relu) is recorded at its first call;
    the next pass through the model records afresh."""
    relu = torch.nn.ReLU()

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = relu

        def forward(self, x):
            return self.relu(self.relu(x) - 1.0)

    net = Twice()
    x = torch.tensor([[-1.0, 0.5, 3.0]])
    with record_activations(net, ["relu"]) as acts:
        net(x)
        torch.testing.assert_close(acts["relu"], torch.relu(x))          # not relu(relu(x) - 1)
        net(2 * x)
        torch.testing.assert_close(acts["relu"], torch.relu(2 * x))      # the second pass, afresh


def test_a_model_with_normalization_pickles_even_into_a_fresh_process(tmp_path):
    """The exercises' grader sends models pickled to another process: the pixel-taking subclass (not importable
    by its name, its base's) is made afresh there from its base class."""
    import pickle
    import subprocess
    import sys

    torch.manual_seed(0)
    net = models.with_normalization(torchvision.models.resnet18(weights=None).eval(), (0.25, 0.5, 0.75),
                                    (0.5, 0.25, 0.125))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    back = pickle.loads(pickle.dumps(net))
    assert type(back) is type(net) and type(back).__name__ == "ResNet" and list(back._modules)[0] == "normalize"
    with torch.no_grad():
        assert torch.equal(back(x), want)
    assert type(copy.deepcopy(net)) is type(net)
    torch.save({"net": net, "x": x, "want": want}, tmp_path / "net.pt")
    code = ("import torch; d = torch.load(r'%s', weights_only=False); net = d['net']; "
            "assert type(net).__name__ == 'ResNet' and list(net._modules)[0] == 'normalize'; "
            "assert torch.equal(net.normalize.mean.flatten(), torch.tensor([0.25, 0.5, 0.75])); "
            "torch.testing.assert_close(net(d['x']), d['want'], rtol=1e-5, atol=1e-6); print('ok')" % (tmp_path / "net.pt"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# ---------------------------------------------------------------- issue 26: one table of architecture facts

@pytest.mark.parametrize("name", ["course", "vgg11", "vgg16", "alexnet", "resnet18", "squeezenet1_1"])
def test_every_family_s_facts_are_real_layers(name, tiny_net):
    """Each fact of the table names real layers of a random-weight model: the style and content layers and
    the stages give feature maps, the head and the classifier come after them, receptive fields reach the
    last stage through the family's chain."""
    from course_lib.neighbors import classifier_layer
    from course_lib.patches import receptive_field

    net = tiny_net if name == "course" else models.with_normalization(torchvision.models.get_model(name, weights=None))
    family = layers.architecture(net)
    assert family is layers.ARCHITECTURES[type(net).__name__]
    names = list(lecture_names(net))
    stages, head = layers.conv_stages(net), names.index(family.head)
    maps = [*family.style_layers, family.content_layer, *layers.feature_layers(net)]
    assert all(names.index(n) < head for n in maps + stages) and names.index(family.classifier) >= head
    with torch.no_grad(), record_activations(net, maps + [family.head, family.classifier]) as acts:
        scores = net(torch.rand(1, 3, 64, 64))
    assert all(acts[n].ndim == 4 for n in maps)
    assert classifier_layer(net) == family.classifier and acts[family.classifier].shape[1] == scores.shape[1]
    assert stages and all(n.startswith(family.stages) for n in stages)
    assert receptive_field(net, stages[-1]).size > receptive_field(net, stages[0]).size
    expected_units = layers.conv_layers(net) if family.plain_chain else stages
    assert layers.unit_layers(net) == expected_units and set(expected_units) <= set(names)


def test_a_subclass_finds_its_family_and_an_unknown_family_gets_a_clear_error():
    class MyVGG(torchvision.models.VGG):
        pass

    vgg = MyVGG(torchvision.models.vgg.make_layers([8, "M", 8, "M"]), num_classes=3)
    assert layers.architecture(vgg) is layers.ARCHITECTURES["VGG"] and "conv2_1" in lecture_names(vgg)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3))
    assert layers.architecture(seq, None) is None and lecture_names(seq) == {}
    with pytest.raises(ValueError, match=r"no architecture facts for a Sequential: .*CourseNet, VGG.*\. Either pass "
                                         r"layer names .*yourself, or .*course_lib\.layers\.ARCHITECTURES"):
        layers.architecture(seq)


def test_a_new_family_is_one_entry(monkeypatch):
    """Describe a new family once, in ARCHITECTURES: every method then finds its layers."""
    from course_lib.cam import default_cam_layer
    from course_lib.neighbors import classifier_layer
    from course_lib.patches import receptive_field
    from course_lib.style import default_layers

    class TwoConvs(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3), nn.ReLU())
            self.gap, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.gap(self.body(x)), 1))

    def names(model):
        return {"conv1": "body.0", "relu1": "body.1", "pool1": "body.2", "conv2": "body.3", "relu2": "body.4",
                "gap": "gap", "fc": "fc"}

    net = TwoConvs()
    with pytest.raises(ValueError, match="no known feature layers for a TwoConvs"):
        layers.feature_layers(net)
    monkeypatch.setitem(layers.ARCHITECTURES, "TwoConvs", layers.Architecture(
        names, stages=("relu",), head="gap", classifier="fc", plain_chain=True, style_layers=("relu1", "relu2"),
        content_layer="relu2", chain="body"))
    assert layers.feature_layers(net) == ["relu1", "pool1", "relu2"] and layers.unit_layers(net) == ["conv1", "conv2"]
    assert default_cam_layer(net) == "relu2" and classifier_layer(net) == "fc"
    assert default_layers(net) == (("relu1", "relu2"), "relu2")
    assert receptive_field(net, "relu2").size == 3 + 1 + 2 * 2     # 3x3 conv, 2x2/2 pool, 3x3 conv at jump 2
    assert get_layer(net, "conv2") is net.body[3]
