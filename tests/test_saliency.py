"""course_lib.saliency against captum (gradient, SmoothGrad, integrated gradients, guided backprop),
against hand-worked and explicit-mask implementations (guided backprop for units), and exact
properties (completeness of IG, GrabCut recovering a known object)."""
import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import close
from course_lib import saliency as S

captum_attr = pytest.importorskip("captum.attr")


@pytest.fixture(params=["tiny_net", "course_model"])
def net(request):
    return request.getfixturevalue(request.param)


def image_for(model, seed=0):
    """Random pixels in [0, 1): what every method takes (the model normalises its own input)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, model.input_size, model.input_size, generator=g)


def mean_image(model, like):
    """The model's mean colour everywhere: integrated gradients' default baseline."""
    from course_lib.models import mean_colour

    return torch.tensor(mean_colour(model), dtype=like.dtype).view(1, 3, 1, 1).expand_as(like).clone()


def captum(cls, model, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns that it sets requires_grad / registers hooks
        return cls(model, *args) if args else cls(model)


def all_hooks(model):
    return [(n, d) for n, m in model.named_modules()
            for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
            if getattr(m, d)]


# --------------------------------------------------------------------------- against captum


@pytest.mark.parametrize("target", [0, 3, None])
def test_vanilla_saliency_is_captums_saliency(net, target):
    x = image_for(net)
    c = int(net(x).argmax()) if target is None else target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = captum_attr.Saliency(net).attribute(x.clone(), target=c, abs=True).amax(1)[0]
    ours = S.vanilla_saliency(net, x, target)
    assert ours.shape == (net.input_size, net.input_size)
    assert torch.equal(ours, expected)  # exact: the same forward and backward kernels on the same image


def test_smoothgrad_is_captums_noise_tunnel_with_the_same_draw(net):
    x = image_for(net, 1)
    sigma = 0.2 * float(x.max() - x.min())
    torch.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = captum_attr.NoiseTunnel(captum_attr.Saliency(net)).attribute(
            x.clone(), target=2, nt_type="smoothgrad", nt_samples=6, stdevs=sigma, abs=False)[0]
    ours = S.smoothgrad(net, x, 2, n_samples=6, noise_level=0.2, seed=7, batch_size=4)
    close(ours, expected, rtol=1e-5, floor=1e-6)
    # seed=None draws from torch's global generator, exactly as captum does
    torch.manual_seed(7)
    close(S.smoothgrad(net, x, 2, n_samples=6, noise_level=0.2, seed=None), expected, rtol=1e-5, floor=1e-6)
    # ... and the noise really matters: another seed gives another average
    assert not torch.allclose(S.smoothgrad(net, x, 2, n_samples=6, noise_level=0.2, seed=8), expected)


@pytest.mark.parametrize("method", S.RIEMANN)
def test_integrated_gradients_is_captums(net, method):
    x = image_for(net, 2)
    baseline = 0.3 * image_for(net, 3)
    steps = 12 if net.input_size <= 64 else 5  # the course model is ~10x dearer per step
    for base in (None, baseline):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = captum_attr.IntegratedGradients(net).attribute(
                x.clone(), baselines=mean_image(net, x) if base is None else base.clone(), target=1, n_steps=steps,
                method=method)[0]
        ours = S.integrated_gradients(net, x, 1, baseline=base, steps=steps, method=method, batch_size=5)
        close(ours, expected, rtol=1e-5, floor=1e-6)


def test_integrated_gradients_completeness_improves_with_steps(net):
    """sum_i IG_i = S(x) - S(x') exactly for the integral; the Riemann sums converge to it."""
    x = image_for(net, 4)
    with torch.no_grad():
        gaps = net(x)[0] - net(mean_image(net, x))[0]                   # the default baseline: the mean colour
    c = int(gaps.abs().argmax())                                        # a class whose score the path changes
    gap = float(gaps[c])
    many = 256 if net.input_size <= 64 else 64          # tiny_net's scores barely move: finer sums; it is cheap
    errors = [abs(float(S.integrated_gradients(net, x, c, steps=m, method="riemann_right").sum()) - gap)
              for m in (2, many)]
    assert errors[1] < errors[0] / 10
    assert errors[1] < 0.01 * abs(gap) + 1e-6


@pytest.mark.parametrize("target", [0, 7, None])
def test_guided_backprop_is_captums_for_class_scores(net, target):
    x = image_for(net, 5)
    c = int(net(x).argmax()) if target is None else target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = captum_attr.GuidedBackprop(net).attribute(x.clone(), target=c)[0]
    ours = S.guided_backprop(net, x, target)
    assert ours.abs().sum() > 0
    close(ours, expected, rtol=1e-5, floor=1e-6)
    # guided backprop is not the plain gradient
    assert not torch.allclose(ours, S.gradient(net, x, c))


# --------------------------------------------------------------------------- guided backprop for units


def hand_net():
    """1x1 conv 3 -> 3, ReLU, flatten, linear 3 -> 1, on a 1x1 'image': small enough to do by hand."""
    net = nn.Sequential(nn.Conv2d(3, 3, 1, bias=False), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1, 0], [1, 0, 0], [0, -1, 0]]).view(3, 3, 1, 1))
        net[3].weight.copy_(torch.tensor([[2.0, -3, 5]]))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def test_guided_backprop_by_hand():
    # x = (0.5, 1, 0): hidden pre-activations (1.5, 0.5, -1), ReLU mask (1, 1, 0), output weights (2, -3, 5).
    x = torch.tensor([0.5, 1, 0]).view(1, 3, 1, 1)
    # plain gradient: W1^T (2, -3, 0) = (-1, 2, 0)
    assert S.gradient(hand_net(), x, 0).flatten().tolist() == [-1, 2, 0]
    # guided: the negative -3 is dropped too: W1^T (2, 0, 0) = (2, 2, 0)
    assert S.guided_backprop(hand_net(), x, 0).flatten().tolist() == [2, 2, 0]
    # a hidden unit: relu unit 0 = x0 + x1 -> gradient (1, 1, 0); unit 2 is off -> zero
    assert S.guided_backprop(hand_net(), x, layer="1", channel=0).flatten().tolist() == [1, 1, 0]
    assert S.guided_backprop(hand_net(), x, layer="1", channel=2).flatten().tolist() == [0, 0, 0]


