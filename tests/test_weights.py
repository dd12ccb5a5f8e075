"""Tests for course_lib.weights: filters drawn as RGB grids and greyscale brackets.

The oracle for every grid is plain numpy written here: per-filter min-max scaling
``(w - min) / (max - min)`` and nearest upscaling as a Kronecker product with a block
of ones, placed at the positions the documented layout arithmetic gives.
"""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from course_lib.imaging import rescale  # noqa: E402
from course_lib.weights import (  # noqa: E402
    channel_filter_grid, conv_layers, conv_weight, default_scale, filter_grid, minmax_per_filter,
    minmax_per_image, rgb_filter_grid, show_filters, upscale_nearest)


def oracle_minmax(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / (a.max() - a.min())


def oracle_up(a: np.ndarray, s: int) -> np.ndarray:
    """Nearest upscaling of the last two axes of ``a``: a Kronecker product with an ``s x s`` block of ones."""
    return np.kron(a, np.ones((s, s)))


@pytest.fixture
def w64():
    return torch.randn(64, 3, 5, 5, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- scaling helpers

def test_minmax_per_filter_matches_rescale_of_each_filter(w64):
    scaled = minmax_per_filter(w64)
    for i in range(64):
        np.testing.assert_allclose(scaled[i].numpy(), rescale(w64[i]), atol=1e-6)
    flat = scaled.reshape(64, -1)
    assert torch.allclose(flat.min(1).values, torch.zeros(64)) and torch.allclose(flat.max(1).values, torch.ones(64))


def test_minmax_constant_filter_gives_zeros_not_nan():
    w = torch.randn(3, 2, 3, 3)
    w[1] = 0.7
    s = minmax_per_filter(w)
    assert torch.isfinite(s).all() and (s[1] == 0).all()


def test_minmax_per_image_scales_each_slice():
    w = torch.randn(4, 5, 3, 3)
    s = minmax_per_image(w)
    for i in range(4):
        for c in range(5):
            np.testing.assert_allclose(s[i, c].numpy(), oracle_minmax(w[i, c].numpy()), atol=1e-6)


def test_upscale_nearest_is_a_kronecker_product():
    x = torch.randn(2, 3, 4, 5)
    for s in (1, 2, 3):
        up = upscale_nearest(x, s)
        assert up.shape == (2, 3, 4 * s, 5 * s)
        np.testing.assert_array_equal(up.numpy(), oracle_up(x.numpy(), s))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="scale"):
            upscale_nearest(x, bad)


def test_default_scale():
    assert [default_scale(k) for k in (3, 5, 7, 11)] == [5, 3, 2, 1]


# --------------------------------------------------------------------------- RGB grid

def test_64_rgb_filters_make_an_8x8_grid_with_exact_layout(w64):
    s, pad = 3, 1
    grid = rgb_filter_grid(w64, scale=s, padding=pad, pad_value=1.0)
    cell = 5 * s
    assert grid.shape == (8 * cell + 9 * pad, 8 * cell + 9 * pad, 3) == (129, 129, 3)
    mask = np.zeros(grid.shape[:2], bool)
    for i in range(64):
        r, c = divmod(i, 8)
        top, left = pad + r * (cell + pad), pad + c * (cell + pad)
        expected = oracle_up(oracle_minmax(w64[i].numpy()), s).transpose(1, 2, 0)
        np.testing.assert_allclose(grid[top:top + cell, left:left + cell], expected, atol=1e-6)
        mask[top:top + cell, left:left + cell] = True
    assert (grid[~mask] == 1.0).all()  # everything else is padding


def test_rgb_grid_pixel_equals_scaled_weight(w64):
    """One weight, looked up by hand: filter 10 (row 1, col 2), weight (y=3, x=4), every colour."""
    grid = rgb_filter_grid(w64, scale=2, padding=2, pad_value=0.0)
    cell = 10
    top, left = 2 + 1 * (cell + 2), 2 + 2 * (cell + 2)
    f = w64[10]
    for ch in range(3):
        value = (f[ch, 3, 4] - f.min()) / (f.max() - f.min())
        assert grid[top + 3 * 2 + 1, left + 4 * 2, ch] == pytest.approx(value.item(), abs=1e-6)


def test_rgb_grid_near_square_for_other_counts():
    w = torch.randn(10, 3, 3, 3)
    grid = rgb_filter_grid(w, scale=1, padding=1)
    assert grid.shape == (3 * 3 + 4, 4 * 3 + 5, 3)  # ceil(sqrt(10)) = 4 columns, 3 rows
    assert rgb_filter_grid(w, n=4, scale=1).shape == (2 * 3 + 3, 2 * 3 + 3, 3)
    assert rgb_filter_grid(w, n=100, scale=1).shape == grid.shape  # capped at the 10 filters there are


def test_rgb_grid_from_model_equals_grid_from_tensor(tiny_net):
    before = tiny_net.features.conv1_1.weight.clone()
    a = rgb_filter_grid(tiny_net, "conv1_1")
    b = rgb_filter_grid(tiny_net.features.conv1_1.weight)
    np.testing.assert_array_equal(a, b)
    assert torch.equal(tiny_net.features.conv1_1.weight, before)  # weights untouched
    assert a.shape == (3 * 15 + 4, 3 * 15 + 4, 3)  # 8 filters, 5x5 scaled by 3: 3 x 3 grid


# --------------------------------------------------------------------------- greyscale brackets

def test_channel_grid_layout_one_row_per_filter():
    w = torch.randn(4, 6, 3, 3, generator=torch.Generator().manual_seed(2))
    s, pad, gap = 2, 1, 3
    grid = channel_filter_grid(w, scale=s, padding=pad, gap=gap, pad_value=1.0)
    h = 3 * s
    assert grid.shape == (4 * h + 5 * gap, 6 * h + 5 * pad + 2 * gap) == (39, 47)
    mask = np.zeros(grid.shape, bool)
    for i in range(4):
        scaled = oracle_minmax(w[i].numpy())  # the whole filter, all 6 channels, scaled together
        for c in range(6):
            top, left = gap + i * (h + gap), gap + c * (h + pad)
            np.testing.assert_allclose(grid[top:top + h, left:left + h], oracle_up(scaled[c], s), atol=1e-6)
            mask[top:top + h, left:left + h] = True
    assert (grid[~mask] == 1.0).all()


def test_channel_grid_per_image_scaling():
    w = torch.randn(2, 3, 3, 3)
    grid = channel_filter_grid(w, scale=1, padding=1, gap=2, per="image")
    for i in range(2):
        for c in range(3):
            top, left = 2 + i * 5, 2 + c * 4
            np.testing.assert_allclose(grid[top:top + 3, left:left + 3], oracle_minmax(w[i, c].numpy()), atol=1e-6)


def test_channel_grid_limits_filters_and_channels(tiny_net):
    w = tiny_net.features.conv4_1.weight  # [16, 8, 3, 3]
    full = channel_filter_grid(w, scale=1, padding=1, gap=2)
    part = channel_filter_grid(tiny_net, "conv4_1", n_filters=5, n_channels=3, scale=1, padding=1, gap=2)
    assert full.shape == (16 * 3 + 17 * 2, 8 * 3 + 7 + 4)
    assert part.shape == (5 * 3 + 6 * 2, 3 * 3 + 2 + 4)
    # scaling is per whole filter, so limiting the view does not change the shown values
    np.testing.assert_array_equal(part[:-2, :-2], full[:part.shape[0] - 2, :part.shape[1] - 2])


def test_filter_grid_dispatches_on_channels(tiny_net):
    assert filter_grid(tiny_net, "conv1_1").ndim == 3
    g = filter_grid(tiny_net, "conv2_1", n_filters=4, n_channels=2)
    assert g.ndim == 2 and g.shape == (4 * 15 + 5 * 3, 2 * 15 + 1 + 6)


# --------------------------------------------------------------------------- models, errors, figures

def test_conv_layers(tiny_net, course_model):
    assert conv_layers(tiny_net) == ["conv1_1", "conv2_1", "conv3_1", "conv3_2", "conv4_1", "conv4_2"]
    assert conv_layers(course_model)[0] == "conv1_1"
    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    assert conv_layers(seq) == ["0", "2"]


def test_errors(tiny_net, w64):
    with pytest.raises(TypeError, match="Conv2d"):
        rgb_filter_grid(tiny_net, "fc")
    with pytest.raises(TypeError, match="ReLU"):
        channel_filter_grid(tiny_net, "relu2_1")
    with pytest.raises(KeyError, match="conv1_1"):
        filter_grid(tiny_net, "conv9_9")
    with pytest.raises(TypeError, match="layer"):
        rgb_filter_grid(tiny_net)
    with pytest.raises(TypeError, match="only used with a model"):
        rgb_filter_grid(w64, "conv1_1")
    with pytest.raises(ValueError, match=r"\[N, C, h, w\]"):
        rgb_filter_grid(torch.randn(64, 5, 5))
    with pytest.raises(ValueError, match=r"\[N, C, h, w\]"):
        channel_filter_grid(tiny_net.fc.weight)
    with pytest.raises(ValueError, match="3 input channels"):
        rgb_filter_grid(tiny_net, "conv2_1")
    with pytest.raises(ValueError, match="n_filters"):
        channel_filter_grid(w64, n_filters=0)
    with pytest.raises(ValueError, match="per"):
        channel_filter_grid(w64, per="channel")
    with pytest.raises(TypeError, match="tensor or a model"):
        conv_weight(np.zeros((1, 3, 3, 3)))


def test_conv_weight_is_a_detached_cpu_copy(tiny_net):
    w = conv_weight(tiny_net, "conv2_1")
    w += 1
    assert not torch.equal(w, tiny_net.features.conv2_1.weight)
    assert w.dtype == torch.float32 and not w.requires_grad


def test_show_filters_returns_figure(tiny_net):
    fig = show_filters(tiny_net, "conv1_1")
    assert isinstance(fig, Figure) and "[8, 3, 5, 5]" in fig.axes[0].get_title()
    fig2 = show_filters(tiny_net, "conv3_1", n_filters=4, n_channels=3, per="image")
    assert "4 filters" in fig2.axes[0].get_title()
    plt.close("all")


# --------------------------------------------------------------------------- edge-like first layer

from course_lib.weights import edge_like_share, first_colour_component, fit_gabor, gabor, is_oriented  # noqa: E402


def test_fit_gabor_recovers_a_noisy_gabor():
    g = gabor(8, 3.5, 3.2, 0.7, 1.5, 2.0, 0.2, 0.3)
    noisy = g + 0.01 * np.random.default_rng(0).normal(size=g.shape)
    params, r2 = fit_gabor(noisy)
    assert r2 > 0.99
    assert params["freq"] == pytest.approx(0.2, abs=0.01)
    assert is_oriented(params, 8)


def test_blobs_ramps_and_noise_are_not_edges():
    blob, r2 = fit_gabor(gabor(8, 3.5, 3.5, 0.0, 1.5, 1.5, 0.0, 0.0))
    assert r2 > 0.95 and not is_oriented(blob, 8)  # fits, but it is a blob
    ramp = np.add.outer(np.arange(8.0), np.arange(8.0))
    params, r2 = fit_gabor(ramp)
    assert not is_oriented(params, 8)
    _, r2_noise = fit_gabor(np.random.default_rng(1).normal(size=(8, 8)))
    assert r2_noise < 0.5


def test_edge_like_share_counts_oriented_filters_in_one_colour_direction():
    rng = np.random.default_rng(0)
    edges = [np.outer([0.3, 0.6, 0.1], gabor(8, 3.5, 3.5, t, 1.6, 2.2, 0.22, 0.5)).reshape(3, 8, 8)
             for t in np.linspace(0, np.pi, 4, endpoint=False)]
    opponent = [np.outer([0.7, -0.7, 0.0], gabor(8, 3.5, 3.5, 1.0, 1.6, 2.2, 0.22, 0.0)).reshape(3, 8, 8)]
    blobs = [np.outer([0.2, 0.5, 0.9], gabor(8, 3.5, 3.5, 0.0, 2.0, 2.0, 0.0, 0.0)).reshape(3, 8, 8)]
    noise = [rng.normal(size=(3, 8, 8)) for _ in range(2)]
    w = torch.tensor(np.stack(edges + opponent + blobs + noise), dtype=torch.float32)
    share, fits = edge_like_share(w, progress=False)
    assert [f["edge_like"] for f in fits] == [True] * 5 + [False] * 3
    assert share == pytest.approx(5 / 8)
    u, s, part = first_colour_component(w[4])
    assert part == pytest.approx(1.0, abs=1e-6) and abs(u[2]) < 1e-6 and u[0] * u[1] < 0  # red vs green
    with pytest.raises(ValueError, match="RGB filters"):
        edge_like_share(torch.randn(4, 8, 3, 3))
