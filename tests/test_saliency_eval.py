"""course_lib.saliency_eval: deletion/insertion curves (exact pixel bookkeeping, endpoints, a model
whose evidence is known) and the cascading model-randomization sanity check."""
import numpy as np
import pytest
import torch
from torch import nn

from course_lib import saliency as S
from course_lib import saliency_eval as E
from course_lib.models import mean_colour


def image(size=64, seed=0):
    """Random pixels in [0, 1): what every method takes (the model normalises its own input)."""
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def colour_image(colour, like):
    return torch.tensor(colour, dtype=like.dtype).view(1, 3, 1, 1).expand_as(like).clone()


# --------------------------------------------------------------------------- pixel order and images


def test_pixel_ranks_sort_from_most_to_least_salient():
    sal = E.random_map(9, 7, seed=1)
    ranks = E.pixel_ranks(sal)
    assert sorted(ranks.flatten().tolist()) == list(range(63))
    by_rank = sal.flatten()[torch.argsort(ranks.flatten())]
    assert (by_rank[:-1] >= by_rank[1:]).all()


def test_step_counts():
    assert E.step_counts(10, 4) == [0, 2, 5, 8, 10]
    assert E.step_counts(16384, 32)[1] == 512


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_perturbed_images_change_exactly_the_top_pixels(mode):
    x = image(16)
    sal = E.random_map(16, 16, seed=3)
    imgs = E.perturbed_images(x, sal, mode, steps=5, substrate="blur")
    base = E.blurred(x)
    order = np.argsort(-sal.numpy().ravel(), kind="stable")
    counts = E.step_counts(256, 5)
    assert imgs.shape == (6, 3, 16, 16)
    for k, n in enumerate(counts):
        top = np.zeros(256, bool)
        top[order[:n]] = True
        top = torch.from_numpy(top.reshape(16, 16))
        first, then = (base, x) if mode == "deletion" else (x, base)
        assert torch.equal(imgs[k][:, top], first[0][:, top])
        assert torch.equal(imgs[k][:, ~top], then[0][:, ~top])
    assert torch.equal(imgs[0], (x if mode == "deletion" else base)[0])
    assert torch.equal(imgs[-1], (base if mode == "deletion" else x)[0])


def test_substrates():
    from course_lib.models import IMAGENET_MEAN

    x = image(32)
    assert torch.equal(E.substrate_image(x, "mean"), colour_image(IMAGENET_MEAN, x))   # ImageNet's mean colour
    assert torch.equal(E.substrate_image(x, "mean", mean=(0.25, 0.5, 0.75)), colour_image((0.25, 0.5, 0.75), x))
    b = E.substrate_image(x, "blur")
    assert b.shape == x.shape and b.std() < 0.5 * x.std()  # white noise loses most of its variance
    const = torch.full((1, 3, 32, 32), 0.7)
    torch.testing.assert_close(E.blurred(const), const)
    with pytest.raises(ValueError, match="substrate"):
        E.substrate_image(x, "noise")


# --------------------------------------------------------------------------- curves


def test_curve_endpoints_and_batching(tiny_net):
    x = image()
    sal = S.vanilla_saliency(tiny_net, x, 3)
    with torch.no_grad():
        p_x = torch.softmax(tiny_net(x), 1)[0, 3].item()
        p_mean = torch.softmax(tiny_net(colour_image(mean_colour(tiny_net), x)), 1)[0, 3].item()   # all deleted
        p_blur = torch.softmax(tiny_net(E.blurred(x)), 1)[0, 3].item()
    f, p = E.perturbation_curve(tiny_net, x, sal, 3, mode="deletion", steps=8)
    assert f[0] == 0 and f[-1] == 1 and len(f) == len(p) == 9
    assert p[0] == pytest.approx(p_x, rel=1e-5) and p[-1] == pytest.approx(p_mean, rel=1e-5)
    f, q = E.perturbation_curve(tiny_net, x, sal, 3, mode="insertion", steps=8)
    assert q[0] == pytest.approx(p_blur, rel=1e-5) and q[-1] == pytest.approx(p_x, rel=1e-5)
    _, q1 = E.perturbation_curve(tiny_net, x, sal, 3, mode="insertion", steps=8, batch_size=1)
    np.testing.assert_allclose(q1, q, rtol=1e-5)


class RegionModel(nn.Module):
    """Class 0's score is the mean of channel 0 over a known square: the only evidence there is."""

    def forward(self, x):
        evidence = 4 * x[:, 0, 4:12, 20:28].mean((1, 2))
        return torch.stack([evidence, torch.zeros_like(evidence)], 1)


