"""Receptive fields and maximally activating patches (course_lib.patches).

The receptive-field arithmetic is checked against an empirical receptive field: the
non-zero support of d unit / d input, computed by autograd on a copy of the network's
geometry in which nothing can cancel or block a gradient (one-channel convolutions of
weight 1, average instead of max pooling, identity instead of ReLU, input of ones).
VGG16 and AlexNet are also checked against the receptive-field sizes published for them.
"""
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from conftest import close
from course_lib.layers import lecture_names
from course_lib.models import BlurMaxPool2d
from course_lib.patches import (ActivationScan, ReceptiveField, crop_patch, draw_receptive_fields,
                                receptive_field, receptive_fields, scan_activations, show_top_patches,
                                top_patches, unit_gradient)


# --------------------------------------------------------------------------- the oracle

def _geometry_clone(model, layer):
    """One-channel copy of the chain input -> layer where every path carries a positive gradient."""
    names = list(receptive_fields(model, layer))
    seq = model if isinstance(model, nn.Sequential) else model.features
    out = []
    for m, _ in zip(seq.children(), names):
        if isinstance(m, nn.Conv2d):
            c = nn.Conv2d(1, 1, m.kernel_size, m.stride, m.padding, m.dilation, bias=False)
            nn.init.ones_(c.weight)
            out.append(c)
        elif isinstance(m, nn.MaxPool2d):
            assert m.dilation in (1, (1, 1))
            out.append(nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.AvgPool2d):
            out.append(nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, BlurMaxPool2d):  # dense 2x2 max, then a 3x3 blur at stride 2, zero padding 1
            blur = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False)
            nn.init.ones_(blur.weight)
            out.append(nn.Sequential(nn.AvgPool2d(2, 1), blur))
        else:
            out.append(nn.Identity())
    return nn.Sequential(*out)


def empirical_box(model, layer, size, i, j):
    """(top, left, bottom, right) of the non-zero support of d unit(i, j) / d input."""
    net = _geometry_clone(model, layer)
    x = torch.ones(1, 1, size, size, requires_grad=True)
    out = net(x)
    (g,) = torch.autograd.grad(out[0, 0, i, j], x)
    rows = g[0, 0].abs().sum(1).nonzero().flatten()
    cols = g[0, 0].abs().sum(0).nonzero().flatten()
    # the support is a full rectangle (dilated kernels leave holes: only its extent counts then)
    if not any(getattr(m, "dilation", 1) not in (1, (1, 1)) for m in net):
        assert (g[0, 0, rows.min():rows.max() + 1, cols.min():cols.max() + 1] > 0).all()
    return rows.min().item(), cols.min().item(), rows.max().item() + 1, cols.max().item() + 1, out.shape[-2:]


def _check_layer(model, layer, size, units, dilated=False):
    rf = receptive_field(model, layer)
    h, w = _geometry_clone(model, layer)(torch.zeros(1, 1, size, size)).shape[-2:]
    for i, j in units(h, w):
        got = rf.box(i, j, size)
        want = empirical_box(model, layer, size, i, j)[:4]
        inside = rf.window(i)[0] >= 0 and rf.window(j)[0] >= 0 and rf.window(i)[1] <= size and rf.window(j)[1] <= size
        if dilated and not inside:
            # a dilated kernel samples every d-th pixel of its span: at a border the pixels it
            # reads start inside the clipped span
            assert got[:2] <= want[:2] and got[2:] >= want[2:], (layer, (i, j), got, want)
        else:
            assert got == want, (layer, (i, j), got, want)


