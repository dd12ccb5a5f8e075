"""Tests for course_lib.style: Gram matrices against an explicit loop, the losses' gradients by
finite differences (gradcheck, float64), texture synthesis lowering the style loss from noise,
style transfer between content and style, style blending and scale, colour preservation
(measured in YIQ), the extractor stopping early, average-pool swapping, VGG layer defaults,
and clear errors."""
import pytest
import torch
import torchvision
from torch import nn

from conftest import close
from course_lib import optimize as O
from course_lib import style as ST


def test_gram_matrix_matches_an_explicit_loop():
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    g = ST.gram_matrix(f)
    want = torch.zeros(2, 3, 3)
    for n in range(2):
        for i in range(3):
            for j in range(3):
                want[n, i, j] = sum(f[n, i, y, x] * f[n, j, y, x] for y in range(4) for x in range(5)) / (3 * 4 * 5)
    close(g, want)
    # a Gram matrix forgets where things are: shuffling the positions changes nothing
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    shuffled = f.reshape(2, 3, 20)[..., perm].reshape(2, 3, 4, 5)
    close(ST.gram_matrix(shuffled), g)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ST.gram_matrix(torch.randn(3, 4, 5))


def test_style_and_content_losses_pass_gradcheck(tiny_net):
    net = tiny_net.double()
    style = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    content = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    j = (ST.style_loss(ST.style_targets(net, style, layers=("relu1_1", "relu2_1")))
         + ST.content_loss(net, content, layer="relu2_1"))

    def f(x):
        with O.record_activations(net, list(j.layers), detach=False) as acts:
            net(x)
            return j(acts, x)

    x = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)  # float64 finite differences: not rounding-tight
    assert O.evaluate(net, j, content).item() < 0  # a loss, negated
    assert abs(O.evaluate(net, ST.content_loss(net, content, layer="relu2_1"), content).item()) < 1e-12


def test_texture_synthesis_lowers_the_style_loss_from_noise(course_model):
    g = torch.Generator().manual_seed(0)
    stripes = (torch.sin(torch.arange(64.0) / 2.0)[None, :] * 0.4 + 0.5).expand(64, 64)
    style = torch.stack([stripes, stripes.T, 0.5 * torch.ones(64, 64)])[None].clamp(0, 1)
    j = ST.style_loss(ST.style_targets(course_model, style))
    noise = torch.rand(1, 3, 48, 80, generator=g)
    x, history = ST.texture_synthesis(course_model, style, size=(48, 80), steps=30, progress=False)
    assert len(history.objective) == 30 and history.objective[-1] > history.objective[0]
    assert x.shape == (1, 3, 48, 80) and x.min() >= 0 and x.max() <= 1
    before, after = -O.evaluate(course_model, j, noise).item(), -O.evaluate(course_model, j, x).item()
    assert after < before / 5, (before, after)  # measured: 0.93 -> 0.14 (6.8x) in 30 steps


def test_average_pooling_copy_leaves_the_model_alone(tiny_net):
    avg = ST.with_average_pooling(tiny_net)
    assert not any(isinstance(m, nn.MaxPool2d) for m in avg.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in tiny_net.modules())
    assert avg.features.pool1.kernel_size == tiny_net.features.pool1.kernel_size
    x = torch.rand(1, 3, 64, 64)
    assert avg(x).shape == (1, 10)


def test_a_style_image_too_small_for_the_layers_is_refused(tiny_net):
    with pytest.raises(ValueError, match="too small"):
        ST.style_targets(tiny_net, torch.rand(1, 3, 12, 12))
    with pytest.raises(KeyError, match="no layer"):
        ST.style_targets(tiny_net, torch.rand(1, 3, 64, 64), layers=("relu9_1",))
    with pytest.raises(ValueError, match="RGBA"):
        ST.texture_synthesis(tiny_net, torch.rand(1, 4, 64, 64), steps=1, progress=False)


