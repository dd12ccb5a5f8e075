"""Tests for course_lib.style: Gram matrices against an explicit loop, the losses' gradients by
finite differences (gradcheck, float64), texture synthesis lowering the style loss from noise,
average-pool swapping, and clear errors."""
import pytest
import torch
from torch import nn

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
    torch.testing.assert_close(g, want)
    # a Gram matrix forgets where things are: shuffling the positions changes nothing
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    shuffled = f.reshape(2, 3, 20)[..., perm].reshape(2, 3, 4, 5)
    torch.testing.assert_close(ST.gram_matrix(shuffled), g)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ST.gram_matrix(torch.randn(3, 4, 5))


def test_style_and_content_losses_pass_gradcheck(tiny_net):
    net = tiny_net.double()
    style = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    content = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    j = ST.style_loss(ST.style_targets(net, style, ("relu1_1", "relu2_1"))) + ST.content_loss(net, content, "relu2_1")

    def f(x):
        with O.record_activations(net, list(j.layers), detach=False) as acts:
            net(O.normalize(net, x))
            return j(acts, x)

    x = torch.rand(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-5)
    assert O.evaluate(net, j, content).item() < 0  # a loss, negated
    assert abs(O.evaluate(net, ST.content_loss(net, content, "relu2_1"), content).item()) < 1e-12


def test_texture_synthesis_lowers_the_style_loss_from_noise(course_model):
    g = torch.Generator().manual_seed(0)
    stripes = (torch.sin(torch.arange(64.0) / 2.0)[None, :] * 0.4 + 0.5).expand(64, 64)
    style = torch.stack([stripes, stripes.T, 0.5 * torch.ones(64, 64)])[None].clamp(0, 1)
    j = ST.style_loss(ST.style_targets(course_model, style))
    noise = torch.rand(1, 3, 48, 80, generator=g)
    x = ST.texture_synthesis(course_model, style, size=(48, 80), steps=30, progress=False)
    assert x.shape == (1, 3, 48, 80) and x.min() >= 0 and x.max() <= 1
    before, after = -O.evaluate(course_model, j, noise).item(), -O.evaluate(course_model, j, x).item()
    assert after < before / 10, (before, after)


def test_average_pooling_copy_leaves_the_model_alone(tiny_net):
    avg = ST.with_average_pooling(tiny_net)
    assert not any(isinstance(m, nn.MaxPool2d) for m in avg.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in tiny_net.modules())
    assert avg.features.pool1.kernel_size == tiny_net.features.pool1.kernel_size
    x = torch.rand(1, 3, 64, 64)
    assert avg(O.normalize(avg, x)).shape == (1, 10)


def test_a_style_image_too_small_for_the_layers_is_refused(tiny_net):
    with pytest.raises(ValueError, match="too small"):
        ST.style_targets(tiny_net, torch.rand(1, 3, 12, 12))
    with pytest.raises(KeyError, match="no layer"):
        ST.style_targets(tiny_net, torch.rand(1, 3, 64, 64), ("relu9_1",))
    with pytest.raises(ValueError, match="RGBA"):
        ST.texture_synthesis(tiny_net, torch.rand(1, 4, 64, 64), steps=1, progress=False)
