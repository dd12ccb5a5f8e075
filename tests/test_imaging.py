"""Tests for course_lib.imaging (images in and out of a model, grids) and course_lib.figures (heatmaps, plotting)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from course_lib.figures import (  # noqa: E402
    MISTAKE, crop_padding, heatmap_scales, overlay_heatmap, prediction_title, show_heatmap, show_heatmaps, show_image,
    show_image_groups, show_images)
from course_lib.imaging import make_grid, preprocess, rescale, to_array, to_tensor  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TinyModel(nn.Module):
    """A one-conv model carrying the attributes course models have."""

    def __init__(self, input_size=8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5)):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.input_size, self.mean, self.std = input_size, mean, std

    def forward(self, x):
        return self.conv(x)


def random_image(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------- to_tensor

def test_to_tensor_uint8_array_scales_and_moves_channels_first():
    img = random_image()
    t = to_tensor(img)
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), img / 255, atol=1e-7)


def test_to_tensor_pil_matches_array_and_float_arrays_are_kept():
    img = random_image()
    assert torch.equal(to_tensor(Image.fromarray(img)), to_tensor(img))
    f = np.full((2, 3, 3), 0.25)
    assert torch.equal(to_tensor(f), torch.full((3, 2, 3), 0.25))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK"])
def test_to_tensor_rejects_non_rgb_pil_with_advice(mode):
    image = Image.new(mode, (4, 3))
    with pytest.raises(ValueError, match=mode) as err:
        to_tensor(image)
    assert 'convert("RGB")' in str(err.value) and "load_image" in str(err.value)


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 4), (4, 5, 1), (3, 4, 5), (1, 4, 5, 3)])
def test_to_tensor_rejects_wrong_array_shapes_naming_the_shape(shape):
    with pytest.raises(ValueError, match=r"H x W x 3") as err:
        to_tensor(np.zeros(shape, dtype=np.uint8))
    assert str(shape) in str(err.value)


@pytest.mark.parametrize("source", [
    np.full((2, 3, 3), 0.5, dtype=np.float32),
    torch.full((3, 2, 3), 0.5),
])
def test_to_tensor_result_does_not_share_memory_with_its_input(source):
    before = source.copy() if isinstance(source, np.ndarray) else source.clone()
    to_tensor(source).fill_(9.0)
    assert np.array_equal(np.asarray(source), np.asarray(before))


def test_to_tensor_rejects_other_types_and_dtypes():
    with pytest.raises(TypeError, match="list"):
        to_tensor([[0, 0, 0]])
    with pytest.raises(TypeError, match="int64"):
        to_tensor(np.zeros((2, 2, 3), dtype=np.int64))


# --------------------------------------------------------------------------- preprocess / to_array

def test_round_trip_without_resize_is_exact():
    img = random_image(6, 9)
    x = preprocess(img)
    assert x.shape == (1, 3, 6, 9)
    back = to_array(x)
    assert back.shape == (6, 9, 3)
    np.testing.assert_allclose(back, img / 255, atol=1e-6, rtol=0)


def test_preprocess_returns_pixels_whatever_the_models_statistics():
    """No normalisation in preprocess: the model's mean and std (its first layer's business) change nothing."""
    model = TinyModel(input_size=6)
    img = random_image(6, 6, seed=1)
    x = preprocess(img, model)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), img / 255, atol=1e-6, rtol=0)
    assert torch.equal(x, preprocess(img, size=6))
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    np.testing.assert_allclose(to_array(x), img / 255, atol=1e-6, rtol=0)


def test_preprocess_shape_dtype_from_model_input_size():
    x = preprocess(random_image(12, 20), TinyModel(input_size=8))
    assert x.shape == (1, 3, 8, 8) and x.dtype == torch.float32
    assert preprocess(random_image(12, 20), TinyModel(input_size=8), size=4).shape == (1, 3, 4, 4)


def test_preprocess_keeps_the_mean_colour_as_it_is():
    mean_image = np.broadcast_to(np.array(IMAGENET_MEAN), (4, 4, 3)).copy()
    expected = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert torch.allclose(preprocess(mean_image), expected, atol=1e-6)


@pytest.mark.parametrize("removed", [{"mean": (0.5, 0.5, 0.5)}, {"std": (1.0, 1.0, 1.0)}])
def test_preprocess_no_longer_takes_mean_or_std(removed):
    with pytest.raises(TypeError):
        preprocess(random_image(4, 4), **removed)


def test_normalize_denormalize_and_deprocess_are_gone():
    import course_lib.imaging as imaging

    for name in ("normalize", "denormalize", "deprocess", "_stats"):
        assert not hasattr(imaging, name), f"imaging.{name} should be removed (models normalise their own input)"


RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


@pytest.mark.parametrize("tall", [False, True])
def test_resize_and_centre_crop_keeps_the_centre(tall):
    """A 20x40 image, blue at the sides and red in the middle 24 columns, cropped to 10x10: all red."""
    img = np.zeros((20, 40, 3))
    img[:, :] = BLUE
    img[:, 8:32] = RED
    if tall:
        img = img.transpose(1, 0, 2).copy()
    out = to_array(preprocess(img, size=10))
    assert out.shape == (10, 10, 3)
    np.testing.assert_allclose(out, np.broadcast_to(RED, (10, 10, 3)), atol=1e-5)


def test_preprocess_of_a_resized_image_stays_in_the_pixel_range():
    """Antialiased bilinear resizing is a convex combination: the pixels stay in [0, 1] (check_image accepts them)."""
    from course_lib.inputs import check_image

    img = np.zeros((37, 53, 3), dtype=np.uint8)
    img[::2, ::3] = 255                                  # hard edges everywhere
    x = preprocess(img, size=16)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert check_image(x) is not None


def test_preprocess_accepts_a_tensor_and_pil_like_an_array():
    img = random_image(9, 12)
    expected = preprocess(img, size=6)
    assert torch.allclose(preprocess(to_tensor(img), size=6), expected, atol=1e-6)
    assert torch.equal(preprocess(Image.fromarray(img), size=6), expected)


def test_inputs_are_not_mutated_and_not_aliased():
    img = random_image()
    before = img.copy()
    preprocess(img, size=4)
    assert np.array_equal(img, before)

    t = to_tensor(img)
    t_before = t.clone()
    x = preprocess(t)
    x += 100  # changing the result must not change the input
    assert torch.equal(t, t_before)

    y = preprocess(img)
    y_before = y.clone()
    out = to_array(y)
    out[:] = 0
    assert torch.equal(y, y_before)


def test_preprocess_puts_the_result_on_the_models_device():
    model = TinyModel().to("meta")  # a device other than the CPU that needs no GPU
    assert preprocess(random_image(8, 8), model).device.type == "meta"
    parameterless = nn.Identity()
    assert preprocess(random_image(8, 8), parameterless).device.type == "cpu"


def test_preprocess_keeps_gradients_of_a_tensor_input():
    t = to_tensor(random_image()).requires_grad_()
    preprocess(t).sum().backward()
    assert t.grad is not None and t.grad.shape == t.shape


def test_to_array_accepts_3d_tensors_requiring_grad_and_clips():
    x = preprocess(random_image()).requires_grad_()
    assert np.array_equal(to_array(x[0]), to_array(x))
    np.testing.assert_array_equal(to_array(x), x.detach()[0].permute(1, 2, 0).numpy())   # pixels as they are
    big = torch.full((3, 2, 2), 100.0, requires_grad=True)
    np.testing.assert_array_equal(to_array(big), np.ones((2, 2, 3)))
    np.testing.assert_array_equal(to_array(-big), np.zeros((2, 2, 3)))
    half = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)
    out = to_array(half)
    assert out.dtype == np.float32 and np.array_equal(out, np.full((2, 2, 3), 0.5, dtype=np.float32))


def test_to_array_refuses_a_batch_of_two():
    with pytest.raises(ValueError, match="batch of 2"):
        to_array(torch.zeros(2, 3, 4, 4))


@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (4, 4), (4, 4, 3)])
def test_to_array_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match="got shape"):
        to_array(torch.zeros(shape))


def test_to_array_rejects_what_is_not_a_tensor():
    with pytest.raises(TypeError, match="ndarray"):
        to_array(np.zeros((3, 4, 4)))


# --------------------------------------------------------------------------- grids and scaling

def test_make_grid_of_64_is_8_by_8_with_padding():
    h, w = 5, 3
    images = [np.full((h, w), k / 64) for k in range(64)]
    grid = make_grid(images, padding=1, pad_value=1.0)
    assert grid.shape == (8 * h + 9, 8 * w + 9)
    # image 19 is in row 2, column 3
    top, left = 1 + 2 * (h + 1), 1 + 3 * (w + 1)
    assert np.all(grid[top:top + h, left:left + w] == 19 / 64)
    assert np.all(grid[0] == 1.0) and np.all(grid[:, left - 1] == 1.0)


def test_make_grid_with_nrow_and_colour_images():
    images = np.random.default_rng(0).random((7, 4, 6, 3))
    grid = make_grid(images, nrow=4, padding=2, pad_value=0.5)  # 2 rows of 4, not 3 x 3
    assert grid.shape == (2 * 4 + 3 * 2, 4 * 6 + 5 * 2, 3)
    # image 5 is in row 1, column 1; the unused last cell stays padding
    np.testing.assert_array_equal(grid[2 + 6:2 + 6 + 4, 2 + 8:2 + 8 + 6], images[5])
    assert np.all(grid[-6:-2, -8:-2] == 0.5)


def test_make_grid_errors():
    with pytest.raises(ValueError, match="at least one"):
        make_grid([])
    with pytest.raises(ValueError, match="same shape"):
        make_grid([np.zeros((2, 2)), np.zeros((3, 2))])
    with pytest.raises(ValueError, match="H x W"):
        make_grid([np.zeros((3, 4, 4))])


def test_rescale_stretches_to_unit_range_and_handles_constants():
    np.testing.assert_allclose(rescale(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(rescale(torch.tensor([[-1.0, 1.0]], requires_grad=True)), [[0.0, 1.0]])
    with np.errstate(all="raise"):
        flat = rescale(np.full((3, 3), 7.0))
    np.testing.assert_array_equal(flat, np.zeros((3, 3)))


# --------------------------------------------------------------------------- heatmaps

def ramp(h=8, w=10):
    return np.tile(np.linspace(-3.0, 5.0, w), (h, 1))


def test_overlay_heatmap_shape_and_range():
    img = np.random.default_rng(0).random((8, 10, 3))
    out = overlay_heatmap(img, ramp())
    assert out.shape == (8, 10, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, img)


def test_overlay_alpha_zero_returns_the_image_exactly():
    img = np.random.default_rng(1).random((8, 10, 3))
    before = img.copy()
    out = overlay_heatmap(img, ramp(), alpha=0.0)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(img, before)


def test_overlay_alpha_one_returns_the_pure_colormap():
    img = np.random.default_rng(2).random((8, 10, 3))
    heat = ramp()
    expected = matplotlib.colormaps["jet"]((heat - heat.min()) / (heat.max() - heat.min()))[..., :3]
    np.testing.assert_allclose(overlay_heatmap(img, torch.tensor(heat), alpha=1.0), expected, atol=1e-12)
    viridis = matplotlib.colormaps["viridis"]((heat - heat.min()) / (heat.max() - heat.min()))[..., :3]
    np.testing.assert_allclose(overlay_heatmap(img, heat, alpha=1.0, cmap="viridis"), viridis, atol=1e-12)


def test_overlay_resizes_a_small_heatmap_to_the_image():
    img = np.zeros((8, 8, 3))
    heat = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # low on the left, high on the right
    out = overlay_heatmap(img, heat, alpha=1.0)
    # bilinear 2 -> 8 pixels (pixel centres aligned): each row becomes this ramp
    row = np.array([0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1])
    expected = matplotlib.colormaps["jet"](np.tile(row, (8, 1)))[..., :3]
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_overlay_accepts_pil_images():
    img = random_image(4, 6)
    out = overlay_heatmap(Image.fromarray(img), np.ones((4, 6)), alpha=0.0)
    np.testing.assert_allclose(out, img / 255)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_overlay_rejects_alpha_outside_unit_range(alpha):
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(np.zeros((4, 4, 3)), np.zeros((4, 4)), alpha=alpha)


@pytest.mark.parametrize("shape", [(1, 4, 4), (4,), (1, 1, 4, 4)])
def test_overlay_rejects_heatmaps_that_are_not_2d(shape):
    with pytest.raises(ValueError, match="2-D"):
        overlay_heatmap(np.zeros((4, 4, 3)), np.zeros(shape))


# --------------------------------------------------------------------------- plotting

@pytest.fixture
def no_plt_show(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("plt.show() must not be called")
    monkeypatch.setattr(plt, "show", fail)


def test_show_image_of_array_returns_a_figure(no_plt_show):
    img = random_image()
    fig = show_image(img, title="cat")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_title() == "cat" and not ax.axison
    np.testing.assert_allclose(ax.images[0].get_array(), img / 255)


def test_show_image_draws_a_pixel_tensor_as_it_is(no_plt_show):
    img = random_image()
    fig = show_image(preprocess(img))
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), img / 255, atol=1e-6)
    fig = show_image(preprocess(img, TinyModel(input_size=5))[0])        # [3, H, W]; no statistics involved
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), to_array(preprocess(img, size=5)), atol=1e-6)
    with pytest.raises(TypeError, match="mean"):
        show_image(preprocess(img), mean=IMAGENET_MEAN, std=IMAGENET_STD)


def test_show_image_draws_on_a_given_axes(no_plt_show):
    fig, (a, b) = plt.subplots(1, 2)
    n_figures = len(plt.get_fignums())
    assert show_image(Image.fromarray(random_image()), ax=b) is fig
    assert len(plt.get_fignums()) == n_figures
    assert len(b.images) == 1 and len(a.images) == 0


def test_show_images_makes_a_grid_with_titles(no_plt_show):
    images = [random_image(seed=k) for k in range(5)]
    fig = show_images(images, titles=list("abcde"), ncols=2, size=2.0)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6  # 3 rows x 2 columns, the last cell empty
    assert [ax.get_title() for ax in fig.axes[:5]] == list("abcde")
    assert not any(ax.axison for ax in fig.axes)
    assert len(fig.axes[5].images) == 0
    # 5 x 7 images: rows as tall as the images need (2 * 5/7 inches) plus room for the titles
    np.testing.assert_allclose(fig.get_size_inches(), [4.0, 3 * (2.0 * 5 / 7 + 0.35 * 2 / 7)])
    square = show_images([random_image(7, 7, seed=k) for k in range(5)], titles=list("abcde"), ncols=2, size=2.0)
    np.testing.assert_allclose(square.get_size_inches(), [4.0, 6.0])
    with pytest.raises(ValueError, match="5 images but 2 titles"):
        show_images(images, titles=["a", "b"])


def test_show_images_defaults_to_one_row():
    fig = show_images([random_image(seed=k) for k in range(3)])
    assert len(fig.axes) == 3
    assert {ax.get_subplotspec().rowspan.start for ax in fig.axes} == {0}


def test_show_heatmap_draws_the_overlay(no_plt_show):
    img = np.random.default_rng(3).random((8, 10, 3))
    fig = show_heatmap(img, ramp(), alpha=0.3, title="cam")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "cam" and not ax.axison
    np.testing.assert_allclose(ax.images[0].get_array(), overlay_heatmap(img, ramp(), alpha=0.3))


# --------------------------------------------------------------------------- colour scales and titles

def test_overlay_with_explicit_limits_keeps_a_weak_map_weak():
    img = np.zeros((8, 10, 3))
    weak = ramp() / 50                      # values -0.06 .. 0.1
    expected = matplotlib.colormaps["jet"](np.clip(weak, 0, 1))[..., :3]
    np.testing.assert_allclose(overlay_heatmap(img, weak, alpha=1.0, vmin=0, vmax=1), expected, atol=1e-12)
    # by default the same map fills the whole colormap
    np.testing.assert_allclose(overlay_heatmap(img, weak, alpha=1.0), matplotlib.colormaps["jet"](rescale(weak))[..., :3],
                               atol=1e-12)
    # one limit given: the other is the map's own
    own_min = matplotlib.colormaps["jet"]((weak - weak.min()) / (1 - weak.min()))[..., :3]
    np.testing.assert_allclose(overlay_heatmap(img, weak, alpha=1.0, vmax=1), own_min, atol=1e-12)
    with pytest.raises(ValueError, match="vmax"):
        overlay_heatmap(img, weak, vmin=1, vmax=0)


def test_heatmap_scales_shared_each_groups_clip_and_symmetric():
    a, b = np.array([[0.0, 1.0]]), np.array([[0.5, 4.0]])
    assert heatmap_scales([a, b]) == [(0.0, 4.0), (0.0, 4.0)]
    assert heatmap_scales([a, b], "each") == [(0.0, 1.0), (0.0, 4.0)]
    assert heatmap_scales([a, b, a], ["g", "h", "g"]) == [(0.0, 1.0), (0.0, 4.0), (0.0, 1.0)]
    assert heatmap_scales([a - 2, b]) == [(-2.0, 4.0), (-2.0, 4.0)]          # lo: the smallest value, if below 0
    assert heatmap_scales([a - 2, b], symmetric=True) == [(-4.0, 4.0), (-4.0, 4.0)]
    assert heatmap_scales([a, b], vmin=-1, vmax=2) == [(-1.0, 2.0), (-1.0, 2.0)]
    clipped = heatmap_scales([np.arange(101.0).reshape(1, -1)], clip=0.9)
    assert clipped == [(0.0, 90.0)]
    with pytest.raises(ValueError, match="normalize"):
        heatmap_scales([a], "global")
    with pytest.raises(ValueError, match="2 maps but 1 group"):
        heatmap_scales([a, b], ["g"])
    with pytest.raises(ValueError, match="2-D"):
        heatmap_scales([np.zeros((1, 2, 2))])


def colorbars(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_show_heatmaps_shared_draws_every_map_on_one_scale_with_one_colour_bar(no_plt_show):
    img = np.zeros((8, 10, 3))
    strong, weak = ramp() + 3, (ramp() + 3) / 10                        # 0..8 and 0..0.8
    fig = show_heatmaps({"strong": strong, "weak": weak}, img, alpha=1.0, label="score")
    image_ax, strong_ax, weak_ax = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [image_ax.get_title(), strong_ax.get_title(), weak_ax.get_title()] == ["image", "strong", "weak"]
    jet = matplotlib.colormaps["jet"]
    np.testing.assert_allclose(weak_ax.images[0].get_array(), jet(weak / 8)[..., :3], atol=1e-12)
    np.testing.assert_allclose(strong_ax.images[0].get_array(), jet(strong / 8)[..., :3], atol=1e-12)
    (bar,) = colorbars(fig)
    assert "shared scale" in bar.get_ylabel() and "score" in bar.get_ylabel()
    assert bar.get_ylim() == pytest.approx((0.0, 8.0))


def test_show_heatmaps_each_says_own_scale_and_draws_raw_maps(no_plt_show):
    a, b = ramp(), 10 * ramp()
    fig = show_heatmaps([a, b], normalize="each", titles=["a", "b"], cmap="gray")
    bars = colorbars(fig)
    assert len(bars) == 2 and all("own scale" in bar.get_ylabel() for bar in bars)
    assert [bar.get_ylim() for bar in bars] == [pytest.approx((-3.0, 5.0)), pytest.approx((-30.0, 50.0))]
    maps = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.images[0].get_clim() for ax in maps] == [(-3.0, 5.0), (-30.0, 50.0)]


def test_show_heatmaps_groups_images_and_clipping(no_plt_show):
    imgs = [np.zeros((8, 10, 3)), np.ones((8, 10, 3))]
    fig = show_heatmaps([ramp(), ramp()], imgs, overlay=False, clip=0.5, titles=["x", "y"])
    maps = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(maps) == 4 and len(maps[0].images[0].get_array().shape) == 3   # images on top, maps below
    (bar,) = colorbars(fig)
    assert bar._colorbar.extend == "max"                                       # values above the clip
    fig = show_heatmaps([ramp(), ramp(), ramp()], normalize=["u", "u", "v"], label={"u": "gradient", "v": "IG"})
    labels = sorted(bar.get_ylabel() for bar in colorbars(fig))
    assert labels == ["IG, own scale", "gradient, shared scale"]
    with pytest.raises(ValueError, match="2 maps but 1 images"):
        show_heatmaps([ramp(), ramp()], [imgs[0]])


def test_show_heatmap_colour_bar_shows_the_scale(no_plt_show):
    img = np.zeros((8, 10, 3))
    fig = show_heatmap(img, ramp(), alpha=1.0, vmin=0, vmax=10, colorbar=True, label="drop")
    (bar,) = colorbars(fig)
    assert bar.get_ylim() == pytest.approx((0.0, 10.0)) and bar.get_ylabel() == "drop"
    expected = matplotlib.colormaps["jet"](np.clip(ramp() / 10, 0, 1))[..., :3]
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), expected, atol=1e-12)


def test_prediction_title_shows_the_truth_and_flags_mistakes_in_red(no_plt_show):
    assert prediction_title("tench", "tench", 0.514) == "pred: tench 51% ✓\ntrue: tench"
    wrong = prediction_title("cassette player", "chain saw", 0.75)
    assert wrong == "pred: cassette player 75% ✗\ntrue: chain saw" and MISTAKE in wrong
    assert prediction_title("church") == "pred: church"
    fig = show_images([random_image(), random_image()], [wrong, prediction_title("tench", "tench")])
    red, plain = (ax.title.get_color() for ax in fig.axes)
    assert matplotlib.colors.same_color(red, "tab:red") and not matplotlib.colors.same_color(plain, "tab:red")


def test_show_images_shrinks_long_titles_to_fit_their_cells(no_plt_show):
    long = ["said cassette player 75%", "said garbage truck 74%"]
    fig = show_images([random_image(7, 7), random_image(7, 7)], long, size=2.0)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    a, b = (ax.title.get_window_extent(renderer) for ax in fig.axes)
    assert a.x1 <= b.x0                     # the titles do not run into each other
    short = show_images([random_image(7, 7)], ["tench"])
    assert short.axes[0].title.get_fontsize() == 12


def test_crop_padding_removes_the_grey_border_only():
    patch = np.full((6, 7, 3), 0.5)
    patch[1:4, 2:7] = np.random.default_rng(0).random((3, 5, 3))
    np.testing.assert_array_equal(crop_padding(patch, 0.5), patch[1:4, 2:7])
    nan = np.full((4, 4), np.nan)
    nan[2:, :3] = 1.0
    np.testing.assert_array_equal(crop_padding(nan), np.ones((2, 3)))
    assert crop_padding(np.full((3, 3), 0.5), 0.5).shape == (3, 3)


def test_show_image_groups_one_block_per_group(no_plt_show):
    groups = {"ch 1": [random_image(5, 5, seed=k) for k in range(4)], "ch 2 ✗": [random_image(3, 5)]}
    fig = show_image_groups(groups, per_row=2, ncols=2)
    blocks = fig.subfigs
    assert [b._suptitle.get_text() for b in blocks] == ["ch 1", "ch 2 ✗"]
    assert sum(len(ax.images) for ax in blocks[0].axes) == 4 and sum(len(ax.images) for ax in blocks[1].axes) == 1
    assert matplotlib.colors.same_color(blocks[1]._suptitle.get_color(), "tab:red")


def test_show_heatmaps_titles_each_image_of_a_list(no_plt_show):
    imgs = [random_image(8, 10, seed=k) for k in range(2)]
    wrong = prediction_title("golf ball", "tench", 0.5)
    fig = show_heatmaps([ramp(), ramp()], imgs, overlay=False, titles=["m1", "m2"], image_title=[wrong, "b"])
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == [wrong, "b", "m1", "m2"]
    assert matplotlib.colors.same_color(panels[0].title.get_color(), "tab:red")
    with pytest.raises(ValueError, match="2 images but 1 image titles"):
        show_heatmaps([ramp(), ramp()], imgs, overlay=False, image_title=["a"])