def _scene(h=64, w=64):
    """A smooth synthetic 'photo': a warm sky gradient with a dark block (content) -- no network needed."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.3 + 0.5 * yy, 0.4 + 0.3 * xx, 0.8 - 0.4 * yy])
    img[:, h // 3: h // 3 + h // 4, w // 4: w // 2] = torch.tensor([0.1, 0.15, 0.1])[:, None, None]
    return img[None].clamp(0, 1)


def _stripes(h=64, w=64, period=6.0):
    """A colourful striped texture (style)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    s = torch.sin((xx + 0.5 * yy) / period * 6.283)
    return torch.stack([0.5 + 0.45 * s, 0.5 - 0.45 * s, 0.3 + 0.2 * s.abs()])[None].clamp(0, 1)


def test_style_transfer_sits_between_content_and_texture(course_model):
    content, style = _scene(), _stripes()
    out = ST.style_transfer(course_model, content, style, style_weight=1.0, steps=15, progress=False).image
    texture = ST.texture_synthesis(course_model, style, size=(64, 64), steps=15, progress=False).image
    assert out.shape == content.shape and 0 <= out.min() and out.max() <= 1
    L = {name: ST.transfer_losses(course_model, x, content, style) for name, x in
         (("content", content), ("out", out), ("texture", texture))}
    assert L["out"]["style"] < L["content"]["style"] / 1.5, L  # it took on the style (measured: 0.94 -> 0.46) ...
    assert L["out"]["content"] < L["texture"]["content"] / 3, L  # ... and kept the content (0.25 vs 1.34)
    assert L["content"]["content"] == 0
    # beta/alpha decides: more style weight, lower style loss and higher content loss
    more = ST.style_transfer(course_model, content, style, style_weight=30.0, steps=15, progress=False).image
    L_more = ST.transfer_losses(course_model, more, content, style)
    assert L_more["style"] < L["out"]["style"] and L_more["content"] > L["out"]["content"], (L_more, L["out"])
    # the total-variation weight smooths the result
    smooth = ST.style_transfer(course_model, content, style, style_weight=1.0, tv_weight=10.0, steps=15,
                               progress=False).image
    assert ST.transfer_losses(course_model, smooth, content, style)["tv"] < L["out"]["tv"]


def test_transfer_losses_match_the_objective_that_is_optimised(tiny_net):
    content, style, x = _scene(), _stripes(), _stripes(period=4.0)
    L = ST.transfer_losses(tiny_net, x, content, style)
    targets = ST.blended_targets(tiny_net, [style], None, layers=ST.COURSE_STYLE_LAYERS)
    j = ST.transfer_objective(tiny_net, content, targets, style_weight=2.0, tv_weight=3.0,
                              content_layer=ST.COURSE_CONTENT_LAYER)
    want = -(L["content"] + 2.0 * L["style"] + 3.0 * L["tv"])
    close(O.evaluate(tiny_net, j, x).item(), want, rtol=1e-5)


def test_blended_targets_are_the_weighted_mean_and_equal_the_summed_losses(tiny_net):
    a, b = _stripes(), _scene()
    ga, gb = ST.style_targets(tiny_net, a), ST.style_targets(tiny_net, b)
    blend = ST.blended_targets(tiny_net, [a, b], [3, 1])
    for name in ST.COURSE_STYLE_LAYERS:
        close(blend[name], 0.75 * ga[name] + 0.25 * gb[name])
        # sum_k w_k |G - G_k|^2 = |G - sum_k w_k G_k|^2 + a constant: the same minimiser
        g1, g2 = torch.randn_like(ga[name]), torch.randn_like(ga[name])
        summed = lambda g: 0.75 * (g - ga[name]).pow(2).sum() + 0.25 * (g - gb[name]).pow(2).sum()
        blended = lambda g: (g - blend[name]).pow(2).sum()
        # differences of sums of squares: their rounding is the sums'
        close(summed(g1) - blended(g1), summed(g2) - blended(g2), rtol=1e-4, floor=1e-5, scale=summed(g1) + summed(g2))
    with pytest.raises(ValueError, match="one non-negative weight per style"):
        ST.blended_targets(tiny_net, [a, b], [1.0])
    with pytest.raises(ValueError, match="at least one style"):
        ST.blended_targets(tiny_net, [])