def test_a_map_that_found_the_evidence_wins():
    model = RegionModel()
    x = 0.01 * image(32)
    x[0, 0, 4:12, 20:28] += 0.99                       # bright red evidence; pixels stay in [0, 1]
    good = torch.zeros(32, 32)
    good[4:12, 20:28] = 1
    good += 0.1 * E.random_map(32, 32, 1)
    scores = {}
    for name, sal in {"good": good, "random": E.random_map(32, 32, 2), "inverted": -good}.items():
        scores[name] = {m: E.auc(*E.perturbation_curve(model, x, sal, 0, mode=m, steps=16))
                        for m in ("deletion", "insertion")}
    assert scores["good"]["deletion"] < scores["random"]["deletion"] < scores["inverted"]["deletion"]
    assert scores["good"]["insertion"] > scores["random"]["insertion"] > scores["inverted"]["insertion"]


def test_auc():
    f = np.linspace(0, 1, 11)
    assert E.auc(f, np.ones(11)) == pytest.approx(1)
    assert E.auc(f, f) == pytest.approx(0.5)
    assert E.auc([0, 0.5, 1], [1, 0, 1]) == pytest.approx(0.5)


def test_baselines():
    c = E.centre_map(9, 9)
    assert c.argmax() == 40 and torch.equal(c, c.flip(0)) and torch.equal(c, c.T)
    assert torch.equal(E.random_map(5, 6, seed=3), E.random_map(5, 6, seed=3))
    assert not torch.equal(E.random_map(5, 6, seed=3), E.random_map(5, 6, seed=4))


def test_evaluate_saliency(tiny_net):
    images = [image(64, s) for s in range(2)]
    methods = E.saliency_methods(smoothgrad_samples=2, ig_steps=3)
    res = E.evaluate_saliency(tiny_net, images, methods, steps=4, progress=False)
    assert res["targets"] == [S.predicted_class(tiny_net, x) for x in images]
    assert list(res["auc"]) == list(methods)
    for name in methods:
        for mode in ("deletion", "insertion"):
            assert res["curves"][name][mode].shape == (2, 5)
            assert ((res["auc"][name][mode] >= 0) & (res["auc"][name][mode] <= 1)).all()
            np.testing.assert_allclose(res["auc"][name][mode],
                                       [E.auc(res["fractions"], c) for c in res["curves"][name][mode]])
    # deletion's first point is the intact image's probability of the explained (predicted) class
    with torch.no_grad():
        first = [torch.softmax(tiny_net(x), 1)[0, c].item() for x, c in zip(images, res["targets"])]
    assert res["targets"] == [3, 3]  # (so explaining class 0 by mistake would show)
    for name in methods:
        np.testing.assert_allclose(res["curves"][name]["deletion"][:, 0], first, rtol=1e-5)
    rows = E.auc_table(res)
    assert [r["difference"] for r in rows] == sorted((r["difference"] for r in rows), reverse=True)
    text = E.format_auc_table(rows)
    assert all(name in text for name in methods)
    fig = E.plot_curves(res)
    assert [ax.get_title() for ax in fig.axes] == ["deletion (lower AUC is better)", "insertion (higher AUC is better)"]
    assert len(fig.axes[0].lines) == len(methods)
    # again with the same seeds: the same numbers (the random baseline included)
    res2 = E.evaluate_saliency(tiny_net, images, E.saliency_methods(smoothgrad_samples=2, ig_steps=3),
                               steps=4, progress=False)
    for name in methods:
        np.testing.assert_allclose(res2["auc"][name]["deletion"], res["auc"][name]["deletion"])


def test_curve_bad_input(tiny_net):
    x = image()
    with pytest.raises(ValueError, match="mode"):
        E.perturbed_images(x, torch.rand(64, 64), "removal")
    with pytest.raises(ValueError, match="steps"):
        E.perturbed_images(x, torch.rand(64, 64), steps=0)
    with pytest.raises(ValueError, match="H x W"):
        E.perturbed_images(x, torch.rand(32, 32))
    with pytest.raises(ValueError, match="single image"):
        E.perturbation_curve(tiny_net, torch.zeros(2, 3, 64, 64), torch.rand(64, 64), 0)
    with pytest.raises(ValueError, match="at least one method"):
        E.evaluate_saliency(tiny_net, [x], {}, progress=False)


# --------------------------------------------------------------------------- model randomization

