import numpy as np
import pytest
import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam

from torch import nn

from conftest import close
from course_lib.cam import CAMNotApplicableError, cam, default_cam_layer, gap_and_fc, grad_cam, guided_grad_cam
from course_lib.layers import get_layer
from course_lib.models import prepare_model, mean_colour


def _x(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.input_size
    return torch.rand(1, 3, s, s, generator=g)          # pixels in [0, 1): the model normalises them itself


@pytest.fixture(params=["tiny", "course"])
def net(request, tiny_net):
    return tiny_net if request.param == "tiny" else request.getfixturevalue("course_model")


def test_cam_mean_plus_bias_is_the_class_score(net):
    """Without ReLU, the average of M_c over positions plus b_c is exactly the class score S_c."""
    x = _x(net)
    scores = net(x)[0]
    for c in (0, 3, 9):
        m = cam(net, x, target=c, relu=False, size=False)
        assert m.shape == (8, 8) if net.input_size == 128 else m.shape == (4, 4)
        # the mean sums channels x positions terms that cancel down to the score: rounding scales with the scores
        close(m.mean() + net.fc.bias[c], scores[c], rtol=1e-5, floor=1e-5, scale=scores.abs().max())


def test_grad_cam_at_the_gap_input_equals_relu_cam_over_hw(net):
    x = _x(net, 1)
    layer = default_cam_layer(net)
    assert layer == "relu4_2"
    for c in range(10):
        m = cam(net, x, target=c, size=False)
        h, w = m.shape
        g = grad_cam(net, x, layer=layer, target=c, size=False)
        close(g, m / (h * w), rtol=1e-5, floor=1e-5)  # floor: sums over channels that cancel
        # and after bilinear upsampling to the input size
        close(grad_cam(net, x, layer=layer, target=c), cam(net, x, target=c) / (h * w), rtol=1e-5, floor=1e-5)


@pytest.mark.parametrize("layer", ["relu4_2", "relu3_1", "pool2", "conv4_2", "conv3_2"])
def test_grad_cam_matches_captum(net, layer):
    x = _x(net, 2)
    # the predicted class, or the first whose map is not empty (random nets can have all-negative maps)
    c = next(c for c in [int(net(x).argmax())] + list(range(10)) if grad_cam(net, x, layer=layer, target=c).max() > 0)
    oracle = LayerGradCam(net, get_layer(net, layer)).attribute(x, target=c, relu_attributions=True)
    up = LayerAttribution.interpolate(oracle, x.shape[-2:], "bilinear")[0, 0]
    ours = grad_cam(net, x, layer=layer, target=c)
    close(ours, up, rtol=1e-4, floor=1e-5)  # another implementation: other sums, other kernels


def test_grad_cam_matches_pytorch_grad_cam_raw_map(net):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = _x(net, 3)
    layer = get_layer(net, "relu3_2")
    c = next(c for c in range(4, 10) if grad_cam(net, x, layer="relu3_2", target=c).max() > 0)  # not an empty map
    with GradCAM(model=net, target_layers=[layer]) as gc:
        xi = x.clone().requires_grad_(True)
        targets = [ClassifierOutputTarget(c)]
        gc(input_tensor=xi, targets=targets)
        acts = gc.activations_and_grads.activations[0].numpy()
        grads = gc.activations_and_grads.gradients[0].numpy()
        raw = np.maximum(gc.get_cam_image(xi, layer, targets, acts, grads), 0)[0]
    ours = grad_cam(net, x, layer="relu3_2", target=c, size=False)
    close(ours, raw, rtol=1e-4, floor=1e-5)  # another implementation: other sums (numpy's), other kernels


def test_cam_on_a_model_without_gap_fc_explains_and_points_to_grad_cam():
    vgg = prepare_model(torchvision.models.vgg11(), [str(i) for i in range(1000)], 64,
                        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)
    with pytest.raises(CAMNotApplicableError, match="Grad-CAM") as e:
        cam(vgg, torch.rand(1, 3, 64, 64))
    assert "global average pooling" in str(e.value)
    assert grad_cam(vgg, torch.rand(1, 3, 64, 64), target=1).shape == (64, 64)  # Grad-CAM does work
    assert default_cam_layer(vgg) == "relu5_2"


def test_cam_works_for_resnet_too():
    torch.manual_seed(0)
    r = prepare_model(torchvision.models.resnet18(), [str(i) for i in range(1000)], 64,
                      (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)
    x = torch.rand(1, 3, 64, 64)
    m = cam(r, x, target=7, size=False)
    close(grad_cam(r, x, layer="layer4", target=7, size=False), m / m.numel(), rtol=1e-4, floor=1e-5)


def test_nothing_is_left_changed(tiny_net):
    net = tiny_net.train()  # a model in train mode stays in train mode
    for p in net.parameters():
        p.requires_grad_(True)
    x = _x(net)
    x0 = x.clone()
    grad_cam(net, x, layer="conv3_1", target=2)
    cam(net, x, target=2)
    assert net.training
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(x, x0) and not x.requires_grad
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(net, x, layer="conv3_1", target=10)   # raised while the hook is in place
    assert all(not m._forward_hooks for m in net.modules())
    assert net.training


@pytest.mark.parametrize("bad", [torch.randn(2, 3, 64, 64), torch.randn(64, 64), torch.randn(1, 1, 64, 64)])
def test_bad_inputs(tiny_net, bad):
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\]"):
        grad_cam(tiny_net, bad)
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\]"):
        cam(tiny_net, bad)


