"""Occlusion saliency (course_lib.occlusion), checked against captum's ``Occlusion``."""
import numpy as np
import pytest
import torch
from captum.attr import Occlusion

from conftest import close
from course_lib.imaging import preprocess
from course_lib.models import mean_colour
from course_lib.occlusion import number_of_windows, occlusion, show_occlusion, window_starts


def captum_occlusion(model, x, target, patch, stride, fill, score, per_eval=16):
    """The oracle: captum with a forward function giving probabilities or logits."""
    if fill == "mean":              # the model's mean colour, as pixels: what the network sees as 0
        baselines = torch.tensor(mean_colour(model), dtype=x.dtype).view(1, 3, 1, 1).expand_as(x).clone()
    elif fill == "black":
        baselines = 0.0
    else:
        baselines = float(fill)

    def forward(z):
        return model(z).softmax(1) if score == "prob" else model(z)

    attr = Occlusion(forward).attribute(x, sliding_window_shapes=(3, patch, patch), strides=(3, stride, stride),
                                        baselines=baselines, target=target, perturbations_per_eval=per_eval)
    assert torch.equal(attr, attr[:, :1].expand_as(attr))  # the same for the three colour channels
    return attr[:, 0]


def decisive(net):
    """``net`` with its biases 0 and its classifier x500: occluding a window then moves the scores far more than
    their rounding. (A random net's probabilities hardly move: maps of 1e-5, where a floor safe from rounding
    would let a 1% error pass.)"""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                m.bias.zero_()
        net.fc.weight.mul_(500)
    return net


def score_scale(model, x, score):
    """The size of the scores whose differences an occlusion map holds: their rounding is the map's."""
    with torch.no_grad():
        s = model(x)
    return float((s.softmax(1) if score == "prob" else s).abs().max())


@pytest.fixture(scope="module")
def photos(val_set):
    """Two validation photos (a tench and a French horn)."""
    return [val_set[i][0] for i in (0, 2000)]


@pytest.mark.parametrize("patch,stride,fill,score", [
    (16, 8, "mean", "prob"),     # (128 - 16) / 8 = 14: the windows tile exactly
    (30, 12, "black", "logit"),  # (128 - 30) / 12 = 8.2: the last window hangs over the edge
    (24, 10, "mean", "prob"),    # (128 - 24) / 10 = 10.4
])
def test_matches_captum_on_course_model(course_model, photos, patch, stride, fill, score):
    x = preprocess(photos[1], course_model)
    target = int(course_model(x).argmax())
    ours = occlusion(course_model, x, target, patch=patch, stride=stride, fill=fill, score=score, progress=False)
    ref = captum_occlusion(course_model, x, target, patch, stride, fill, score)
    assert ours.shape == (1, 128, 128)
    assert ref.abs().max() > 1e-3  # a real signal, not two maps of zeros
    close(ours, ref, rtol=1e-4, floor=1e-5, scale=score_scale(course_model, x, score))  # other batches than captum's


@pytest.mark.parametrize("patch,stride,fill,score,size", [
    (9, 4, "mean", "prob", 64),     # 55 / 4: cropped last window
    (10, 3, "black", "logit", 64),  # 54 / 3 = 18 exactly
    (7, 7, 0.25, "logit", 64),      # stride = patch, a number (a grey level) as fill
    (5, 1, "mean", "prob", 24),     # stride 1
    (24, 5, "black", "prob", 24),   # the patch covers the whole image: one window
    (11, 6, "mean", "prob", 37),    # odd image size
])
def test_matches_captum_on_tiny_net(tiny_net, patch, stride, fill, score, size):
    tiny_net = decisive(tiny_net)
    torch.manual_seed(3)
    x = torch.rand(2, 3, size, size)
    targets = [4, 7]
    ours = occlusion(tiny_net, x, targets, patch=patch, stride=stride, fill=fill, score=score, batch_size=16, progress=False)
    ref = captum_occlusion(tiny_net, x, torch.tensor(targets), patch, stride, fill, score)
    assert ref.abs().max() > 0
    close(ours, ref, rtol=1e-4, floor=1e-5, scale=score_scale(tiny_net, x, score))  # other batches than captum's