def explicit_mask_guided_backprop(net, x, layer, channel, position):
    """Guided backprop for the CourseNet structure written out layer by layer with explicit masks:
    forward keeping every layer's input, then backward: at a ReLU g <- g [input > 0] [g > 0];
    elsewhere the layer's own vector-Jacobian product."""
    stages = [("normalize", net.normalize)] + [(n, m) for n, m in net.features.named_children()]
    stages += [("gap", net.gap), ("flatten", nn.Flatten()), ("fc", net.fc)]
    inputs, a = [], x
    for name, m in stages:
        inputs.append(a)
        a = torch.relu(a) if isinstance(m, nn.ReLU) else m(a)
        if name == layer:
            break
    seed = torch.zeros_like(a)
    if a.ndim == 2:
        seed[0, channel] = 1
    elif position == "sum":
        seed[0, channel] = 1
    else:
        i, j = np.unravel_index(int(a[0, channel].argmax()), a.shape[2:]) if position == "max" else position
        seed[0, channel, i, j] = 1
    g = seed
    for (name, m), inp in zip(reversed(stages[:len(inputs)]), reversed(inputs)):
        if isinstance(m, nn.ReLU):
            g = g * (inp > 0) * (g > 0)
        else:
            inp = inp.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(m(inp), inp, g)
    return g[0]


@pytest.mark.parametrize("layer,channel,position", [
    ("conv4_2", 3, "max"), ("relu3_1", 5, "max"), ("pool2", 1, "sum"), ("conv1_1", 0, (10, 7)),
    ("relu4_2", 8, "sum"), ("fc", 4, "max"),
])
def test_guided_backprop_for_units_follows_the_rule_at_every_relu(tiny_net, layer, channel, position):
    x = image_for(tiny_net, 6)
    expected = explicit_mask_guided_backprop(tiny_net, x, layer, channel, position)
    ours = S.guided_backprop(tiny_net, x, layer=layer, channel=channel, position=position)
    assert expected.abs().sum() > 0
    close(ours, expected, rtol=1e-5, floor=1e-6)


def test_guided_backprop_for_units_on_the_course_model(course_model):
    x = image_for(course_model, 7)
    for layer, channel, position in [("conv4_2", 11, "max"), ("relu3_2", 2, "sum")]:
        expected = explicit_mask_guided_backprop(course_model, x, layer, channel, position)
        ours = S.guided_backprop(course_model, x, layer=layer, channel=channel, position=position)
        close(ours, expected, rtol=1e-4, floor=1e-5)  # wider and deeper than tiny_net: longer sums