def test_style_scale_resizes_the_style_before_its_grams(tiny_net):
    style = _stripes(80, 80)
    assert ST.scale_image(style, 0.5).shape[-2:] == (40, 40)
    assert ST.scale_image(style, 1.5).shape[-2:] == (120, 120)
    small, big = ST.transfer_losses(tiny_net, _scene(), _scene(), style, style_scale=1.0), \
        ST.transfer_losses(tiny_net, _scene(), _scene(), style, style_scale=2.0)
    assert small["style"] != big["style"]  # a different target
    with pytest.raises(ValueError, match="positive"):
        ST.scale_image(style, 0)


def _chroma(x):
    return ST.rgb_to_yiq(x)[:, 1:]


def test_yiq_round_trip_and_luminance():
    x = _stripes()
    torch.testing.assert_close(ST.yiq_to_rgb(ST.rgb_to_yiq(x)), x, atol=1e-5, rtol=0)
    grey = ST.luminance(x)
    assert grey.shape == x.shape and torch.equal(grey[:, 0], grey[:, 1])
    torch.testing.assert_close(_chroma(grey), torch.zeros_like(_chroma(grey)), atol=1e-5, rtol=0)  # no colour


def test_colour_preservation_keeps_the_contents_chroma(course_model):
    content, style = _scene(), _stripes()
    plain = ST.style_transfer(course_model, content, style, style_weight=3.0, steps=10, progress=False).image
    kept, history = ST.style_transfer(course_model, content, style, style_weight=3.0, steps=10, progress=False,
                                      preserve_colour="luminance")
    assert len(history.objective) == 10   # the run's history, through the recolouring
    hist = ST.style_transfer(course_model, content, style, style_weight=3.0, steps=10, progress=False,
                             preserve_colour="histogram").image
    err = {name: (_chroma(x) - _chroma(content)).abs().mean().item() for name, x in
           (("plain", plain), ("luminance", kept), ("histogram", hist))}
    assert err["luminance"] < 0.01 < err["plain"] / 3, err  # luminance-only: the content's chroma exactly (up to clipping)
    assert err["histogram"] < err["plain"] / 1.5, err  # measured: 0.045 vs 0.075
    # ... while the luminance did change: it is a style transfer, not a copy
    assert (ST.rgb_to_yiq(kept)[:, 0] - ST.rgb_to_yiq(content)[:, 0]).abs().mean() > 0.02


def test_colour_histogram_matching_gives_the_contents_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    style = 0.3 + 0.4 * torch.rand(1, 3, 40, 50, generator=g)
    style[:, 0] = 0.1 + 0.5 * style[:, 1] + 0.2 * style[:, 0]  # correlated channels
    content = 0.4 + 0.1 * torch.rand(1, 3, 30, 30, generator=g)
    content[:, 2] = 0.9 - content[:, 0] + 0.05 * content[:, 1]  # anti-correlated
    out = ST.match_colour_histogram(style, content)

    def stats(x):
        px = x.permute(1, 0, 2, 3).reshape(3, -1).double()
        return px.mean(1), torch.cov(px, correction=0)
    (mo, co), (mc, cc) = stats(out), stats(content)
    torch.testing.assert_close(mo, mc, atol=2e-3, rtol=0)
    torch.testing.assert_close(co, cc, atol=2e-4, rtol=0)
    assert out.shape == style.shape


def test_the_extractor_never_runs_a_layer_after_the_last_wanted_one(course_model):
    calls = []
    deeper = [course_model.features.conv3_1, course_model.features.conv4_1]
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in deeper]
    try:
        ST.style_targets(course_model, _stripes(), layers=("relu1_1", "relu2_1"))
        O.activations(course_model, _scene(), ["relu2_1"])
        ST.style_transfer(course_model, _scene(), _stripes(), layers=("relu1_1", "relu2_1"),
                          content_layer="relu2_1", steps=2, progress=False)
    finally:
        for h in handles:
            h.remove()
    assert calls == []