def test_window_starts_like_captum():
    assert window_starts(128, 16, 8) == list(range(0, 113, 8))
    assert window_starts(128, 30, 12) == list(range(0, 97, 12)) + [108]  # last one: 108..138 cropped to 128
    assert window_starts(20, 20, 7) == [0]
    for size, patch, stride in [(128, 16, 8), (64, 9, 4), (37, 11, 6), (24, 5, 1)]:
        starts = window_starts(size, patch, stride)
        assert starts[-1] + patch >= size > starts[-2] + patch  # reaches the edge, no spare window
    assert number_of_windows(128, 16, 8) == 225


def test_batch_size_and_default_target(tiny_net):
    torch.manual_seed(0)
    x = torch.rand(1, 3, 40, 40)
    a = occlusion(tiny_net, x, None, patch=8, stride=4, batch_size=1, progress=False)
    b = occlusion(tiny_net, x, int(tiny_net(x).argmax()), patch=8, stride=4, batch_size=7, progress=False)
    c = occlusion(tiny_net, x[0], None, patch=8, stride=4, batch_size=1000, progress=False)
    scale = score_scale(tiny_net, x, "prob")  # other batch sizes: other kernels
    close(a, b, rtol=1e-5, floor=1e-6, scale=scale)
    close(a, c, rtol=1e-5, floor=1e-6, scale=scale)


def test_leaves_model_and_input_alone(tiny_net):
    tiny_net.train()
    x = torch.rand(1, 3, 32, 32)
    x0 = x.clone()
    occlusion(tiny_net, x, 1, patch=8, stride=4, progress=False)
    assert torch.equal(x, x0)
    assert all(m.training for m in tiny_net.modules())
    assert all(p.grad is None for p in tiny_net.parameters())


def test_pil_image_in(course_model, photos):
    ours = occlusion(course_model, photos[0], 0, patch=32, stride=32, progress=False)
    ref = occlusion(course_model, preprocess(photos[0], course_model), 0, patch=32, stride=32, progress=False)
    assert torch.equal(ours, ref)
    fig = show_occlusion(photos[0].resize((128, 128)), ours[0])
    assert len(fig.axes) == 3  # signed map, its colour bar, overlay


def test_clear_errors(tiny_net):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="larger than the 32x32 image"):
        occlusion(tiny_net, x, 0, patch=33, stride=8)
    with pytest.raises(ValueError, match="greyscale"):
        occlusion(tiny_net, torch.rand(1, 1, 32, 32), 0)
    with pytest.raises(ValueError, match="RGBA"):
        occlusion(tiny_net, torch.rand(1, 4, 32, 32), 0)
    from PIL import Image
    for mode in ("L", "RGBA"):
        with pytest.raises(ValueError, match="RGB"):
            occlusion(tiny_net, Image.new(mode, (32, 32)), 0)
    with pytest.raises(ValueError, match="shape"):
        occlusion(tiny_net, torch.rand(32, 32), 0)
    with pytest.raises(TypeError, match="float"):
        occlusion(tiny_net, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), 0)
    with pytest.raises(TypeError, match="tensor"):
        occlusion(tiny_net, [[0.0]], 0)
    with pytest.raises(ValueError, match="stride 9 is larger than the patch 8"):
        occlusion(tiny_net, x, 0, patch=8, stride=9)
    for bad in [dict(patch=0), dict(stride=0), dict(batch_size=0)]:
        with pytest.raises(ValueError, match="must be an int >= 1"):
            occlusion(tiny_net, x, 0, **bad)
    with pytest.raises(TypeError, match="patch must be an int, got float 2.5"):   # a float is the wrong kind
        occlusion(tiny_net, x, 0, patch=2.5)
    with pytest.raises(ValueError, match="fill"):
        occlusion(tiny_net, x, 0, fill="grey")
    with pytest.raises(ValueError, match="score"):
        occlusion(tiny_net, x, 0, score="loss")
    with pytest.raises(ValueError, match="0..9"):
        occlusion(tiny_net, x, 10)
    with pytest.raises(ValueError, match="2 targets for 1 images"):
        occlusion(tiny_net, x, [1, 2])