def test_unit_of_a_conv_layer_is_the_conv_output_not_the_inplace_relu_after_it(tiny_net):
    """The course model's ReLUs are in-place: a conv's recorded output must not be overwritten."""
    x = image_for(tiny_net, 8)
    conv, relu = S.gradient(tiny_net, x, layer="conv4_1", channel=0, position="sum"), \
        S.gradient(tiny_net, x, layer="relu4_1", channel=0, position="sum")
    plain = copy.deepcopy(tiny_net)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    close(conv, S.gradient(plain, x, layer="conv4_1", channel=0, position="sum"))
    close(relu, S.gradient(plain, x, layer="relu4_1", channel=0, position="sum"))
    assert not torch.allclose(conv, relu)


def test_inplace_relus_give_the_same_guided_backprop(course_model):
    x = image_for(course_model, 9)
    plain = copy.deepcopy(course_model)
    for m in plain.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    for kw in ({"target": 3}, {"layer": "conv3_2", "channel": 4}):
        close(S.guided_backprop(course_model, x, **kw), S.guided_backprop(plain, x, **kw))
    assert all(m.inplace for m in course_model.modules() if isinstance(m, nn.ReLU))


# --------------------------------------------------------------------------- the model is left as it was


def snapshot(model):
    return ([(n, m) for n, m in model.named_modules()],
            {k: v.clone() for k, v in model.state_dict().items()},
            [(n, m.training) for n, m in model.named_modules()])


def assert_unchanged(model, snap):
    modules, state, modes = snap
    now = [(n, m) for n, m in model.named_modules()]
    assert [n for n, _ in now] == [n for n, _ in modules]
    assert all(a is b for (_, a), (_, b) in zip(now, modules)), "a module was replaced and not put back"
    assert not any(isinstance(m, S.GuidedReLU) for m in model.modules())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert [(n, m.training) for n, m in model.named_modules()] == modes
    assert all_hooks(model) == []


def test_guided_relus_restores_the_model_even_on_error(tiny_net):
    snap = snapshot(tiny_net)
    with pytest.raises(RuntimeError, match="boom"):
        with S.guided_relus(tiny_net):
            assert any(isinstance(m, S.GuidedReLU) for m in tiny_net.modules())
            raise RuntimeError("boom")
    assert_unchanged(tiny_net, snap)


def test_guided_backprop_restores_the_model_when_the_forward_pass_raises(tiny_net):
    snap = snapshot(tiny_net)

    def explode(*_):
        raise RuntimeError("boom in forward")

    handle = tiny_net.fc.register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom in forward"):
            S.guided_backprop(tiny_net, image_for(tiny_net), 1)
    finally:
        handle.remove()
    assert_unchanged(tiny_net, snap)


#: every saliency method once, class or unit (the tests below add the other entry points)
METHOD_CALLS = [
    lambda m, x: S.vanilla_saliency(m, x, 1),
    lambda m, x: S.gradient(m, x, layer="conv3_1", channel=2),
    lambda m, x: S.smoothgrad(m, x, 1, n_samples=3),
    lambda m, x: S.integrated_gradients(m, x, 1, steps=3),
    lambda m, x: S.guided_backprop(m, x, 1),
]


@pytest.mark.parametrize("call", METHOD_CALLS + [
    lambda m, x: S.guided_backprop(m, x, layer="relu4_2", channel=1),
])
def test_no_mutation_no_grad_no_hooks_modes_restored(tiny_net, call):
    for p in tiny_net.parameters():  # parameters that do want gradients, with a .grad already there
        p.requires_grad_(True)
        p.grad = torch.full_like(p, 0.5)
    tiny_net.train()
    tiny_net.features.eval()  # mixed modes must come back as they were
    snap = snapshot(tiny_net)
    x = image_for(tiny_net)
    x0 = x.clone()
    call(tiny_net, x)
    assert torch.equal(x, x0) and x.grad is None and not x.requires_grad
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) and p.requires_grad for p in tiny_net.parameters())
    assert_unchanged(tiny_net, snap)
    assert tiny_net.training and not tiny_net.features.training


def dropout_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 4))
    return net


