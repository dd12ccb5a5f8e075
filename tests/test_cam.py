import numpy as np
import pytest
import torch
import torchvision
from captum.attr import LayerAttribution, LayerGradCam

from course_lib.cam import CAMNotApplicableError, cam, default_cam_layer, grad_cam
from course_lib.models import _prepare, get_layer


def _x(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = model.input_size
    return torch.randn(1, 3, s, s, generator=g)


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
        torch.testing.assert_close(m.mean() + net.fc.bias[c], scores[c], rtol=1e-5, atol=1e-5)


def test_grad_cam_at_the_gap_input_equals_relu_cam_over_hw(net):
    x = _x(net, 1)
    layer = default_cam_layer(net)
    assert layer == "relu4_2"
    for c in range(10):
        m = cam(net, x, target=c, size=False)
        h, w = m.shape
        g = grad_cam(net, x, layer=layer, target=c, size=False)
        torch.testing.assert_close(g, m / (h * w), rtol=1e-5, atol=1e-7)
        # and after bilinear upsampling to the input size
        torch.testing.assert_close(grad_cam(net, x, layer=layer, target=c), cam(net, x, target=c) / (h * w),
                                   rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer", ["relu4_2", "relu3_1", "pool2", "conv4_2", "conv3_2"])
def test_grad_cam_matches_captum(net, layer):
    x = _x(net, 2)
    c = int(net(x).argmax())
    oracle = LayerGradCam(net, get_layer(net, layer)).attribute(x, target=c, relu_attributions=True)
    up = LayerAttribution.interpolate(oracle, x.shape[-2:], "bilinear")[0, 0]
    ours = grad_cam(net, x, layer=layer, target=c)
    torch.testing.assert_close(ours, up, rtol=1e-4, atol=1e-6)


def test_grad_cam_matches_pytorch_grad_cam_raw_map(net):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = _x(net, 3)
    layer = get_layer(net, "relu3_2")
    c = 4
    with GradCAM(model=net, target_layers=[layer]) as gc:
        xi = x.clone().requires_grad_(True)
        targets = [ClassifierOutputTarget(c)]
        gc(input_tensor=xi, targets=targets)
        acts = gc.activations_and_grads.activations[0].numpy()
        grads = gc.activations_and_grads.gradients[0].numpy()
        raw = np.maximum(gc.get_cam_image(xi, layer, targets, acts, grads), 0)[0]
    ours = grad_cam(net, x, layer="relu3_2", target=c, size=False)
    np.testing.assert_allclose(ours.numpy(), raw, rtol=1e-4, atol=1e-7)


def test_cam_on_a_model_without_gap_fc_explains_and_points_to_grad_cam():
    vgg = _prepare(torchvision.models.vgg11(), [str(i) for i in range(1000)], 64,
                   (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)
    with pytest.raises(CAMNotApplicableError, match="Grad-CAM") as e:
        cam(vgg, torch.randn(1, 3, 64, 64))
    assert "global average pooling" in str(e.value)
    assert grad_cam(vgg, torch.randn(1, 3, 64, 64), target=1).shape == (64, 64)  # Grad-CAM does work
    assert default_cam_layer(vgg) == "relu5_2"


def test_cam_works_for_resnet_too():
    torch.manual_seed(0)
    r = _prepare(torchvision.models.resnet18(), [str(i) for i in range(1000)], 64,
                 (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)
    x = torch.randn(1, 3, 64, 64)
    m = cam(r, x, target=7, size=False)
    torch.testing.assert_close(grad_cam(r, x, layer="layer4", target=7, size=False), m / m.numel(),
                               rtol=1e-4, atol=1e-7)


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


@pytest.mark.parametrize("bad", [torch.randn(2, 3, 64, 64), torch.randn(3, 64, 64), torch.randn(1, 1, 64, 64)])
def test_bad_inputs(tiny_net, bad):
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\]"):
        grad_cam(tiny_net, bad)
    with pytest.raises(ValueError, match=r"\[1, 3, H, W\]"):
        cam(tiny_net, bad)


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
    x = torch.zeros(1, 3, 64, 64)        # background = the occlusion fill: occluding it changes nothing
    x[..., 40:56, 8:24] = 2.0
    with torch.no_grad():
        net.fc.weight[3] /= net(x)[0, 3]  # logit 1 against 0.5: the probability is far from saturated
    res = agreement_with_occlusion(net, [x], fraction=0.1, patch=16, stride=8, progress=False)
    assert res["cam"] == 1.0 and res["centre"] == 0.0 and res["images"] == 1


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
    torch.testing.assert_close(ours, oracle, rtol=1e-4, atol=1e-6 * float(oracle.abs().max()))