def test_one_image_without_batch_dimension_is_accepted_as_everywhere_else(tiny_net):
    """[3, H, W] is one image for CAM too, as for saliency, occlusion and the optimisation modules."""
    x = _x(tiny_net)
    close(cam(tiny_net, x[0], target=2), cam(tiny_net, x, target=2))
    close(grad_cam(tiny_net, x[0], target=2), grad_cam(tiny_net, x, target=2))


# --------------------------------------------------------------------------- issue 15: CAM's structure, targets, sizes


class _GapNet(nn.Module):
    """conv -> ReLU -> GAP, then a ``head`` that decides whether CAM applies."""

    def __init__(self, head: nn.Module, width: int = 6):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def _gap_net(head):
    torch.manual_seed(0)
    return prepare_model(_GapNet(head), [str(i) for i in range(6)], 16, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)


def test_cam_finds_a_linear_layer_named_head_by_structure():
    """GAP + one nn.Linear called ``head`` (not ``fc``) is a CAM network: the map's mean plus the bias is the score."""
    net = _gap_net(nn.Linear(6, 6))
    x = torch.rand(1, 3, 16, 16)
    gap, fc = gap_and_fc(net)
    assert gap is net.pool and fc is net.head
    m = cam(net, x, target=4, relu=False, size=False)
    close(m.mean() + net.head.bias[4], net(x)[0, 4], rtol=1e-5, floor=1e-5, scale=net(x).abs().max())
    # dropout and flatten between the pooling and the linear layer change nothing in eval mode
    net = _gap_net(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(6, 6)))
    m = cam(net, x, target=1, relu=False, size=False)
    close(m.mean() + net.head[2].bias[1], net(x)[0, 1], rtol=1e-5, floor=1e-5, scale=net(x).abs().max())


def test_cam_refuses_an_mlp_after_gap_even_of_the_same_width():
    """GAP -> Linear(6, 6) -> ReLU -> Linear(6, 6): the widths match, but the last layer's weights do not
    weigh the feature maps, so a "CAM" would be a wrong map. It must be refused, pointing to Grad-CAM."""
    net = _gap_net(nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6)))
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(CAMNotApplicableError, match="one nn.Linear") as e:
        cam(net, x, target=0)
    assert "MLP" in str(e.value) and "grad_cam" in str(e.value)
    with pytest.raises(CAMNotApplicableError, match="MLP"):
        gap_and_fc(net)
    assert grad_cam(net, x, layer="features.1", target=0).shape == (16, 16)   # what the message suggests works
    # refused by structure, not by chance values: all-zero features make the MLP's input equal the pooled maps
    net = _gap_net(nn.Sequential(nn.Linear(6, 6, bias=False), nn.ReLU(), nn.Linear(6, 6)))
    with torch.no_grad():
        net.features[0].bias.zero_()
    with pytest.raises(CAMNotApplicableError, match="MLP"):
        cam(net, torch.zeros(1, 3, 16, 16), target=0)