COURSE_LAYERS = ["fc", "conv4_2", "conv4_1", "conv3_2", "conv3_1", "conv2_1", "conv1_1"]


def test_randomization_layers_from_the_top(tiny_net, course_model):
    assert E.randomization_layers(tiny_net) == COURSE_LAYERS
    assert E.randomization_layers(course_model) == COURSE_LAYERS
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    assert E.randomization_layers(plain) == ["3", "0"]


def test_cascading_randomization_is_cumulative_and_leaves_the_model_alone(tiny_net):
    from course_lib.layers import get_layer

    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    params = list(tiny_net.parameters())
    for k, (name, net) in enumerate(E.cascading_randomizations(tiny_net, seed=0)):
        assert net is not tiny_net and name == COURSE_LAYERS[k]
        for i, layer in enumerate(COURSE_LAYERS):
            same = torch.equal(get_layer(net, layer).weight, get_layer(tiny_net, layer).weight)
            assert same == (i > k), f"step {k}: {layer} should {'not ' if i <= k else ''}be randomized"
    assert all(torch.equal(tiny_net.state_dict()[k], v) for k, v in before.items())
    assert all(a is b for a, b in zip(tiny_net.parameters(), params))
    assert not any(p.requires_grad for p in tiny_net.parameters())


def test_reinitialize_is_seeded_and_he_scaled():
    a, b = nn.Conv2d(64, 64, 3), nn.Conv2d(64, 64, 3)
    E.reinitialize(a, torch.Generator().manual_seed(1))
    E.reinitialize(b, torch.Generator().manual_seed(1))
    assert torch.equal(a.weight, b.weight) and (a.bias == 0).all()
    assert a.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)


def test_spearman():
    a = torch.rand(10, 10, generator=torch.Generator().manual_seed(0))
    assert E.spearman(a, a) == pytest.approx(1)
    assert E.spearman(a, a.exp()) == pytest.approx(1)  # ranks only
    assert E.spearman(a, -a) == pytest.approx(-1)
    with pytest.raises(ValueError, match="same shape"):
        E.spearman(a, a[:5])


def test_randomization_test_on_a_random_net(tiny_net):
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    methods = E.saliency_methods(smoothgrad_samples=2, ig_steps=3, baselines=False)
    res = E.randomization_test(tiny_net, image(), methods, progress=False)
    assert res["layers"] == ["original"] + COURSE_LAYERS
    for name in methods:
        assert len(res["maps"][name]) == 8 and res["correlations"][name][0] == pytest.approx(1)
        assert all(-1 <= r <= 1 for r in res["correlations"][name])
    assert res["correlations"]["gradient"][-1] < 0.9
    assert all(torch.equal(tiny_net.state_dict()[k], v) for k, v in before.items())
    assert "randomized down to" in E.format_correlations(res)
    fig = E.plot_randomization(res, image=np.zeros((64, 64, 3)))
    assert len(fig.axes) == len(methods) * 9


def test_guided_backprop_hardly_notices_a_random_top_layer(course_model, val_set):
    """Adebayo et al.'s finding, on the course model: re-initializing fc changes the gradient map
    much more than the guided-backprop map (which mostly shows image edges)."""
    from course_lib.imaging import preprocess

    methods = {"gradient": lambda m, x, c: S.vanilla_saliency(m, x, c),
               "guided backprop": lambda m, x, c: S.compute_saliency(m, x, c, method="guided backprop")}
    rhos = {n: [] for n in methods}
    for i in (0, 1500, 3000):
        x = preprocess(val_set[i][0], course_model)
        res = E.randomization_test(course_model, x, methods, layers=["fc"], progress=False)
        for n in methods:
            rhos[n].append(res["correlations"][n][1])
    assert np.mean(rhos["guided backprop"]) > np.mean(rhos["gradient"]) + 0.1


# --------------------------------------------------------------------------- grid energy


def _smooth_field(seed=0, size=128):
    from torchvision.transforms.functional import gaussian_blur
    g = torch.Generator().manual_seed(seed)
    return gaussian_blur(torch.rand(1, size, size, generator=g), [21, 21], [4.0, 4.0])[0]


