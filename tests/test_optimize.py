"""Tests for the optimisation core (course_lib.optimize) and the methods of notebook 05 built on it:
class visualisation, adversarial and universal perturbations, DeepDream, feature inversion.

Oracles: torchattacks (FGSM, PGD without random start) for the attacks; exact properties
otherwise -- the objective rises, budgets and ranges hold, a seed fixes the result, the model
is left as it was, blur removes high frequencies, a universal perturbation beats noise of the
same norm, inversion from the first layer gives the image back.
"""
import copy

import numpy as np
import pytest
import torch

from conftest import close
from course_lib import adversarial as A
from course_lib import class_viz as CV
from course_lib import deepdream as DD
from course_lib import inversion as INV
from course_lib import optimize as O


def _images(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def _photos(val_set, n, size=128, start=0):
    from course_lib.data import spread_indices
    from course_lib.imaging import fit_to_square, to_tensor

    idx = spread_indices(len(val_set), n)
    x = torch.cat([fit_to_square(to_tensor(val_set[i][0])[None], size) for i in idx])
    return x.clamp(0, 1), torch.tensor([val_set[i][1] for i in idx])


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


# --------------------------------------------------------------------------- the core


@pytest.mark.parametrize("rule,lr", [("adam", 0.05), ("sign", 0.01), ("normalized", 0.01), ("lbfgs", 1.0)])
def test_every_step_rule_raises_the_objective(tiny_net, rule, lr):
    j = O.layer_l2(tiny_net, layer="relu2_1")
    start = torch.full((1, 3, 64, 64), 0.5)
    before = O.evaluate(tiny_net, j, start).item()
    x, history = O.optimize(tiny_net, j, O.PixelImage(start), steps=15, lr=lr, step_rule=rule,
                            projections=[O.clamp_pixels()], progress=False)
    assert O.evaluate(tiny_net, j, x).item() > 1.3 * before
    assert x.min() >= 0 and x.max() <= 1 and len(history.objective) == 15


def test_an_optimizer_passed_in_carries_its_state_from_call_to_call(tiny_net):
    """optimize(..., step_rule=torch.optim.Adam(...)) minimises -J; two calls of 5 steps with the
    same optimiser end exactly where one call of 10 steps does."""
    j = O.layer_l2(tiny_net, layer="relu2_1")
    start = torch.full((1, 3, 32, 32), 0.5)
    one = O.PixelImage(start)
    O.optimize(tiny_net, j, one, steps=10, step_rule=torch.optim.Adam(one.parameters(), lr=0.02), progress=False)
    two = O.PixelImage(start)
    adam = torch.optim.Adam(two.parameters(), lr=0.02)
    for _ in range(2):
        _, history = O.optimize(tiny_net, j, two, steps=5, step_rule=adam, progress=False)
    torch.testing.assert_close(two.x, one.x, rtol=0, atol=0)
    assert history.objective[-1] > 1.3 * O.evaluate(tiny_net, j, start).item()


def test_optimize_leaves_the_model_and_the_start_image_as_they_were(tiny_net):
    tiny_net.train()
    tiny_net.features.conv1_1.weight.requires_grad_(True)
    state = _state(tiny_net)
    start = torch.full((1, 3, 64, 64), 0.5)
    keep = start.clone()
    O.optimize(tiny_net, O.layer_l2(tiny_net, layer="relu3_1"), O.PixelImage(start), steps=3, progress=False,
               transforms=[O.jitter(4)])
    assert tiny_net.training and all(m.training for m in tiny_net.modules())
    assert tiny_net.features.conv1_1.weight.requires_grad and not tiny_net.fc.weight.requires_grad
    assert all(torch.equal(v, state[k]) for k, v in tiny_net.state_dict().items())
    assert torch.equal(start, keep) and _no_hooks(tiny_net)


def test_hooks_are_removed_when_the_objective_fails(tiny_net):
    bad = O.Objective(("relu2_1",), lambda a, x: a["relu2_1"][:, 999].mean((-2, -1)))
    with pytest.raises(IndexError):
        O.optimize(tiny_net, bad, O.PixelImage(torch.full((1, 3, 64, 64), 0.5)), steps=2, progress=False)
    assert _no_hooks(tiny_net)


def test_the_forward_pass_stops_after_the_deepest_wanted_layer(tiny_net):
    calls = {"conv2_1": 0, "conv3_1": 0, "fc": 0}
    handles = [O.get_layer(tiny_net, n).register_forward_hook(lambda *a, n=n: calls.__setitem__(n, calls[n] + 1))
               for n in calls]
    try:
        j = O.layer_l2(tiny_net, layer="relu2_1") + O.channel(tiny_net, layer="conv1_1", channel=0)
        x, history = O.optimize(tiny_net, j, O.PixelImage(torch.full((1, 3, 64, 64), 0.5)), steps=3, progress=False)
        assert calls == {"conv2_1": 3, "conv3_1": 0, "fc": 0}
        O.evaluate(tiny_net, O.class_score(tiny_net, 0), x)  # the class score needs the whole network
        assert calls["fc"] == 1
    finally:
        for h in handles:
            h.remove()
    assert len(history.objective) == 3 and history.objective[-1] > history.objective[0]


def test_a_seed_fixes_the_result_and_another_seed_changes_it(tiny_net):
    def run(seed):
        return O.optimize(tiny_net, O.channel(tiny_net, layer="relu3_2", channel=2), O.FourierImage(64, seed=seed), steps=5,
                          transforms=[O.jitter(6)], seed=seed, progress=False).image
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_fourier_image_is_a_valid_image_and_can_be_optimised(tiny_net):
    p = O.FourierImage((48, 64), batch=2)
    x = p()
    assert x.shape == (2, 3, 48, 64) and x.min() >= 0 and x.max() <= 1
    j = O.class_score(tiny_net, 1)
    before = O.evaluate(tiny_net, j, x).sum().item()
    y, _ = O.optimize(tiny_net, j, p, steps=20, lr=0.05, progress=False)
    assert O.evaluate(tiny_net, j, y).sum().item() > before


def test_objectives_combine_linearly(tiny_net):
    x = _images(2, 64)
    a, b = O.class_score(tiny_net, 0), O.layer_l2(tiny_net, layer="relu2_1")
    va, vb = O.evaluate(tiny_net, a, x), O.evaluate(tiny_net, b, x)
    scale = (va.abs() + 2 * vb.abs()).max()  # the terms': their sum may cancel
    close(O.evaluate(tiny_net, a - 2.0 * b, x), va - 2 * vb, scale=scale)
    close(O.evaluate(tiny_net, 0.5 * a + b, x), 0.5 * va + vb, scale=scale)
    tv = O.evaluate(tiny_net, O.total_variation(), x)
    assert tv.shape == (2,) and (tv > 0).all()
    assert O.evaluate(tiny_net, O.total_variation(), torch.full((1, 3, 8, 8), 0.3)).item() == 0


def test_total_variation_and_l2_match_their_definitions(tiny_net):
    x = _images(1, 16, seed=3)
    tv = ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()
    close(O.evaluate(tiny_net, O.total_variation(), x)[0], tv)
    mean, std = torch.tensor(tiny_net.mean).view(1, 3, 1, 1), torch.tensor(tiny_net.std).view(1, 3, 1, 1)
    close(O.evaluate(tiny_net, O.l2(tiny_net), x)[0], (((x - mean) / std) ** 2).mean())


def test_bad_input_gets_a_clear_error(tiny_net):
    ok = torch.full((1, 3, 64, 64), 0.5)
    with pytest.raises(KeyError, match="no layer 'conv9_9'"):
        O.layer_l2(tiny_net, layer="conv9_9")
    with pytest.raises(ValueError, match="target 10 is out of range"):
        O.class_score(tiny_net, 10)
    with pytest.raises(ValueError, match="channel 99 is out of range"):
        O.optimize(tiny_net, O.channel(tiny_net, layer="relu1_1", channel=99), O.PixelImage(ok), steps=1, progress=False)
    with pytest.raises(ValueError, match="greyscale or RGBA"):
        O.PixelImage(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="NaN"):
        O.PixelImage(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        O.PixelImage(torch.randn(1, 3, 8, 8) * 3)
    with pytest.raises(ValueError, match="step_rule"):
        O.optimize(tiny_net, O.class_score(tiny_net, 0), O.PixelImage(ok), step_rule="rmsprop", progress=False)
    with pytest.raises(ValueError, match="must be >= 0"):
        A.fgsm(tiny_net, ok, 0, eps=-0.1)
    with pytest.raises(ValueError, match="255"):
        A.pgd(tiny_net, ok, 0, eps=8)
    with pytest.raises(ValueError, match="class indices"):
        A.pgd(tiny_net, ok, 12, eps=0.01, targeted=True)
    with pytest.raises(ValueError, match="255"):
        A.pgd_until_fooled(tiny_net, ok, 0, eps=8)
    with pytest.raises(TypeError, match=r"targeted=True\) needs target: the class to reach"):
        A.pgd_until_fooled(tiny_net, ok, eps=0.01, targeted=True)


def test_lbfgs_moves_on_a_tiny_gradient_and_counts_its_evaluations(tiny_net):
    # a quadratic with gradients of order 1e-9: PyTorch's L-BFGS with its defaults (no line-search
    # evaluations when max_iter=1, curvature pairs below 1e-10 dropped) would not move at all
    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    j = 1e-9 * O.Objective((), lambda a, x: -(x - target).pow(2).flatten(1).sum(1), "fit")
    x, history = O.optimize(tiny_net, j, O.PixelImage(torch.full((1, 3, 16, 16), 0.5)), steps=4, lr=1.0,
                            step_rule="lbfgs", progress=False)
    assert (x - target).abs().max() < 1e-3
    ev = history.evaluations
    assert len(ev) == 4 and ev[0] >= 1 and all(b > a for a, b in zip(ev, ev[1:]))
    y = O.optimize(tiny_net, j, O.PixelImage(torch.full((1, 3, 16, 16), 0.5)), steps=3, lr=0.1, progress=False)
    assert y.history.evaluations == [1, 2, 3]  # first-order rules: one evaluation per step


def test_callback_gets_a_live_preview(tiny_net):
    seen = []
    O.optimize(tiny_net, O.class_score(tiny_net, 0), O.PixelImage(torch.full((1, 3, 64, 64), 0.5)), steps=7,
               every=3, callback=lambda s, x, j: seen.append((s, tuple(x.shape))), progress=False)
    assert seen == [(2, (1, 3, 64, 64)), (5, (1, 3, 64, 64)), (6, (1, 3, 64, 64))]


# --------------------------------------------------------------------------- class visualisation


def test_class_visualization_raises_the_class_score(course_model):
    classes = [0, 4, 8]
    x, history = CV.class_visualization(course_model, classes, steps=30, progress=False)
    assert len(history.objective) == 30 and history.objective[-1] > history.objective[0]
    assert x.shape == (3, 3, 128, 128) and x.min() >= 0 and x.max() <= 1
    mean = torch.tensor(course_model.mean).view(1, 3, 1, 1).expand(3, 3, 128, 128)
    j = O.class_score(course_model, classes)
    assert (O.evaluate(course_model, j, x) > O.evaluate(course_model, j, mean) + 2).all()
    p = CV.class_probabilities(course_model, x)
    assert (p[torch.arange(3), torch.tensor(classes)] > 0.5).all()
    one = CV.class_visualization(course_model, 4, steps=30, progress=False).image  # one class alone: the same method
    assert one.shape == (1, 3, 128, 128) and CV.class_probabilities(course_model, one)[0, 4] > 0.5


def test_each_regulariser_acts_in_its_direction(course_model):
    run = lambda **kw: CV.class_visualization(course_model, 8, steps=40, progress=False, **kw).image  # noqa: E731
    plain = run(**CV.regulariser_settings(None))
    blurred = run(**(CV.regulariser_settings(None) | {"blur_every": 2, "blur_sigma": 1.0}))
    assert CV.high_frequency_share(blurred) < 0.5 * CV.high_frequency_share(plain)
    mean = torch.tensor(course_model.mean).view(1, 3, 1, 1)
    l2 = run(**(CV.regulariser_settings(None) | {"l2_weight": 1.0}))
    assert ((l2 - mean) ** 2).mean() < ((plain - mean) ** 2).mean()
    clipped = run(**(CV.regulariser_settings(None) | {"norm_percentile": 30.0}))
    assert CV.regulariser_settings("blur", jitter=7)["jitter"] == 7 and CV.regulariser_settings("blur")["norm_percentile"] == 0
    at_mean = ((clipped - mean).abs().amax(1) < 1e-6).float().mean()
    assert at_mean >= 0.25  # ~30% of the pixels were reset to the mean colour at the last step


def test_the_channels_objective_scores_each_image_by_its_own_channel(tiny_net):
    x = _images(3, 64, seed=5)
    acts = O.activations(tiny_net, x, "conv2_1")["conv2_1"]
    own = O.evaluate(tiny_net, O.channels(tiny_net, layer="conv2_1", channels=[2, 0, 2]), x)
    close(own, torch.stack([acts[0, 2].mean(), acts[1, 0].mean(), acts[2, 2].mean()]))
    close(O.evaluate(tiny_net, O.channels(tiny_net, layer="conv2_1", channels=np.int64(4)), x),   # one for all
          O.evaluate(tiny_net, O.channel(tiny_net, layer="conv2_1", channel=4), x))
    with pytest.raises(ValueError, match="2 channels for a batch of 3 images"):
        O.evaluate(tiny_net, O.channels(tiny_net, layer="conv2_1", channels=[0, 1]), x)


@pytest.mark.parametrize("param", ["pixels", "fourier"])
def test_feature_visualization_batch_is_each_channel_drawn_alone(tiny_net, param):
    """One batch, image i for channel channels[i]: the same images as one run per channel, jitter and
    all (the images are independent: one start, a sum of per-image objectives, Adam per coordinate; in
    float64, since Adam's first steps, g / |g|, blow float32 rounding up where a gradient is tiny), and
    each image raises its own channel, above what the other images give it (checked without jitter: on
    this random-weight net a shift of a few pixels changes every unit)."""
    model, layer, chans = tiny_net.double(), "conv3_1", [5, 0, 3]
    run = lambda c, steps=30, jitter=4: CV.feature_visualization(  # noqa: E731
        model, layer=layer, channels=c, param=param, steps=steps, jitter=jitter, progress=False)
    x, history = run(chans)
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float64 and len(history.objective) == 30
    assert x.min() >= 0 and x.max() <= 1
    for i, c in enumerate(chans):
        close(x[i], run(c).image[0], rtol=1e-6, floor=1e-6, msg=f"image {i} (channel {c})")
    acts = O.activations(model, run(chans, jitter=0).image, layer)[layer].mean((-2, -1))[:, chans]  # [image, channel]
    assert (acts.argmax(0) == torch.arange(3)).all(), acts
    start = O.evaluate(model, O.channels(model, layer=layer, channels=chans), run(chans, steps=0).image)
    assert (acts.diagonal() > start).all()


def test_feature_visualization_bad_inputs_get_clear_errors(tiny_net):
    run = lambda **kw: CV.feature_visualization(tiny_net, **({"layer": "conv2_1", "channels": [0], "steps": 1,  # noqa: E731
                                                             "progress": False} | kw))
    with pytest.raises(KeyError, match="no layer 'conv9_9'"):
        run(layer="conv9_9")
    with pytest.raises(ValueError, match=r"channel 8 is out of range: layer 'conv2_1' has 8 channels \(channels 0..7\)"):
        run(channels=[1, 8])
    with pytest.raises(ValueError, match="channel -1 is out of range.*negative"):
        run(channels=-1)
    with pytest.raises(TypeError, match="channel must be an int"):
        run(channels=[1.0])
    with pytest.raises(ValueError, match="at least one channel"):
        run(channels=[])
    with pytest.raises(ValueError, match="param must be one of 'fourier', 'pixels'"):
        run(param="spectrum")
    with pytest.raises(ValueError, match="act on pixels: use param='pixels'"):
        run(param="fourier", blur_every=2)
    with pytest.raises(ValueError, match="size is 8x8 pixels, too small"):
        run(layer="conv4_2", size=8)
    with pytest.raises(TypeError, match="positional argument"):
        CV.feature_visualization(tiny_net, "conv2_1", [0])
    assert run(param="pixels", blur_every=1, channels=torch.tensor([3, 4])).image.shape == (2, 3, 64, 64)


def test_high_frequency_share_of_noise_and_smooth_images():
    noise = _images(1, 64)
    smooth = O.gaussian_blur(noise, 3.0)
    assert CV.high_frequency_share(noise) > 0.5 and CV.high_frequency_share(smooth) < 0.05


# --------------------------------------------------------------------------- adversarial: torchattacks as oracle


@pytest.mark.parametrize("which", ["tiny", "course"])
def test_fgsm_and_pgd_match_torchattacks(which, tiny_net, course_model):
    torchattacks = pytest.importorskip("torchattacks")
    model = tiny_net if which == "tiny" else course_model
    oracle = model   # torchattacks attacks models of [0, 1] pixels: the course's models normalise their own input
    size = 64 if which == "tiny" else 128
    x = _images(4, size, seed=5)
    y = torch.tensor([0, 3, 5, 9])
    for eps in (2 / 255, 8 / 255):  # (pixels in [0, 1]: an absolute 1e-6 is 8 float32 ulps at 1)
        atk = torchattacks.FGSM(oracle, eps=eps)
        torch.testing.assert_close(A.fgsm(model, x, y, eps=eps), atk(x, y), rtol=0, atol=1e-6)
        atk = torchattacks.PGD(oracle, eps=eps, alpha=eps / 4, steps=5, random_start=False)
        torch.testing.assert_close(A.pgd(model, x, y, eps=eps, steps=5), atk(x, y), rtol=0, atol=1e-6)
        atk.set_mode_targeted_by_label(quiet=True)
        t = (y + 1) % 10
        torch.testing.assert_close(A.pgd(model, x, t, eps=eps, steps=5, targeted=True), atk(x, t), rtol=0, atol=1e-6)
    assert _no_hooks(model)


@pytest.mark.parametrize("targeted,eps_255", [(False, 1), (True, 4)])
def test_pgd_until_fooled_returns_the_first_fooling_iterate_of_pgd(targeted, eps_255, course_model, val_set):
    """The early stop changes the work, not the attack: for each image, x' is the first of PGD's own
    iterates x_t = pgd(..., steps=t), t = 0..T, that fools the network (x_T if none does), and
    `fooled` says whether one did. float64, so that the shrinking batches round exactly like the
    full one (a sign step turns a rounding difference in a tiny gradient into a whole step)."""
    model = copy.deepcopy(course_model).double()
    x, y = _photos(val_set, 8, size=64)
    x = x.double()
    label, eps, steps = ((y + 1) % 10 if targeted else y), eps_255 / 255, 4
    iterates = [A.pgd(model, x, label, eps=eps, steps=t, targeted=targeted) for t in range(steps + 1)]
    hits = torch.stack([(A.predict(model, it)[0] == label) if targeted else (A.predict(model, it)[0] != label)
                        for it in iterates])
    first = torch.where(hits.any(0), hits.int().argmax(0), steps)
    expected = torch.stack([iterates[int(t)][i] for i, t in enumerate(first)])
    adversarial, fooled = A.pgd_until_fooled(model, x, label, eps=eps, steps=steps, targeted=targeted)
    assert torch.equal(fooled, hits.any(0))
    assert torch.equal(adversarial, expected)
    # (the case is not trivial: images fall at different steps, and some never do)
    assert len(set(first[hits.any(0)].tolist())) >= 2 and not hits.any(0).all(), first
    assert _no_hooks(model)


def test_attacks_stay_within_budget_and_fool_the_course_model(course_model, val_set):
    x, y = _photos(val_set, 20)
    eps = 4 / 255
    for adv in (A.fgsm(course_model, x, y, eps=eps), A.pgd(course_model, x, y, eps=eps, steps=10),
                A.pgd(course_model, x, (y + 1) % 10, eps=eps, steps=10, targeted=True)):
        assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    pred, _ = A.predict(course_model, x)
    correct = pred == y
    adv = A.pgd(course_model, x, y, eps=eps, steps=10)
    fooled = (A.predict(course_model, adv)[0] != y)[correct].float().mean()
    assert fooled >= 0.8, f"PGD at eps=4/255 fooled only {fooled:.0%} of the correctly classified images"
    rows = A.success_rates(course_model, x, y, epsilons=[0.0, 1 / 255, 4 / 255], steps=5, progress=False)
    assert rows[0]["pgd"] == 0 and rows[0]["fgsm"] == 0
    assert rows[1]["pgd"] <= rows[2]["pgd"] and rows[1]["pgd_targeted"] <= rows[2]["pgd_targeted"]


def test_minimum_perturbation_reaches_the_target_with_a_small_change(course_model, val_set):
    x, y = _photos(val_set, 2)
    target = (y + 5) % 10
    adv = A.minimum_perturbation(course_model, x, target, steps=20)
    assert (A.predict(course_model, adv)[0] == target).all()
    assert (adv - x).abs().mean() < 4 / 255 and adv.min() >= 0 and adv.max() <= 1


def test_universal_perturbation_fools_more_than_noise_of_the_same_norm(course_model, val_set):
    from course_lib.data import imagenette
    train, _ = _photos(imagenette("train"), 256)
    held_out, _ = _photos(val_set, 64)
    xi = 10 / 255
    v = A.universal_perturbation(course_model, train, xi=xi, epochs=5, batch_size=32, progress=False)
    assert v.shape == (1, 3, 128, 128) and v.abs().max() <= xi + 1e-7
    uap = A.fooling_rate(course_model, held_out, v)
    noise = A.fooling_rate(course_model, held_out, A.random_sign_noise(v.shape, xi))
    assert uap > noise + 0.1, (uap, noise)  # measured: 23% against 6%


# --------------------------------------------------------------------------- DeepDream and inversion


def test_deepdream_raises_the_layer_energy_at_every_octave(tiny_net):
    x = _images(1, 64, seed=2)
    out, history = DD.deepdream(tiny_net, x, layer="relu3_1", octaves=2, steps=5, progress=False)
    assert len(history.objective) == 5   # the last octave's
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    energy = O.layer_l2(tiny_net, layer="relu3_1")
    assert O.evaluate(tiny_net, energy, out).item() > O.evaluate(tiny_net, energy, x).item()
    assert DD.octave_sizes((100, 60), 3, 2.0) == [(25, 15), (50, 30), (100, 60)]


def test_inversion_from_the_first_layer_gives_the_image_back(course_model, val_set):
    x, _ = _photos(val_set, 1)
    x = x[..., 32:96, 32:96]
    inv = INV.invert(course_model, x, layer="conv1_1", steps=150, lr=0.05, tv_weight=0.0, l2_weight=0.0, jitter=0,
                     progress=False).image
    psnr, ssim = INV.psnr_ssim(inv, x)
    assert psnr >= 25 and ssim >= 0.8, (psnr, ssim)
    assert INV.relative_feature_error(course_model, inv, x, layer="conv1_1") < 0.05
    start = (0.5 + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert INV.psnr_ssim(start, x)[0] < psnr - 10


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_psnr_ssim_of_identical_and_shifted_images():
    x = _images(1, 32)
    p, s = INV.psnr_ssim(x, x)
    assert p == float("inf") and s == pytest.approx(1.0)
    p, s = INV.psnr_ssim((x + 0.1).clamp(0, 1), x)
    assert 15 < p < 25 and s < 1


# --------------------------------------------------------------------------- issue 15: the shared checks in notebooks 05-08


def test_float64_images_for_a_float32_model_get_a_clear_error(tiny_net):
    """Not torch's "Input type (double) and bias type (float) should be the same"."""
    x = torch.full((1, 3, 64, 64), 0.5, dtype=torch.float64)
    match = r"torch\.float64 but the model's weights are torch\.float32: convert the image with x\.float\(\)"
    for call in (lambda: A.fgsm(tiny_net, x, 0, eps=0.01), lambda: A.predict(tiny_net, x),
                 lambda: CV.class_probabilities(tiny_net, x), lambda: DD.deepdream(tiny_net, x, layer="conv1_1", progress=False),
                 lambda: INV.invert(tiny_net, x, layer="conv1_1", steps=1, progress=False),
                 lambda: O.optimize(tiny_net, O.class_score(tiny_net, 0), O.PixelImage(x), steps=1, progress=False)):
        with pytest.raises(TypeError, match=match):
            call()


def test_class_indices_are_checked_as_everywhere_else(tiny_net):
    ok = torch.full((2, 3, 64, 64), 0.5)
    for bad in (2.7, True, "3", [1, 2.0]):
        with pytest.raises(TypeError, match=r"target must be a class index \(an int\)"):
            O.class_score(tiny_net, bad)
        with pytest.raises(TypeError, match=r"target must be a class index \(an int\)"):
            A.fgsm(tiny_net, ok, bad, eps=0.01)
    with pytest.raises(ValueError, match=r"target -1 is out of range: the model has 10 classes .*negative"):
        CV.class_visualization(tiny_net, -1, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"target 10 is out of range"):
        A.pgd(tiny_net, ok, torch.tensor([1, 10]), eps=0.01, targeted=True)
    assert A.fgsm(tiny_net, ok, np.int64(3), eps=np.float32(0.01)).shape == ok.shape  # numpy scalars are fine


def test_one_calling_convention_target_none_is_the_predicted_class(tiny_net):
    """method(model, x, target=None, *, layer=..., channel=..., options): the untargeted attacks
    without a target lower the predicted class; a targeted attack needs one; layers are keywords."""
    x = _images(2, 64, seed=4)
    pred, _ = A.predict(tiny_net, x)
    assert torch.equal(A.fgsm(tiny_net, x, eps=0.01), A.fgsm(tiny_net, x, pred, eps=0.01))
    assert torch.equal(A.pgd(tiny_net, x, eps=0.01, steps=2), A.pgd(tiny_net, x, pred, eps=0.01, steps=2))
    with pytest.raises(TypeError, match=r"targeted=True\) needs target: the class to reach"):
        A.pgd(tiny_net, x, eps=0.01, targeted=True)
    with pytest.raises(TypeError, match="target is required"):
        O.class_score(tiny_net, None)
    for positional in (lambda: A.fgsm(tiny_net, x, 0, 0.01), lambda: O.layer_l2(tiny_net, "relu2_1"),
                       lambda: DD.deepdream(tiny_net, x[:1], "relu2_1"), lambda: INV.invert(tiny_net, x[:1], "relu2_1")):
        with pytest.raises(TypeError, match="positional argument"):
            positional()


def test_uint8_nan_and_empty_pixel_images(tiny_net):
    with pytest.raises(TypeError, match=r"divide uint8 pixels by 255: x\.float\(\) / 255"):
        A.predict(tiny_net, torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN or infinite"):
        DD.deepdream(tiny_net, torch.full((1, 3, 64, 64), float("nan")), layer="conv1_1", progress=False)
    with pytest.raises(ValueError, match="empty"):
        INV.invert(tiny_net, torch.zeros(1, 3, 0, 0), layer="conv1_1", steps=1, progress=False)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        A.fgsm(tiny_net, torch.full((1, 3, 64, 64), 0.5), 0, eps=float("nan"))