@pytest.mark.parametrize("method", list(S.METHODS))
def test_computed_in_eval_mode(method):
    """With dropout, a train-mode pass would be random: the result must equal the eval-mode one."""
    x = torch.rand(1, 3, 12, 12)
    kw = {"n_samples": 2} if method == "SmoothGrad" else {"steps": 4} if method == "integrated gradients" else {}
    net = dropout_net().eval()
    expected = S.METHODS[method](net, x, 2, **kw)
    net.train()
    torch.manual_seed(123)
    close(S.METHODS[method](net, x, 2, **kw), expected)
    assert net.training and net[2].training


def test_three_dim_input_is_one_image(tiny_net):
    x = image_for(tiny_net)
    assert torch.equal(S.vanilla_saliency(tiny_net, x[0], 2), S.vanilla_saliency(tiny_net, x, 2))


def test_target_none_is_the_predicted_class(tiny_net):
    x = image_for(tiny_net, 3)
    c = S.predicted_class(tiny_net, x)
    assert c == int(tiny_net(x).argmax())
    assert torch.equal(S.guided_backprop(tiny_net, x), S.guided_backprop(tiny_net, x, c))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("shape,match", [
    ((2, 3, 64, 64), "single image"), ((1, 1, 64, 64), "3 channels"), ((1, 4, 64, 64), "3 channels"),
    ((64, 64), r"\[1, 3, H, W\]"), ((1, 1, 3, 64, 64), r"\[1, 3, H, W\]"),
])
def test_wrong_shapes(tiny_net, shape, match):
    for method in S.METHODS:
        with pytest.raises(ValueError, match=match):
            S.compute_saliency(tiny_net, torch.zeros(shape), 0, method=method)


def test_wrong_types_and_targets(tiny_net):
    x = image_for(tiny_net)
    with pytest.raises(TypeError, match="tensor"):
        S.vanilla_saliency(tiny_net, x.numpy(), 0)
    with pytest.raises(TypeError, match="floating"):
        S.vanilla_saliency(tiny_net, torch.zeros(1, 3, 64, 64, dtype=torch.uint8), 0)
    for bad in (10, -1):
        with pytest.raises(ValueError, match="out of range: the model has 10 classes"):
            S.guided_backprop(tiny_net, x, bad)
    with pytest.raises(TypeError, match="bool"):
        S.vanilla_saliency(tiny_net, x, True)
    with pytest.raises(TypeError, match="int"):
        S.vanilla_saliency(tiny_net, x, 1.0)
    with pytest.raises(KeyError, match="no layer 'conv9_9'"):
        S.guided_backprop(tiny_net, x, layer="conv9_9", channel=0)
    with pytest.raises(ValueError, match="channel 16 is out of range: layer 'conv4_2' has 16 channels"):
        S.guided_backprop(tiny_net, x, layer="conv4_2", channel=16)
    with pytest.raises(ValueError, match="needs a channel"):
        S.guided_backprop(tiny_net, x, layer="conv4_2")
    with pytest.raises(ValueError, match="not both"):
        S.guided_backprop(tiny_net, x, 1, layer="conv4_2", channel=0)
    with pytest.raises(ValueError, match="outside"):
        S.gradient(tiny_net, x, layer="conv4_2", channel=0, position=(8, 0))
    with pytest.raises(TypeError, match="position"):
        S.gradient(tiny_net, x, layer="conv4_2", channel=0, position="middle")
    with pytest.raises(ValueError, match="n_samples"):
        S.smoothgrad(tiny_net, x, 0, n_samples=0)
    with pytest.raises(ValueError, match="riemann_trapezoid"):
        S.integrated_gradients(tiny_net, x, 0, method="riemann_trapezoid")
    with pytest.raises(ValueError, match="baseline"):
        S.integrated_gradients(tiny_net, x, 0, baseline=torch.zeros(1, 3, 8, 8))
    with pytest.raises(KeyError, match="unknown method"):
        S.compute_saliency(tiny_net, x, 0, method="deconvnet")
    with pytest.raises(ValueError, match="no nn.ReLU"):
        S.guided_backprop(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()).eval(), torch.zeros(1, 3, 3, 3), 0)