def test_grid_energy_of_a_checkerboard_is_one_and_of_smooth_maps_near_zero():
    i = torch.arange(128)
    checker = ((i[:, None] + i[None, :]) % 2).float()
    assert E.grid_energy(checker) == pytest.approx(1.0)
    dots = ((i[:, None] % 4 == 0) & (i[None, :] % 4 == 0)).float()  # a period-4 lattice of dots
    assert E.grid_energy(dots) == pytest.approx(1.0)
    assert E.grid_energy(_smooth_field()) < 0.005
    assert E.grid_energy(torch.rand(128, 128, generator=torch.Generator().manual_seed(1))) < 0.02
    assert E.grid_energy(torch.zeros(64, 64)) == 0.0


def test_grid_energy_grows_with_the_grid_and_ignores_other_periods():
    i = torch.arange(128)
    checker = ((i[:, None] + i[None, :]) % 2).float()
    base = _smooth_field()
    base = base / base.std()
    values = [E.grid_energy(base + a * checker / checker.std()) for a in (0.0, 0.1, 0.3, 1.0)]
    assert values == sorted(values) and values[-1] > 0.4 and values[0] < 0.005
    stripes7 = torch.sin(2 * np.pi * i / 7.0)[None, :].expand(128, 128)  # period 7: not a harmonic of 16
    assert E.grid_energy(stripes7) < 0.05


def test_grid_energy_rejects_bad_maps():
    with pytest.raises(ValueError, match="multiple of the period"):
        E.grid_energy(torch.rand(100, 100))
    with pytest.raises(ValueError, match="2-D map"):
        E.grid_energy(torch.rand(1, 128, 128))


# --------------------------------------------------------------------------- issue 15: targets


def test_perturbation_curve_target_is_a_class_index(tiny_net):
    """-1 used to be taken as the last class, 10 gave a bare IndexError."""
    x, sal = image(), torch.rand(64, 64)
    with pytest.raises(ValueError, match=r"target -1 is out of range: the model has 10 classes \(class indices 0..9\); "
                                         r"negative indices do not count from the end"):
        E.perturbation_curve(tiny_net, x, sal, -1)
    with pytest.raises(ValueError, match=r"target 10 is out of range: the model has 10 classes"):
        E.perturbation_curve(tiny_net, x, sal, 10)
    for bad in (2.5, True, "3", None):
        with pytest.raises(TypeError, match=r"target .*(class index|required)"):
            E.perturbation_curve(tiny_net, x, sal, bad)
    f, p = E.perturbation_curve(tiny_net, x, sal, np.int64(9), steps=4)
    assert np.array_equal(p, E.perturbation_curve(tiny_net, x, sal, 9, steps=4)[1])


def test_randomization_test_checks_its_target(tiny_net):
    methods = {"gradient": lambda m, x, c: S.vanilla_saliency(m, x, c)}
    with pytest.raises(ValueError, match="out of range"):
        E.randomization_test(tiny_net, image(), methods, target=10, progress=False)


# --------------------------------------------------------------------------- pixels: the one image space


def test_perturbation_curve_refuses_a_normalised_image(tiny_net):
    x, sal = image(), torch.rand(64, 64)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\].*normalised by hand.*pass the pixels instead"):
        E.perturbation_curve(tiny_net, tiny_net.normalize(x), sal, 3)
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\].*normalised by hand"):
        E.evaluate_saliency(tiny_net, [tiny_net.normalize(x)], {"random": lambda m, x, c: sal}, steps=2,
                            progress=False)


def test_deletion_ends_at_the_models_own_mean_colour():
    """The "mean" substrate is the colour the model's Normalize maps to 0 (not ImageNet's when the model
    was trained with other statistics): fully deleted, the image is that colour everywhere."""
    from course_lib.models import CourseNet, prepare_model

    torch.manual_seed(0)
    mean = (0.25, 0.5, 0.75)
    net = prepare_model(CourseNet(blocks=((8,), (8,)), mean=mean), [str(i) for i in range(10)], 32, mean,
                        (0.229, 0.224, 0.225), None)
    x = image(32, 5)
    sal = E.random_map(32, 32, 1)
    imgs = E.perturbed_images(x, sal, "deletion", steps=4, mean=mean_colour(net))
    assert torch.equal(imgs[-1], colour_image(mean, x)[0])
    with torch.no_grad():
        p_end = torch.softmax(net(colour_image(mean, x)), 1)[0, 2].item()
        p_imagenet = torch.softmax(net(colour_image((0.485, 0.456, 0.406), x)), 1)[0, 2].item()
    _, p = E.perturbation_curve(net, x, sal, 2, mode="deletion", steps=4)
    assert p[-1] == pytest.approx(p_end, rel=1e-5)
    assert p_end != pytest.approx(p_imagenet, rel=1e-3)      # the check can tell the two colours apart
