"""The shared input checks (course_lib.inputs): what they accept, what they refuse, and that every
refusal is the right exception with a message saying what to do (issue 15)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from course_lib.inputs import (check_channel, check_image, check_index, check_int, check_model_dtype, check_number,
                               check_pixel_range, check_pixels, check_target, check_targets, model_dtype)

# --------------------------------------------------------------------------- images (pixels in [0, 1])


@pytest.mark.parametrize("check", [check_image, check_pixels])
def test_one_image_with_or_without_the_batch_dimension(check):
    x = torch.rand(1, 3, 5, 7)
    out = check(x)
    assert out.shape == (1, 3, 5, 7) and out.data_ptr() == x.data_ptr()  # a view, never a copy
    assert check(x[0]).shape == (1, 3, 5, 7)


def test_batches():
    x = torch.rand(4, 3, 5, 5)
    assert check_image(x, batch=True) is x
    assert check_pixels(x) is x
    with pytest.raises(ValueError, match=r"single image \[1, 3, H, W\], got a batch of 4.*x\[i:i \+ 1\]"):
        check_image(x)


@pytest.mark.parametrize("check", [check_image, check_pixels])
@pytest.mark.parametrize("shape,match", [
    ((1, 1, 8, 8), r"3 channels \(RGB\).*greyscale or RGBA.*convert it to RGB"),
    ((1, 4, 8, 8), r"3 channels \(RGB\).*greyscale or RGBA"),
    ((1, 8, 8, 3), r"channels last\? .*x\.permute\(0, 3, 1, 2\)"),
    ((8, 8), r"\[3, H, W\] for one image"),
    ((1, 1, 3, 8, 8), r"got shape \[1, 1, 3, 8, 8\]"),
])
def test_wrong_shapes_say_what_to_do(check, shape, match):
    with pytest.raises(ValueError, match=match):
        check(torch.rand(shape))


@pytest.mark.parametrize("check", [check_image, check_pixels])
def test_things_that_are_not_tensors(check):
    fix = r"imaging\.preprocess\(image, model\)"
    for bad, what in [(np.zeros((1, 3, 4, 4), np.float32), "numpy array of shape"),
                      (Image.new("RGB", (4, 4)), "a PIL image"), ([[0.0]], "list")]:
        with pytest.raises(TypeError, match=f"must be a tensor .*of pixels in \\[0, 1\\].*{what}.*{fix}"):
            check(bad)


@pytest.mark.parametrize("check", [check_image, check_pixels])
def test_integer_pixels_are_refused_with_the_conversion(check):
    u8 = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(TypeError, match=r"floating-point .*uint8: divide uint8 pixels by 255: x\.float\(\) / 255"):
        check(u8)


@pytest.mark.parametrize("check", [check_image, check_pixels])
@pytest.mark.parametrize("shape", [(1, 3, 0, 0), (1, 3, 5, 0), (0, 3, 5, 5)])
def test_empty_images(check, shape):
    kw = {"batch": True} if check is check_image else {}
    with pytest.raises(ValueError, match="empty"):
        check(torch.zeros(shape), **kw)


@pytest.mark.parametrize("check", [check_image, check_pixels])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(check, value):
    x = torch.rand(1, 3, 4, 4)
    x[0, 2, 1, 1] = value
    with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\).*finite number"):
        check(x)
    with pytest.raises(ValueError, match="48 NaN or infinite"):         # also with gradients attached
        check(torch.full((1, 3, 4, 4), value, requires_grad=True))


@pytest.mark.parametrize("check", [check_image, check_pixels])
def test_pixels_outside_0_1_say_which_mistake_it_probably_is(check):
    with pytest.raises(ValueError, match=r"\[0, 1\].*0\.\.255\? divide them by 255"):
        check(torch.full((1, 3, 2, 2), 200.0))
    pixels = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normalised = (pixels - mean) / std                  # the old way: by hand, before the model
    with pytest.raises(ValueError, match=r"\[0, 1\].*normalised by hand.*pass the pixels instead.*normalize"):
        check(normalised)
    assert check(pixels) is not None                    # the pixels themselves pass
    with pytest.raises(ValueError, match="empty"):
        check_pixel_range(torch.zeros(3, 0, 4))


@pytest.mark.parametrize("check", [check_image, check_pixels])
def test_the_pixel_range_allows_rounding_slack_only(check):
    """A resize or a sum may land a few ulps outside [0, 1]: PIXEL_SLACK allows that, not more."""
    from course_lib.inputs import PIXEL_SLACK

    for edge in (-PIXEL_SLACK, 1 + PIXEL_SLACK):
        x = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
        x[0, 1, 0, 0] = edge
        assert check(x) is not None
    for beyond in (-10 * PIXEL_SLACK, 1 + 10 * PIXEL_SLACK):
        x = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
        x[0, 1, 0, 0] = beyond
        with pytest.raises(ValueError, match=r"pixels in \[0, 1\]"):
            check(x)


@pytest.mark.parametrize("check", [check_image, check_pixels])
def test_a_non_contiguous_image_is_copied_contiguous_with_the_same_values(check):
    x = torch.rand(1, 8, 8, 3).permute(0, 3, 1, 2)     # an array's channels moved first: not contiguous
    out = check(x)
    assert out.is_contiguous() and torch.equal(out, x) and out.data_ptr() != x.data_ptr()
    cl = torch.rand(1, 3, 4, 4).to(memory_format=torch.channels_last)
    assert check(cl).is_contiguous() and torch.equal(check(cl), cl)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)


def test_the_models_float_type():
    net = _Net()
    assert model_dtype(net) == torch.float32 and model_dtype(nn.ReLU()) is None and model_dtype(None) is None
    x = torch.rand(1, 3, 4, 4)
    for check in (check_image, check_pixels):
        assert check(x, model=net) is not None
        with pytest.raises(TypeError, match=r"image is torch\.float64 but the model's weights are torch\.float32: "
                                            r"convert the image with x\.float\(\)"):
            check(x.double(), model=net)
        assert check(x.double(), model=net.double()).dtype == torch.float64  # a float64 model takes float64
        net.float()
    with pytest.raises(TypeError, match=r"x\.to\(torch\.bfloat16\)"):
        check_model_dtype(net.bfloat16(), x)
    check_model_dtype(nn.ReLU(), x.double())                               # no weights: nothing to match


def test_the_name_is_in_every_message():
    with pytest.raises(ValueError, match="^style image must hold pixels"):
        check_pixels(torch.full((1, 3, 2, 2), 2.0), "style image")
    with pytest.raises(TypeError, match="^photo must be a tensor"):
        check_pixels(None, "photo")


# --------------------------------------------------------------------------- class targets and indices


@pytest.mark.parametrize("ok", [0, 9, np.int64(3), np.uint8(3), torch.tensor(3), torch.tensor([3])])
def test_targets_that_are_class_indices(ok):
    out = check_target(ok, 10)
    assert type(out) is int and out == int(ok)


def test_none_is_the_predicted_class_unless_a_target_is_required():
    assert check_target(None, 10) is None
    with pytest.raises(TypeError, match="target is required"):
        check_target(None, 10, allow_none=False)


@pytest.mark.parametrize("bad,match", [
    (2.7, "got float 2.7"), (2.0, r"use int\(2\.0\) if you mean 2"), (True, "not a bool"), (np.bool_(False), "not a bool"),
    (torch.tensor(True), "not a bool"), ("3", r"string '3'; find a class name's index with model\.class_names\.index"),
    (torch.tensor(1.5), "got Tensor"), ([3], "got list"),
])
def test_targets_that_are_not_class_indices_are_refused_not_converted(bad, match):
    with pytest.raises(TypeError, match=r"target must be a class index \(an int\)"):
        check_target(bad, 10)
    with pytest.raises(TypeError, match=match):
        check_target(bad, 10)
    with pytest.raises(TypeError, match="class index"):
        check_target(bad, None)                        # the type is checked even before the classes are known


@pytest.mark.parametrize("bad", [10, 11, -1, -10])
def test_targets_out_of_range_name_the_valid_range(bad):
    with pytest.raises(ValueError, match=rf"target {bad} is out of range: the model has 10 classes \(class indices 0..9\)"):
        check_target(bad, 10)
    if bad < 0:
        with pytest.raises(ValueError, match="negative indices do not count from the end"):
            check_target(bad, 10)


def test_the_name_of_a_target_is_used():
    with pytest.raises(ValueError, match="^class 12 is out of range"):
        check_target(12, 10, name="class")


def test_one_target_per_image():
    assert check_targets(np.int64(2), 10, count=3) == [2, 2, 2]
    assert check_targets(torch.tensor([1, 2]), 10, count=2) == [1, 2]
    assert check_targets(np.array([1, 2]), 10) == [1, 2]
    assert check_targets([4], 10, count=2) == [4, 4]
    with pytest.raises(ValueError, match=r"got 3 targets for 2 images \(y: give one class index, or one per image\)"):
        check_targets([1, 2, 3], 10, count=2, name="y")
    with pytest.raises(TypeError, match=r"y must be a class index \(an int\), got float 1.0; use int\(1.0\) if you mean 1"):
        check_targets(torch.tensor([1.0, 2.0]), 10, name="y")
    with pytest.raises(ValueError, match="target 10 is out of range"):
        check_targets([1, 10], 10)
    with pytest.raises(ValueError, match="no class indices"):
        check_targets([], 10)


def test_channels_and_other_indices():
    assert check_channel(np.int32(3), 4, "conv1_1") == 3
    with pytest.raises(ValueError, match=r"channel 4 is out of range: layer 'conv1_1' has 4 channels \(channels 0..3\)"):
        check_channel(4, 4, "conv1_1")
    with pytest.raises(TypeError, match="channel must be an int"):
        check_channel(1.0, 4, "conv1_1")
    with pytest.raises(ValueError, match=r"row 5 is out of range: the map has 5 rows \(indices 0..4\)"):
        check_index(5, 5, "row", "the map has 5 rows")


# --------------------------------------------------------------------------- numbers


def test_ints():
    assert check_int(np.int64(4), "k") == 4 and type(check_int(np.int64(4), "k")) is int
    assert check_int(torch.tensor(4), "k", low=1, high=4) == 4
    for bad in (True, np.bool_(True)):
        with pytest.raises(TypeError, match="k must be an int, not a bool"):
            check_int(bad, "k")
    for bad in (2.5, "4", None, np.float32(4)):
        with pytest.raises(TypeError, match="k must be an int, got"):
            check_int(bad, "k")
    with pytest.raises(ValueError, match="k must be an int >= 1, got -1"):
        check_int(-1, "k", low=1)
    with pytest.raises(ValueError, match="k must be an int <= 3, got 4"):
        check_int(4, "k", high=3)
    with pytest.raises(ValueError, match="k must be an int between 1 and 3, got 0"):
        check_int(0, "k", low=1, high=3)


@pytest.mark.parametrize("ok", [0.1, np.float32(0.1), np.float64(0.1), torch.tensor(0.1), 1, np.int64(1)])
def test_numbers_of_any_kind_are_numbers(ok):
    v = check_number(ok, "noise_level", low=0)
    assert type(v) is float and v == pytest.approx(float(ok))


def test_numbers_that_are_not():
    for bad in (True, np.bool_(True), torch.tensor(True)):
        with pytest.raises(TypeError, match="noise_level must be a number, not a bool"):
            check_number(bad, "noise_level")
    for bad in ("0.1", None, [0.1], torch.tensor([0.1, 0.2])):
        with pytest.raises(TypeError, match="noise_level must be a number, got"):
            check_number(bad, "noise_level")
    for bad in (float("nan"), np.float32("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise_level must be a finite number"):
            check_number(bad, "noise_level")


def test_number_ranges():
    with pytest.raises(ValueError, match=r"eps must be >= 0, got -0.1 \(a budget\)"):
        check_number(-0.1, "eps", low=0, hint="a budget")
    with pytest.raises(ValueError, match="must be > 0, got 0"):
        check_number(0, "scale", low=0, low_open=True)
    with pytest.raises(ValueError, match="must be >= 0 and <= 1, got 2"):
        check_number(2, "q", low=0, high=1)
    assert check_number(0, "eps", low=0) == 0.0


# --------------------------------------------------------------------------- where images enter: imaging.to_tensor / preprocess


def test_preprocess_refuses_float_pixels_in_0_255():
    """A float array of 0..255 values used to be normalized silently as if it were in [0, 1]."""
    from course_lib.imaging import preprocess, to_tensor

    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    for bad in (u8.astype(np.float64), u8.astype(np.float32), torch.from_numpy(u8.astype(np.float32)).permute(2, 0, 1)):
        with pytest.raises(ValueError, match=r"must hold pixels in \[0, 1\].*0\.\.255\? divide them by 255"):
            preprocess(bad)
        with pytest.raises(ValueError, match="divide them by 255"):
            to_tensor(bad)
    torch.testing.assert_close(preprocess(u8.astype(np.float64) / 255), preprocess(u8))  # the fix the message names
    nan = np.full((4, 4, 3), 0.5)
    nan[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        preprocess(nan)
    with pytest.raises(ValueError, match="empty"):
        to_tensor(np.zeros((0, 0, 3)))


def test_preprocess_size_is_checked_by_the_shared_check():
    from course_lib.imaging import preprocess

    img = np.zeros((8, 8, 3), np.uint8)
    assert preprocess(img, size=np.int64(4)).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="size must be an int >= 1, got 0"):
        preprocess(img, size=0)
    with pytest.raises(TypeError, match="size must be an int, got float"):
        preprocess(img, size=4.0)


# ---- one calling convention: method(model, x, target=None, *, layer=None, channel=None, ...) -----------------

def _convention_methods():
    import inspect

    from course_lib import cam, neighbors, occlusion, patches, saliency, saliency_eval
    return inspect, {
        "cam.cam": cam.cam, "cam.grad_cam": cam.grad_cam, "cam.guided_grad_cam": cam.guided_grad_cam,
        "occlusion.occlusion": occlusion.occlusion, "saliency.gradient": saliency.gradient,
        "saliency.vanilla_saliency": saliency.vanilla_saliency, "saliency.smoothgrad": saliency.smoothgrad,
        "saliency.integrated_gradients": saliency.integrated_gradients,
        "saliency.guided_backprop": saliency.guided_backprop, "saliency.compute_saliency": saliency.compute_saliency,
        "saliency.top_channels": saliency.top_channels, "patches.unit_gradient": patches.unit_gradient,
        "neighbors.classifier_features": neighbors.classifier_features,
        "saliency_eval.randomization_test": saliency_eval.randomization_test}


def test_every_method_reads_model_x_target_then_keywords():
    """The class is the third argument and is called ``target``; ``layer`` and ``channel`` (and every option)
    are keyword-only, so ``grad_cam(model, x, 3)`` can only mean class 3."""
    inspect, methods = _convention_methods()
    for name, fn in methods.items():
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params[:2]] == ["model", "x"], name
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional[2:] in ([], ["target"], ["methods", "target"]), f"{name}: positional {positional}"
        for p in params:
            if p.name in ("layer", "channel", "position", "k", "patch", "stride", "method", "n_samples", "steps"):
                assert p.kind is p.KEYWORD_ONLY, f"{name}: {p.name} must be keyword-only"


def test_a_layer_passed_where_the_class_goes_says_to_name_it(tiny_net):
    from course_lib.cam import grad_cam

    with pytest.raises(TypeError, match=r"layer='relu4_2'"):
        grad_cam(tiny_net, torch.rand(1, 3, 64, 64), "relu4_2")