def test_default_unit_layer(tiny_net, course_model):
    assert S.default_unit_layer(course_model) == "conv4_2"
    assert S.default_unit_layer(tiny_net) == "conv4_2"
    from course_lib.layers import conv_layers

    assert conv_layers(tiny_net) == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "conv4_1", "conv4_2"]
    assert S.default_unit_layer(dropout_net()) == "0"
    with pytest.raises(ValueError, match="no conv layers"):
        S.default_unit_layer(nn.Sequential(nn.Linear(2, 2)))


def test_top_channels_are_the_strongest(tiny_net):
    from course_lib.layers import record_activations

    x = image_for(tiny_net, 6)
    with record_activations(tiny_net, ["conv4_2"]) as acts:
        tiny_net(x)
    peaks = acts["conv4_2"][0].flatten(1).amax(1)
    top = S.top_channels(tiny_net, x, layer="conv4_2", k=3)
    assert len(top) == 3 and peaks[top[0]] == peaks.max()
    assert sorted(peaks[top].tolist(), reverse=True) == peaks.sort(descending=True).values[:3].tolist()


def test_display_helpers():
    a = torch.zeros(3, 4, 5)
    a[0, 1, 2], a[2, 0, 0] = 2.0, -1.0
    pic = S.attribution_image(a)
    assert pic.shape == (4, 5, 3)
    assert pic[1, 2, 0] == 1.0 and pic[0, 0, 2] == 0.25 and pic[3, 3, 1] == 0.5  # zero is mid-grey
    m = torch.arange(100.0).view(10, 10)
    clipped = S.clip_for_display(m, 0.9)
    assert clipped.max() == pytest.approx(89.1) and torch.equal(clipped[:8], m[:8])
    with pytest.raises(ValueError):
        S.attribution_image(torch.zeros(4, 4))


# --------------------------------------------------------------------------- GrabCut


def disc_scene(seed=0, size=96, centre=(40, 55), radius=20):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    img = rng.uniform(0.1, 0.5, (size, size, 3)) * np.array([0.6, 0.8, 1.0])  # textured, bluish
    img[disc] = np.array([0.95, 0.85, 0.2]) + rng.normal(0, 0.03, (disc.sum(), 3))  # bright yellow disc
    return np.clip(img, 0, 1), disc, yy, xx


def blob(yy, xx, centre, width, rng):
    return np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * width ** 2)) + rng.uniform(0, 0.3, yy.shape)


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_grabcut_recovers_the_salient_disc():
    img, disc, yy, xx = disc_scene()
    sal = blob(yy, xx, (40, 55), 12, np.random.default_rng(1))
    mask = S.grabcut_from_saliency(img, sal)
    assert mask.dtype == bool and mask.shape == disc.shape
    assert iou(mask, disc) > 0.8
    # the same with uint8 pixels and a torch saliency map
    assert iou(S.grabcut_from_saliency((img * 255).astype(np.uint8), torch.from_numpy(sal)), disc) > 0.8


def test_grabcut_follows_the_saliency_not_just_the_colours():
    """Saliency on a patch of background: the cut must not be the (colour-wise obvious) disc."""
    img, disc, yy, xx = disc_scene()
    sal = blob(yy, xx, (80, 15), 8, np.random.default_rng(2))
    assert iou(S.grabcut_from_saliency(img, sal), disc) < 0.3


def test_grabcut_seeds_follow_the_quantiles():
    import cv2

    sal = np.arange(100.0).reshape(10, 10)
    seeds = S.grabcut_seeds(sal, fg_quantile=0.9, bg_quantile=0.3)
    assert (seeds == cv2.GC_FGD).sum() == 10 and (seeds[sal >= 90] == cv2.GC_FGD).all()
    assert (seeds == cv2.GC_BGD).sum() == 30 and (seeds[sal <= 29] == cv2.GC_BGD).all()  # quantile 29.7
    middle = seeds[(sal > 30) & (sal < 89)]
    assert set(np.unique(middle)) == {cv2.GC_PR_FGD, cv2.GC_PR_BGD}


@pytest.mark.parametrize("fg,bg", [(0.3, 0.5), (0.5, 0.5), (1.0, 0.3), (0.95, 0.0), (1.5, 0.2), (0.9, -0.1),
                                   (True, 0.2)])
def test_grabcut_bad_quantiles(fg, bg):
    img, _, yy, xx = disc_scene()
    with pytest.raises(ValueError, match="quantile"):
        S.grabcut_from_saliency(img, blob(yy, xx, (40, 55), 12, np.random.default_rng(0)), fg, bg)