def _units(h, w):
    """Corners (border units), the centre and an off-centre unit."""
    return {(0, 0), (h - 1, w - 1), (0, w - 1), (h - 1, 0), (h // 2, w // 2), (min(1, h - 1), min(2, w - 1))}


@pytest.mark.parametrize("layer", ["conv1_1", "relu1_1", "pool1", "conv2_1", "pool2", "relu3_1", "conv3_2",
                                   "pool3", "conv4_1", "conv4_2", "relu4_2"])
def test_receptive_field_matches_gradient_support_course_architecture(tiny_net, layer):
    _check_layer(tiny_net, layer, 128, _units)
    _check_layer(tiny_net, layer, 64, _units)  # tiny_net's own input size: units see past both borders
    # the "v2" variant: an 8x8/2 first conv and anti-aliased pools (a 4x4/2 window each)
    from course_lib.models import CourseNet
    v2 = CourseNet(blocks=((8,), (8,), (8, 8), (16, 16)), conv1=(8, 2, 3), pool="blur").eval()
    _check_layer(v2, layer, 128, _units)


def _meta(name):
    with torch.device("meta"):
        return getattr(torchvision.models, name)()


@pytest.mark.parametrize("name,layer", [("vgg16", "conv1_2"), ("vgg16", "pool2"), ("vgg16", "conv4_3"),
                                        ("vgg16", "conv5_3"), ("vgg16", "pool5"),
                                        ("alexnet", "conv1"), ("alexnet", "pool2"), ("alexnet", "conv5"),
                                        ("alexnet", "pool5")])
def test_receptive_field_matches_gradient_support_imagenet_models(name, layer):
    _check_layer(_meta(name), layer, 224, _units)


def test_published_sizes_vgg16_alexnet():
    # Araujo, Norris & Sim, "Computing receptive fields of CNNs", Distill 2019: VGG16 212, AlexNet 195
    vgg, alex = _meta("vgg16"), _meta("alexnet")
    assert (receptive_field(vgg, "conv5_3").size, receptive_field(vgg, "conv5_3").jump) == (196, 16)
    assert (receptive_field(vgg, "pool5").size, receptive_field(vgg, "pool5").jump) == (212, 32)
    assert (receptive_field(alex, "conv5").size, receptive_field(alex, "pool5").size) == (163, 195)
    assert receptive_field(alex, "pool5").jump == 32


def test_course_model_and_module_paths(course_model):
    rf = receptive_field(course_model, "conv4_2")
    assert rf == receptive_field(course_model, "features.conv4_2") == receptive_field(course_model, "relu4_2")
    assert (rf.size, rf.jump) == (123, 16)  # 5x5/2, 2x2 pools, 3x3 convs: see CourseNet's docstring
    assert list(receptive_fields(course_model, "pool1")) == ["conv1_1", "relu1_1", "pool1"]
    # the last unit's window leaves the 128 px image and is clipped
    assert rf.box(7, 7, 128) == (rf.start + 7 * 16, rf.start + 7 * 16, 128, 128)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_sequential_model_with_dilation_and_same_padding():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=2, dilation=2), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                        nn.Conv2d(1, 1, 4, padding="same"), nn.Conv2d(1, 1, 3, stride=3), nn.AvgPool2d(2))
    for layer in ["0", "2", "3", "4", "5"]:
        _check_layer(net, layer, 40, lambda h, w: _units(h, w) | {(h // 2 - 1, w // 2 + 1)}, dilated=True)


def _up_to(model, layer):
    """The course architecture from the pixels up to ``layer``: its normalize, then ``features`` up to the layer."""
    names = [n for n, _ in model.features.named_children()]
    return nn.Sequential(model.normalize, model.features[: names.index(layer) + 1])


def test_gradient_support_of_the_real_network_lies_inside_the_box(tiny_net):
    """With max-pooling and ReLU the gradient reaches only part of the window, never outside it;
    and pixels outside the window cannot change the unit at all."""
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64)
    for layer in ["conv2_1", "pool3", "conv4_2"]:
        rf = receptive_field(tiny_net, layer)
        n = _up_to(tiny_net, layer)
        with torch.no_grad():
            a = n(x)
        h = a.shape[-1]
        for i, j in [(0, 0), (h - 1, 1), (h // 2, h // 2)]:
            channel = int(a[0, :, i, j].argmax())       # a unit that is on (random weights leave many off)
            g = unit_gradient(tiny_net, x, layer=layer, channel=channel, position=(i, j))
            top, left, bottom, right = rf.box(i, j, 64)
            inside = torch.zeros(64, 64, dtype=torch.bool)
            inside[top:bottom, left:right] = True
            assert g.abs().sum() > 0 and (g[:, ~inside] == 0).all()
            noisy = torch.where(inside, x, torch.rand_like(x))          # other pixels outside the window
            with torch.no_grad():
                assert n(noisy.clone())[0, channel, i, j] == n(x.clone())[0, channel, i, j]
                assert n(noisy.clone())[0, channel, i, j] != n(noisy.clone() + 0.5 * inside)[0, channel, i, j]


def test_unit_gradient_leaves_model_and_input_alone(tiny_net):
    tiny_net.train()
    x = torch.rand(1, 3, 64, 64)
    x0 = x.clone()
    g = unit_gradient(tiny_net, x, layer="conv3_1", channel=0, position=(2, 2))
    assert g.shape == (3, 64, 64)
    assert tiny_net.training and all(m.training for m in tiny_net.modules())
    assert torch.equal(x, x0) and not x.requires_grad
    assert all(p.grad is None for p in tiny_net.parameters())
    with pytest.raises(ValueError, match="out of range"):
        unit_gradient(tiny_net, x, layer="conv3_1", channel=8, position=(0, 0))
    with pytest.raises(ValueError, match="outside"):
        unit_gradient(tiny_net, x, layer="conv3_1", channel=0, position=(8, 0))
    with pytest.raises(ValueError, match="RGBA"):
        unit_gradient(tiny_net, torch.rand(1, 4, 64, 64), layer="conv3_1", channel=0, position=(0, 0))


def test_clear_errors(course_model):
    with pytest.raises(KeyError, match="conv9_9"):
        receptive_field(course_model, "conv9_9")
    for layer in ["gap", "fc"]:
        with pytest.raises(ValueError, match="whole image"):
            receptive_field(course_model, layer)
    with pytest.raises(ValueError, match="whole image"):
        receptive_field(_meta("vgg16"), "fc7")
    resnet = _meta("resnet18")
    for layer in ["layer1.0.conv1", "layer2.1"]:                     # inside a stage
        with pytest.raises(ValueError, match="sequential"):
            receptive_field(resnet, layer)
    with pytest.raises(ValueError, match="whole image"):
        receptive_field(resnet, "fc")
    with pytest.raises(ValueError, match="sequential"):
        receptive_field(_meta("squeezenet1_1"), "features.3.squeeze")  # inside a Fire module
    with pytest.raises(ValueError, match="knows conv"):
        receptive_field(nn.Sequential(nn.Conv2d(3, 3, 3), nn.Upsample(scale_factor=2)), "1")
    with pytest.raises(ValueError, match="non-square"):
        receptive_field(nn.Sequential(nn.Conv2d(3, 3, (3, 5))), "0")
    with pytest.raises(ValueError, match="reflect"):
        receptive_field(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")), "0")


def test_nearest_unit_is_the_unit_centred_nearest():
    for rf, shape in [(ReceptiveField(5, 2, -2), (64, 64)), (ReceptiveField(123, 16, -54), (8, 8)),
                      (ReceptiveField(7, 4, -3), (5, 9))]:
        centres = [[rf.center(i), rf.center(j)] for i in range(shape[0]) for j in range(shape[1])]
        for y, x in [(0, 0), (127, 127), (63.2, 10.7), (40, 90), (-5, 300)]:
            i, j = rf.nearest_unit(y, x, shape)
            d = [(cy - y) ** 2 + (cx - x) ** 2 for cy, cx in centres]
            assert d[i * shape[1] + j] == pytest.approx(min(d))
    assert ReceptiveField(5, 2, -2).center(3) == 6


# --------------------------------------------------------------------------- crops

def test_crop_patch_pads_outside_the_image():
    image = np.random.default_rng(0).random((20, 20, 3))
    rf = ReceptiveField(size=7, jump=4, start=-2)
    assert rf.window(5) == (18, 25)
    assert rf.box(5, 5, (20, 30)) == (18, 18, 20, 25) and rf.box(5, 5, (30, 20)) == (18, 18, 25, 20)
    p = crop_patch(image, rf, 0, 0, pad_value=-1)
    assert p.shape == (7, 7, 3)
    np.testing.assert_array_equal(p[2:, 2:], image[:5, :5])
    assert (p[:2] == -1).all() and (p[:, :2] == -1).all()
    p = crop_patch(image, rf, 2, 5, pad_value=-1)  # rows 6..12, cols 18..24 -> clipped at 20
    np.testing.assert_array_equal(p[:, :2], image[6:13, 18:20])
    assert (p[:, 2:] == -1).all()
    np.testing.assert_array_equal(crop_patch(image, rf, 2, 2), image[6:13, 6:13])


# --------------------------------------------------------------------------- scans

class FakeImages:
    """A small data set of random RGB images, with ``samples`` like ImagenetteDataset."""

    def __init__(self, n=10, seed=0, size=80):
        rng = np.random.default_rng(seed)
        self.images = [Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)) for _ in range(n)]
        self.samples = [(f"/x/cls{i % 3}/img{seed}_{i}.jpg", i % 3) for i in range(n)]
        self.calls = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.calls += 1
        return self.images[i], self.samples[i][1]


def _brute_force_maps(model, data, layer, indices):
    """Every image's full activation map, computed by running the prefix of features alone."""
    from course_lib.imaging import preprocess

    prefix = _up_to(model, layer)                       # pixels -> normalize -> features up to the layer
    with torch.no_grad():
        return torch.cat([prefix(preprocess(data[i][0], model)) for i in indices])


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    return tmp_path / "cache"


def test_scan_matches_brute_force(tiny_net, cache_dir):
    with torch.no_grad():
        tiny_net.features.conv2_1.bias[0] = -50  # channel 0 never fires: a post-ReLU value would read 0
    data = FakeImages(12)
    indices = [0, 2, 3, 5, 7, 8, 9, 11]
    scans = scan_activations(tiny_net, data, ["conv2_1", "relu3_2", "pool3"], indices, batch_size=3, progress=False)
    for layer, scan in scans.items():
        maps = _brute_force_maps(tiny_net, data, layer, indices)
        assert isinstance(scan, ActivationScan) and scan.indices == indices
        assert scan.map_size == tuple(maps.shape[-2:]) and scan.channels == maps.shape[1]
        flat = maps.flatten(2)
        # batches of 3 against single images: other kernels, other rounding (channel 0 of conv2_1 is near -50)
        close(scan.values, flat.amax(2), rtol=1e-5, floor=1e-6)
        # the stored position holds the maximum
        at = flat.gather(2, scan.positions.long().unsqueeze(2)).squeeze(2)
        close(at, flat.amax(2), rtol=1e-5, floor=1e-6)
        # top-k: the k images where the channel's maximum is largest, in decreasing order (checked by
        # value: which of two almost equal maxima comes first may depend on rounding)
        for c in [0, 1, scan.channels - 1]:
            top = scan.top(c, 4)
            best = flat[:, c].amax(1)
            assert len({t[0] for t in top}) == 4
            scale = float(flat.abs().max())  # the layer's: a channel's maxima may all be (almost) 0
            close([t[1] for t in top], best.sort(descending=True).values[:4], rtol=1e-5, floor=1e-6, scale=scale)
            for index, value, row, col in top:
                n = indices.index(index)
                close(maps[n, c, row, col], value, rtol=1e-5, floor=1e-6, scale=scale)
                close(best[n], value, rtol=1e-5, floor=1e-6, scale=scale)
    assert (scans["conv2_1"].values[:, 0] < 0).all()


def test_scan_is_cached_per_model_layer_and_images(tiny_net, cache_dir):
    data = FakeImages(6)
    first = scan_activations(tiny_net, data, ["conv1_1", "conv3_1"], batch_size=4, progress=False)
    assert len(list(cache_dir.glob("scan_*.pt"))) == 2
    calls = data.calls
    again = scan_activations(tiny_net, data, "conv3_1", progress=False)["conv3_1"]
    assert data.calls == calls  # read from disk: no image was loaded
    assert torch.equal(again.values, first["conv3_1"].values) and torch.equal(again.positions, first["conv3_1"].positions)
    assert again.receptive_field == receptive_field(tiny_net, "conv3_1")
    # other images, other weights, or no caching: a fresh scan
    scan_activations(tiny_net, data, "conv3_1", indices=[0, 1], progress=False)
    assert data.calls == calls + 2
    with torch.no_grad():
        tiny_net.features.conv1_1.weight[0, 0, 0, 0] += 1
    changed = scan_activations(tiny_net, data, "conv3_1", progress=False)["conv3_1"]
    assert data.calls == calls + 8 and not torch.equal(changed.values, again.values)
    scan_activations(tiny_net, data, "conv3_1", cache=False, progress=False)
    assert data.calls == calls + 14
    assert len(list(cache_dir.glob("scan_*.pt"))) == 4


def test_top_patches_are_the_windows_the_model_saw(tiny_net, cache_dir):
    from course_lib.imaging import preprocess, to_array

    data = FakeImages(5)
    scan = scan_activations(tiny_net, data, "conv3_2", progress=False)["conv3_2"]
    rf = scan.receptive_field
    patches = top_patches(scan, data, tiny_net, channel=2, k=3, pad_value=-1)
    assert len(patches) == 3
    for p, (index, _, row, col) in zip(patches, scan.top(2, 3)):
        image = to_array(preprocess(data[index][0], tiny_net))
        top, left, bottom, right = rf.box(row, col, 64)
        inside = p[p[..., 0] != -1].reshape(bottom - top, right - left, 3)
        np.testing.assert_allclose(inside, image[top:bottom, left:right])
    fig = show_top_patches(scan, data, tiny_net, [0, 1, 2], k=4)
    assert len(fig.axes) == 3
    fig = draw_receptive_fields(np.zeros((64, 64, 3)), rf, [(0, 0), (3, 3)])
    assert len(fig.axes[0].patches) == 2


def test_scan_errors(tiny_net, cache_dir):
    data = FakeImages(3)
    with pytest.raises(KeyError, match="conv7_1"):
        scan_activations(tiny_net, data, "conv7_1", progress=False)
    with pytest.raises(ValueError, match="whole image"):
        scan_activations(tiny_net, data, ["conv1_1", "fc"], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        scan_activations(tiny_net, data, "conv1_1", batch_size=0, progress=False)
    scan = scan_activations(tiny_net, data, "conv1_1", progress=False)["conv1_1"]
    with pytest.raises(ValueError, match="out of range"):
        scan.top(8)
    with pytest.raises(ValueError, match="out of range"):
        scan.top(-1)
    with pytest.raises(ValueError, match="k must"):
        scan.top(0, k=0)
    rgba = FakeImages(2)
    rgba.images = [im.convert("RGBA") for im in rgba.images]
    with pytest.raises(ValueError, match="RGB"):
        scan_activations(tiny_net, rgba, "conv1_1", cache=False, progress=False)


@pytest.mark.parametrize("name, layer, size", [("resnet18", "layer4", 435), ("resnet18", "layer2", 99),
                                              ("squeezenet1_1", "fire5", 63)])
def test_receptive_fields_through_residual_blocks_and_fire_modules(name, layer, size):
    """A ResNet block's window is its main path's, a Fire module's its 3x3 branch's (ResNet-18's
    layer4 sees 435 px, the published figure). Exact property: a unit's input gradient is zero
    outside its window and reaches the window's edges (random weights: nothing cancels)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model(name).eval()
    rf = receptive_field(net, layer)
    assert rf.size == size
    S = 160 if name == "resnet18" else 96
    x = torch.rand(1, 3, S, S, dtype=torch.float64)
    net = net.double()
    with torch.no_grad():
        from course_lib.layers import record_activations
        with record_activations(net, [layer]) as acts:
            net(x)
    h, w = acts[layer].shape[-2:]
    i, j = h // 2, w // 2
    channel = int(acts[layer][0, :, i, j].argmax())    # a unit that is on: its ReLUs pass gradients
    g = unit_gradient(net, x, layer=layer, channel=channel, position=(i, j)).abs().sum(0)
    top, left, bottom, right = rf.box(i, j, S)
    inside = torch.zeros_like(g, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    assert not g[~inside].any()                      # nothing outside the window
    rows, cols = torch.nonzero(g, as_tuple=True)
    # tight: the gradient reaches the window's first and last rows/columns (or the image border)
    assert rows.min() == top and rows.max() == bottom - 1 and cols.min() == left and cols.max() == right - 1


# --------------------------------------------------------------------------- pixels: the one image space


def test_unit_gradient_goes_through_the_models_normalize_layer(tiny_net):
    """d unit / d pixels, through normalize: the same as the gradient of the unit through the whole model's
    forward pass (saliency.gradient, which records the layer with a hook: another code path)."""
    from course_lib.saliency import gradient

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    for layer, (i, j) in [("conv1_1", (10, 12)), ("relu3_2", (3, 5)), ("conv4_2", (2, 1))]:
        with torch.no_grad():
            channel = int(_up_to(tiny_net, layer)(x)[0, :, i, j].argmax())     # a unit that is on
        ours = unit_gradient(tiny_net, x, layer=layer, channel=channel, position=(i, j))
        expected = gradient(tiny_net, x, layer=layer, channel=channel, position=(i, j))
        assert expected.abs().sum() > 0
        close(ours, expected, rtol=1e-5, floor=1e-6)


def test_unit_gradient_through_with_normalization_on_a_torchvision_model():
    from course_lib.models import IMAGENET_MEAN, IMAGENET_STD, with_normalization
    from course_lib.saliency import gradient

    torch.manual_seed(0)
    net = torchvision.models.vgg11(weights=None).eval()
    rf_before = receptive_field(net, "conv3_1")
    with_normalization(net, IMAGENET_MEAN, IMAGENET_STD)
    assert receptive_field(net, "conv3_1") == rf_before                 # normalize is pointwise
    assert "normalize" not in receptive_fields(net, "conv3_1")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ours = unit_gradient(net, x, layer="conv3_1", channel=5, position=(7, 8))
    close(ours, gradient(net, x, layer="conv3_1", channel=5, position=(7, 8)), rtol=1e-5, floor=1e-6)


def test_normalize_is_left_out_of_the_receptive_field_table(course_model, tiny_net):
    assert list(receptive_fields(course_model, "pool1")) == ["conv1_1", "relu1_1", "pool1"]
    assert receptive_field(course_model, "normalize") == ReceptiveField(1, 1, 0)   # one pixel in, one out
    r18 = torchvision.models.resnet18(weights=None)
    from course_lib.models import with_normalization
    with_normalization(r18)
    assert list(receptive_fields(r18, "layer1"))[0] == "conv1"
    assert receptive_field(r18, "layer4").size == 435


def test_unit_gradient_and_scans_refuse_a_normalised_image(tiny_net):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\].*normalised by hand.*pass the pixels instead"):
        unit_gradient(tiny_net, tiny_net.normalize(x), layer="conv3_1", channel=0, position=(2, 2))