# --------------------------------------------------------------------------- issue 15: the shared checks


def test_targets_are_class_indices_not_anything_int_accepts(tiny_net):
    x = torch.rand(2, 3, 32, 32)
    for bad in (2.7, True, "3", [1, 2.0]):
        with pytest.raises(TypeError, match=r"target must be a class index \(an int\)"):
            occlusion(tiny_net, x, bad, patch=16, stride=16, progress=False)
    with pytest.raises(ValueError, match=r"target -1 is out of range: the model has 10 classes .*negative"):
        occlusion(tiny_net, x, -1, patch=16, stride=16, progress=False)
    one = occlusion(tiny_net, x, np.int64(3), patch=16, stride=16, progress=False)
    assert torch.equal(one, occlusion(tiny_net, x, torch.tensor([3, 3]), patch=16, stride=16, progress=False))


def test_float64_nan_and_empty_images_get_clear_errors(tiny_net):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(TypeError, match=r"float64 but the model's weights are torch.float32: .*x\.float\(\)"):
        occlusion(tiny_net, x.double(), 0, progress=False)
    x[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        occlusion(tiny_net, x, 0, progress=False)
    with pytest.raises(ValueError, match="no images|empty"):
        occlusion(tiny_net, torch.zeros(0, 3, 32, 32), 0, progress=False)


def test_numpy_numbers_are_numbers(tiny_net):
    x = torch.rand(1, 3, 32, 32)
    ref = occlusion(tiny_net, x, 0, patch=16, stride=16, fill=0.5, progress=False)
    assert torch.equal(occlusion(tiny_net, x, 0, patch=np.int64(16), stride=np.int32(16), fill=np.float32(0.5),
                                 progress=False), ref)
    with pytest.raises(ValueError, match="finite"):
        occlusion(tiny_net, x, 0, fill=float("nan"), progress=False)


# --------------------------------------------------------------------------- pixels: the one image space


def test_a_normalised_image_is_refused_saying_to_pass_pixels(tiny_net):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\].*normalised by hand.*pass the pixels instead"):
        occlusion(tiny_net, tiny_net.normalize(x), 0, patch=16, stride=16, progress=False)


@pytest.mark.parametrize("bad", [-1.5, 1.5, 255])
def test_a_numeric_fill_is_a_grey_level_in_0_1(tiny_net, bad):
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"fill \(a pixel value in \[0, 1\]"):
        occlusion(tiny_net, x, 0, patch=16, stride=16, fill=bad, progress=False)


def test_the_fills_are_pixel_colours(tiny_net):
    """"mean" is the model's own mean colour (what its Normalize maps to 0), "black" is pixel 0; both as the
    explicit pixel images they stand for, each window filled by hand."""
    from course_lib.models import CourseNet, prepare_model

    torch.manual_seed(1)
    mean = (0.25, 0.5, 0.75)                              # not ImageNet's: the fill must follow the model
    net = prepare_model(CourseNet(blocks=((8,), (8,)), mean=mean), [str(i) for i in range(10)], 16, mean,
                        (0.229, 0.224, 0.225), None)
    net = decisive(net)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    for fill, colour in (("mean", mean), ("black", (0.0, 0.0, 0.0)), (0.5, (0.5, 0.5, 0.5))):
        ours = occlusion(net, x, 3, patch=8, stride=8, fill=fill, score="logit", progress=False)[0]
        with torch.no_grad():
            base = net(x)[0, 3]
            expected = torch.zeros(16, 16)
            for t in (0, 8):
                for l in (0, 8):
                    y = x.clone()
                    y[0, :, t:t + 8, l:l + 8] = torch.tensor(colour).view(3, 1, 1)
                    expected[t:t + 8, l:l + 8] = base - net(y)[0, 3]
        assert expected.abs().max() > 0
        close(ours, expected, rtol=1e-5, floor=1e-5, scale=score_scale(net, x, "logit"))