def test_grabcut_bad_input():
    img, _, yy, xx = disc_scene()
    with pytest.raises(ValueError, match="constant"):
        S.grabcut_from_saliency(img, np.ones((96, 96)))
    with pytest.raises(ValueError, match="same size"):
        S.grabcut_from_saliency(img, np.random.default_rng(0).random((64, 64)))
    with pytest.raises(ValueError, match="H x W x 3"):
        S.grabcut_from_saliency(img[..., 0], np.random.default_rng(0).random((96, 96)))
    with pytest.raises(ValueError, match="2-D"):
        S.grabcut_from_saliency(img, np.random.default_rng(0).random((1, 96, 96)))


def test_show_grabcut_draws_every_panel():
    img, disc, yy, xx = disc_scene()
    sal = blob(yy, xx, (40, 55), 12, np.random.default_rng(1))
    fig = S.show_grabcut(img, sal, disc, seeds=S.grabcut_seeds(sal))
    assert [ax.get_title() for ax in fig.axes][-2:] == ["GrabCut mask", "cut-out"]
    assert len(fig.axes) == 5


# --------------------------------------------------------------------------- on the GPU, when there is one


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_agnostic(tiny_net):
    x = image_for(tiny_net)
    gpu = copy.deepcopy(tiny_net).cuda()
    for method in S.METHODS:
        kw = {"n_samples": 3, "seed": None} if method == "SmoothGrad" else {}
        torch.manual_seed(0)
        cpu_map = S.compute_saliency(tiny_net, x, 1, method=method, **kw)
        torch.manual_seed(0)
        gpu_map = S.compute_saliency(gpu, x.cuda(), 1, method=method, **kw)
        assert gpu_map.device.type == "cuda"
        if method != "SmoothGrad":  # the GPU's random numbers differ from the CPU's
            close(gpu_map, cpu_map, rtol=1e-3, floor=1e-4)  # another device: other kernels, other sums


# --------------------------------------------------------------------------- issue 15: the shared checks


def test_nan_is_detected_not_explained(tiny_net):
    """An all-NaN image used to be "predicted" as class 0, and a NaN pixel gave finite gradient maps."""
    with pytest.raises(ValueError, match=r"NaN or infinite value\(s\).*finite number"):
        S.predicted_class(tiny_net, torch.full((1, 3, 64, 64), float("nan")))
    x = image_for(tiny_net)
    x[0, 1, 10, 10] = float("nan")
    for method in S.METHODS:
        with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\)"):
            S.compute_saliency(tiny_net, x, 0, method=method)
    with pytest.raises(ValueError, match="NaN"):
        S.top_channels(tiny_net, x, layer="conv4_2")


@pytest.mark.parametrize("dtype,match", [(torch.float64, r"float64 but the model's weights are torch\.float32: "
                                                          r"convert the image with x\.float\(\)"),
                                         (torch.uint8, r"floating-point.*divide uint8 pixels by 255")])
def test_other_dtypes_get_a_clear_error_not_torchs(tiny_net, dtype, match):
    x = image_for(tiny_net).to(dtype)
    for call in (lambda: S.vanilla_saliency(tiny_net, x, 0), lambda: S.predicted_class(tiny_net, x),
                 lambda: S.guided_backprop(tiny_net, x, 0)):
        with pytest.raises(TypeError, match=match):
            call()


def test_empty_image_is_refused_before_the_model_sees_it(tiny_net):
    with pytest.raises(ValueError, match=r"empty \(shape \[1, 3, 0, 0\]\)"):
        S.vanilla_saliency(tiny_net, torch.zeros(1, 3, 0, 0), 0)


def test_top_channels_k(tiny_net):
    x = image_for(tiny_net)
    assert len(S.top_channels(tiny_net, x, layer="conv4_2", k=np.int64(3))) == 3
    assert len(S.top_channels(tiny_net, x, layer="conv4_2", k=99)) == 16      # all of them
    for bad in (-1, 0):
        with pytest.raises(ValueError, match="k must be an int >= 1"):
            S.top_channels(tiny_net, x, layer="conv4_2", k=bad)
    with pytest.raises(TypeError, match="k must be an int"):
        S.top_channels(tiny_net, x, layer="conv4_2", k=2.0)