@pytest.mark.parametrize("bad", [2.7, 2.0, True, np.bool_(True), "3", torch.tensor(1.0)])
def test_targets_that_are_not_ints_are_refused_not_coerced(tiny_net, bad):
    x = _x(tiny_net)
    for method in (cam, grad_cam, guided_grad_cam):
        with pytest.raises(TypeError, match=r"target must be a class index \(an int\)"):
            method(tiny_net, x, target=bad)


def test_string_target_says_how_to_find_the_index(tiny_net):
    with pytest.raises(TypeError, match=r"model.class_names.index\(name\)"):
        cam(tiny_net, _x(tiny_net), target="3")


@pytest.mark.parametrize("ok", [3, np.int64(3), torch.tensor(3)])
def test_integer_targets_of_any_kind_work(tiny_net, ok):
    x = _x(tiny_net)
    close(cam(tiny_net, x, target=ok), cam(tiny_net, x, target=3))


@pytest.mark.parametrize("bad", [-1, 10])
def test_out_of_range_targets_name_the_valid_range(tiny_net, bad):
    for method in (cam, grad_cam, guided_grad_cam):
        with pytest.raises(ValueError, match=r"out of range: the model has 10 classes \(class indices 0..9\)"):
            method(tiny_net, _x(tiny_net), target=bad)


def test_size_may_be_an_int_or_a_pair(tiny_net):
    x = _x(tiny_net)
    assert cam(tiny_net, x, target=1, size=128).shape == (128, 128)
    assert cam(tiny_net, x, target=1, size=np.int64(32)).shape == (32, 32)
    assert grad_cam(tiny_net, x, target=1, size=(20, 30)).shape == (20, 30)
    close(cam(tiny_net, x, target=1, size=64), cam(tiny_net, x, target=1))
    for bad, err, match in [(0, ValueError, "size must be an int >= 1"), (-5, ValueError, ">= 1"),
                            (2.5, TypeError, r"an int S \(S x S\) or a pair \(H, W\)"),
                            ("big", TypeError, r"a pair \(H, W\)"), ((1, 2, 3), ValueError, "pair")]:
        for method in (cam, grad_cam):
            with pytest.raises(err, match=match):
                method(tiny_net, x, target=1, size=bad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.uint8])
def test_other_dtypes_get_a_clear_error_not_torchs(tiny_net, dtype):
    x = _x(tiny_net).to(dtype)
    match = r"x\.float\(\)" if dtype == torch.float64 else r"divide uint8 pixels by 255"
    for method in (cam, grad_cam, guided_grad_cam):
        with pytest.raises(TypeError, match=match):
            method(tiny_net, x, target=1)


def test_nan_and_empty_images_are_refused(tiny_net):
    x = _x(tiny_net)
    x[0, 1, 5, 5] = float("nan")
    for method in (cam, grad_cam):
        with pytest.raises(ValueError, match="NaN or infinite"):
            method(tiny_net, x, target=1)
        with pytest.raises(ValueError, match="empty"):
            method(tiny_net, torch.zeros(1, 3, 0, 0), target=1)


def test_unknown_layer(tiny_net):
    with pytest.raises(KeyError, match="relu4_2"):
        grad_cam(tiny_net, _x(tiny_net), layer="conv7_1")


def test_peak_in_top_region_exact():
    from course_lib.cam import peak_in_top_region
    ref = torch.zeros(10, 10)
    ref[:2, :] = 1.0                      # the top 20% of the reference: the first two rows
    inside, outside = torch.zeros(10, 10), torch.zeros(10, 10)
    inside[1, 7] = 5
    outside[2, 7] = 5
    assert peak_in_top_region(inside, ref, 0.2)
    assert not peak_in_top_region(outside, ref, 0.2)
    with pytest.raises(ValueError):
        peak_in_top_region(inside, ref[:5], 0.2)