def test_average_pooling_copy_of_the_blur_pool_variant():
    from course_lib.models import BlurMaxPool2d, CourseNet
    net = CourseNet(blocks=((8,), (8,), (8, 8), (16, 16)), pool="blur")
    avg = ST.with_average_pooling(net)
    assert not any(isinstance(m, BlurMaxPool2d) for m in avg.modules())
    assert any(isinstance(m, BlurMaxPool2d) for m in net.modules())
    x = torch.rand(1, 3, 64, 64)
    assert avg.features[:3](x).shape == net.features[:3](x).shape


def test_vgg_and_alexnet_get_gatys_layers_and_resnet_a_clear_error():
    from course_lib.layers import lecture_names, record_activations
    from course_lib.models import prepare_model
    torch.manual_seed(0)
    vgg = prepare_model(torchvision.models.vgg19(), [str(i) for i in range(1000)], 224,
                        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)
    layers, content = ST.default_layers(vgg)
    assert layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1") and content == "relu4_2"
    x = ST.style_transfer(vgg, _scene(48, 48), _stripes(), style_weight=1.0, steps=2, progress=False).image
    assert x.shape == (1, 3, 48, 48) and torch.isfinite(x).all()
    avg = ST.with_average_pooling(vgg)  # the copy keeps the lecture's layer names
    assert list(lecture_names(avg)) == list(lecture_names(vgg))
    x = ST.texture_synthesis(vgg, _stripes(), size=48, steps=2, pool="average", progress=False).image
    assert x.shape == (1, 3, 48, 48) and torch.isfinite(x).all()
    alex = prepare_model(torchvision.models.alexnet(), [str(i) for i in range(1000)], 224,
                         (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)
    assert ST.default_layers(alex) == (("relu1", "relu2", "relu3", "relu4", "relu5"), "relu4")
    # ResNet and SqueezeNet: their stage outputs, every one a real layer with [N, C, h, w] output
    for net in (torchvision.models.resnet18(), torchvision.models.squeezenet1_1()):
        layers, content = ST.default_layers(net)
        assert content in layers or content in lecture_names(net)
        with torch.no_grad(), record_activations(net, layers) as acts:
            net(torch.rand(1, 3, 64, 64))
        assert all(acts[n].ndim == 4 for n in layers)
    with pytest.raises(ValueError, match="no default style/content layers"):
        ST.default_layers(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))


def test_style_transfer_refuses_bad_input(tiny_net):
    content, style = _scene(), _stripes()
    with pytest.raises(ValueError, match="preserve_colour"):
        ST.style_transfer(tiny_net, content, style, preserve_colour="colour", steps=1, progress=False)
    with pytest.raises(ValueError, match="init"):
        ST.style_transfer(tiny_net, content, style, init="zeros", steps=1, progress=False)
    with pytest.raises(ValueError, match="pool"):
        ST.style_transfer(tiny_net, content, style, pool="min", steps=1, progress=False)
    with pytest.raises(ValueError, match="greyscale or RGBA"):
        ST.style_transfer(tiny_net, content, torch.rand(1, 1, 64, 64), steps=1, progress=False)
    with pytest.raises(ValueError, match="too small"):
        ST.style_transfer(tiny_net, content, torch.rand(1, 3, 10, 10), steps=1, progress=False)
    with pytest.raises(KeyError, match="no layer"):
        ST.style_transfer(tiny_net, content, style, content_layer="relu7_1", layers=("relu1_1",), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ST.style_transfer(tiny_net, content * 255, style, steps=1, progress=False)


def test_random_weights_copy_changes_the_weights_only_of_the_copy(tiny_net):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    a, b = ST.with_random_weights(tiny_net, seed=1), ST.with_random_weights(tiny_net, seed=1)
    for k, v in tiny_net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)  # the original is untouched
    w = "features.conv2_1.weight"
    assert not torch.equal(a.state_dict()[w], before[w]) and torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not any(p.requires_grad for p in a.parameters())