def test_noise_level_may_be_a_numpy_number(tiny_net):
    x = image_for(tiny_net)
    ours = S.smoothgrad(tiny_net, x, 0, n_samples=3, noise_level=np.float32(0.25))
    assert torch.equal(ours, S.smoothgrad(tiny_net, x, 0, n_samples=3, noise_level=0.25))
    for bad, err in ((True, TypeError), (float("nan"), ValueError), (-0.1, ValueError), ("0.1", TypeError)):
        with pytest.raises(err, match="noise_level must be"):
            S.smoothgrad(tiny_net, x, 0, n_samples=3, noise_level=bad)


@pytest.mark.parametrize("bad", [2.7, True, "3"])
def test_targets_that_are_not_ints_are_refused_as_in_cam(tiny_net, bad):
    with pytest.raises(TypeError, match=r"target must be a class index \(an int\)"):
        S.gradient(tiny_net, image_for(tiny_net), bad)


# --------------------------------------------------------------------------- pixels: the one image space


def normalised_by_hand(model, x):
    """What the old course fed its methods: ``(x - mean) / std``, now refused."""
    m = torch.tensor(model.mean).view(1, 3, 1, 1)
    s = torch.tensor(model.std).view(1, 3, 1, 1)
    return (x - m) / s


@pytest.mark.parametrize("call", METHOD_CALLS + [
    lambda m, x: S.compute_saliency(m, x, 1, method="gradient"),
    lambda m, x: S.predicted_class(m, x),
    lambda m, x: S.top_channels(m, x, layer="conv4_2"),
])
def test_a_normalised_image_is_refused_saying_to_pass_pixels(tiny_net, call):
    x = image_for(tiny_net, 11)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\].*normalised by hand.*pass the pixels instead"):
        call(tiny_net, normalised_by_hand(tiny_net, x))
    call(tiny_net, x)                                       # the pixels themselves are fine


def test_integrated_gradients_default_baseline_is_the_mean_colour(tiny_net):
    x = image_for(tiny_net, 12)
    base = mean_image(tiny_net, x)
    assert torch.equal(S.integrated_gradients(tiny_net, x, 4, steps=6),
                       S.integrated_gradients(tiny_net, x, 4, baseline=base, steps=6))
    # the network sees the mean colour as zero: the old "zeros in normalized space"
    assert torch.allclose(tiny_net.normalize(base), torch.zeros_like(base), atol=1e-6)
    assert not torch.allclose(S.integrated_gradients(tiny_net, x, 4, steps=6),
                              S.integrated_gradients(tiny_net, x, 4, baseline=torch.zeros_like(x), steps=6))


def old_normalised_space_gradient(model, x, target):
    """The gradient the course used to compute, by hand: a copy of the model without its Normalize layer
    (nn.Identity in its place), fed ``(x - mean) / std``, differentiated w.r.t. that normalised image."""
    old = copy.deepcopy(model)
    mean, std = old.normalize.mean.clone(), old.normalize.std.clone()
    old.normalize = nn.Identity()
    xn = ((x - mean) / std).detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(old(xn)[0, target], xn)
    return g[0], std.view(3, 1, 1)


# Measured (float32, CPU): the largest difference is 0 for tiny_net and the course model, both classes: autograd
# differentiates (x - mean) / std by dividing the normalised-space gradient by std, the very operation done here.
# The tolerance is kept anyway (another backend may fuse the division differently).
def test_pixel_gradient_is_the_old_normalised_gradient_divided_by_std(net):
    """x_norm = (x - mean) / std, so dS/dx = dS/dx_norm / std per channel (the chain rule, exactly)."""
    x = image_for(net, 13)
    for target in (2, 7):
        old, std = old_normalised_space_gradient(net, x, target)
        new = S.gradient(net, x, target)
        expected = old / std
        assert new.abs().sum() > 0
        rel = float(((new - expected).abs().max() / expected.abs().max()))
        print(f"{type(net).__name__} input {net.input_size}, class {target}: largest difference / largest "
              f"|gradient| = {rel:.2e}")
        close(new, expected, rtol=1e-5, floor=1e-6)
        # the factor is per channel: not the old gradient itself (std < 1 makes every pixel gradient larger)
        assert not torch.allclose(new, old, rtol=1e-2)
        ratio = (new.abs().flatten(1).sum(1) / old.abs().flatten(1).sum(1))
        close(ratio, 1 / std.flatten(), rtol=1e-4)