def test_agreement_with_occlusion_on_a_planted_object(tiny_net):
    """A net whose only evidence is a bright square: CAM and occlusion must both find it."""
    from course_lib.cam import agreement_with_occlusion
    net = tiny_net
    torch.manual_seed(0)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.abs_()           # positive weights: activations grow with brightness
                m.bias.zero_()
        net.fc.weight.zero_()
        net.fc.weight[3] = 1.0           # class 3 = "bright stuff"
        net.fc.bias.zero_()
        net.fc.bias[0] = 0.5
    mean = torch.tensor(mean_colour(net)).view(1, 3, 1, 1)
    x = mean.expand(1, 3, 64, 64).clone()  # background = the occlusion fill (the mean colour): the network sees 0
    x[..., 40:56, 8:24] = 1.0            # a white square: the only evidence
    with torch.no_grad():
        net.fc.weight[3] /= net(x)[0, 3]  # logit 1 against 0.5: the probability is far from saturated
    res = agreement_with_occlusion(net, [x], fraction=0.1, patch=16, stride=8, progress=False)
    assert res["cam"] == 1.0 and res["centre"] == 0.0 and res["images"] == 1 and res["method"] == "CAM"
    no_gap = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(4 * 64 * 64, 2)).eval()
    assert agreement_with_occlusion(no_gap, [x], patch=32, stride=32, progress=False)["method"] == "Grad-CAM"


@pytest.mark.filterwarnings("ignore::UserWarning")  # captum's notes about its own hooks
@pytest.mark.parametrize("layer", ["relu4_2", "relu3_2"])
def test_guided_grad_cam_matches_captum(net, layer):
    from captum.attr import GuidedGradCam
    from course_lib.cam import guided_grad_cam

    x = _x(net, 4)
    # a class whose Grad-CAM is not empty (random nets can have all-negative maps), so the check is not vacuous
    c = next(c for c in range(10) if grad_cam(net, x, layer=layer, target=c).max() > 0)
    oracle = GuidedGradCam(net, get_layer(net, layer)).attribute(x, target=c, interpolate_mode="bilinear")[0]
    ours = guided_grad_cam(net, x, layer=layer, target=c)
    assert ours.shape == (3,) + tuple(x.shape[-2:])
    assert ours.abs().max() > 0
    close(ours, oracle, rtol=1e-4, floor=1e-6)


# --------------------------------------------------------------------------- pixels: the one image space


def test_cam_and_grad_cam_refuse_a_normalised_image_saying_to_pass_pixels(tiny_net):
    from course_lib.cam import agreement_with_occlusion

    x = _x(tiny_net, 5)
    normalised = tiny_net.normalize(x)                    # what the old course fed them, by hand
    for call in (lambda im: cam(tiny_net, im, target=1), lambda im: grad_cam(tiny_net, im, target=1),
                 lambda im: guided_grad_cam(tiny_net, im, target=1), lambda im: gap_and_fc(tiny_net, im),
                 lambda im: agreement_with_occlusion(tiny_net, [im], progress=False)):
        with pytest.raises(ValueError, match=r"pixels in \[0, 1\].*normalised by hand.*pass the pixels instead"):
            call(normalised)
    assert cam(tiny_net, x, target=1).shape == (64, 64)      # the pixels are fine


def test_cam_is_computed_on_what_the_network_sees_after_its_normalize_layer(tiny_net):
    """CAM's maps A are those of the normalised image: recomputed by hand from normalize -> features."""
    x = _x(tiny_net, 6)
    with torch.no_grad():
        A = tiny_net.features(tiny_net.normalize(x))[0]       # [K, h, w]
    expected = torch.einsum("k,khw->hw", tiny_net.fc.weight[2], A)
    close(cam(tiny_net, x, target=2, relu=False, size=False), expected, rtol=1e-5, floor=1e-6)
