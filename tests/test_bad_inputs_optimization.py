"""Unusual inputs to the optimisation modules of notebooks 05-08 (issue 26, section 5): every public entry
point either refuses them with a clear error that names the argument and the fix, or gives them a documented
meaning. One test per class of the audit: valid inputs that used to crash, silent wrong results, confusing
crashes, and the one ambiguity (a module applied twice in one forward pass)."""
import json

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from conftest import close
from course_lib import adversarial as A
from course_lib import class_viz as C
from course_lib import data as D
from course_lib import deepdream as DD
from course_lib import fast_style as FS
from course_lib import inversion as I
from course_lib import optimize as O
from course_lib import style as S
from course_lib import texture as TX
from course_lib.inputs import check_perturbation, check_pixels, check_size
from course_lib.models import CourseNet, prepare_model


def _img(n=1, size=48, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _tiny(dtype=torch.float32):
    torch.manual_seed(0)
    net = CourseNet(num_classes=10, blocks=((8,), (8,), (8, 8), (16, 16))).to(dtype)
    return prepare_model(net, [f"class {i}" for i in range(10)], 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None)


# --------------------------------------------------------------------------- valid inputs that used to crash

#: Each takes (model, image) and runs a short optimisation from that image; returns the image it made.
RUNS = {
    "style_transfer": lambda m, x: S.style_transfer(m, x, _img(seed=1), steps=2, progress=False).image,
    "minimum_perturbation": lambda m, x: A.minimum_perturbation(m, x, 1, steps=2),
    "texture_synthesis": lambda m, x: S.texture_synthesis(m, x, steps=2, progress=False).image,
    "deepdream": lambda m, x: DD.deepdream(m, x, layer="relu2_1", octaves=2, steps=2, progress=False).image,
    "invert": lambda m, x: I.invert(m, x, layer="relu2_1", steps=2, progress=False).image,
    "pgd": lambda m, x: A.pgd(m, x, 1, eps=0.03, steps=2),
    "pgd_until_fooled": lambda m, x: A.pgd_until_fooled(m, x, 1, eps=0.03, steps=2)[0],
}
LAYOUTS = {
    "permuted from H x W x 3": lambda x: x[0].permute(1, 2, 0).contiguous().permute(2, 0, 1)[None],
    "channels last": lambda x: x.contiguous(memory_format=torch.channels_last),
    "a strided view": lambda x: torch.stack([x, x], -1)[..., 0],
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("run", RUNS)
def test_any_memory_layout_gives_the_contiguous_result(tiny_net, run, layout):
    x = _img()
    odd = LAYOUTS[layout](x)
    assert torch.equal(odd, x) and not odd.is_contiguous()
    close(RUNS[run](tiny_net, odd), RUNS[run](tiny_net, x))  # used to fail in torch/optim/lbfgs.py ("view size")


@pytest.mark.parametrize("run", ["class_visualization", "invert"])
def test_float64_models_make_float64_images(run):
    def go(model):
        if run == "class_visualization":
            return C.class_visualization(model, 3, steps=3, size=32, progress=False).image
        return I.invert(model, _img(size=32).to(O.model_dtype(model)), layer="relu2_1", steps=3, progress=False).image
    out = go(_tiny(torch.float64))   # used to be refused: "image is torch.float32 but the model's weights are float64"
    assert out.dtype == torch.float64
    close(out, go(_tiny()), rtol=1e-3, floor=1e-3)


# --------------------------------------------------------------------------- silent wrong results, now refused

NEGATIVE = [
    (lambda m: S.style_transfer(m, _img(), _img(), style_weight=-1e3, steps=1, progress=False),
     r"^style_weight must be >= 0, got -1000$"),
    (lambda m: S.style_transfer(m, _img(), _img(), tv_weight=-5, steps=1, progress=False), r"^tv_weight must be >= 0, got -5"),
    (lambda m: S.style_transfer(m, _img(), _img(), style_scale=0, steps=1, progress=False), r"^style_scale must be > 0"),
    (lambda m: S.texture_synthesis(m, _img(), lr=-1.0, steps=1, progress=False), r"^lr must be > 0, got -1"),
    (lambda m: C.class_visualization(m, 1, lr=-0.01, steps=1, progress=False), r"^lr must be >= 0, got -0\.01"),
    (lambda m: C.class_visualization(m, 1, blur_every=-2, steps=1, progress=False), r"^blur_every must be an int >= 0, got -2"),
    (lambda m: C.class_visualization(m, 1, l2_weight=-0.1, steps=1, progress=False), r"^l2_weight must be >= 0"),
    (lambda m: C.class_visualization(m, 1, jitter=-1, steps=1, progress=False), r"^jitter must be an int >= 0"),
    (lambda m: C.class_visualization(m, 1, norm_percentile=150, steps=1, progress=False),
     r"^norm_percentile must be >= 0 and <= 100, got 150"),
    (lambda m: C.class_visualization(m, 1, steps=-3, progress=False), r"^steps must be an int >= 0, got -3"),
    (lambda m: A.universal_perturbation(m, _img(4), xi=0.03, epochs=-1, progress=False), r"^epochs must be an int >= 0, got -1"),
    (lambda m: A.universal_perturbation(m, _img(4), xi=0.03, lr=-0.01, progress=False), r"^lr must be >= 0"),
    (lambda m: A.pgd(m, _img(), 1, eps=0.03, steps=-1), r"^steps must be an int >= 0"),
    (lambda m: A.pgd_until_fooled(m, _img(), 1, eps=0.03, steps=-1), r"^steps must be an int >= 0"),
    (lambda m: A.minimum_perturbation(m, _img(), 1, penalty=-1), r"^penalty must be >= 0, got -1"),
    (lambda m: I.invert(m, _img(), layer="relu2_1", tv_weight=-5, steps=1, progress=False), r"^tv_weight must be >= 0, got -5"),
    (lambda m: I.invert(m, _img(), layer="relu2_1", l2_weight=-1, steps=1, progress=False), r"^l2_weight must be >= 0"),
    (lambda m: DD.deepdream(m, _img(), layer="relu2_1", lr=-0.01, progress=False), r"^lr must be >= 0"),
    (lambda m: DD.deepdream(m, _img(), layer="relu2_1", octaves=0, progress=False), r"^octaves must be an int >= 1, got 0"),
    (lambda m: DD.deepdream(m, _img(), layer="relu2_1", octave_scale=0.5, progress=False), r"^octave_scale must be > 1"),
    (lambda m: FS.perceptual_loss(m, _img(), style_weight=-1, tv_weight=1), r"^style_weight must be >= 0"),
    (lambda m: FS.train(FS.make_net(variant="compact"), m, _img(), None, steps=1, lr=-1e-3, progress=False),
     r"^lr must be >= 0"),
    (lambda m: O.optimize(m, O.class_score(m, 0), O.PixelImage(_img()), steps=1, every=0, progress=False),
     r"^every must be an int >= 1, got 0"),
    (lambda m: O.optimize(m, O.class_score(m, 0), O.PixelImage(_img()), steps=1, lr=0, step_rule="lbfgs",
                          progress=False), r"^lr must be > 0, got 0"),   # L-BFGS divides by it; the other rules take no step
]


@pytest.mark.parametrize("call,match", NEGATIVE, ids=[m.split(" ")[0].strip("^") + str(i) for i, (_, m) in enumerate(NEGATIVE)])
def test_negative_weights_steps_and_counts_are_refused(tiny_net, call, match):
    with pytest.raises(ValueError, match=match):
        call(tiny_net)


SINGLE_IMAGE = {
    "deepdream": (lambda m, b: DD.deepdream(m, b, layer="relu2_1", steps=1, progress=False), "image"),
    "invert": (lambda m, b: I.invert(m, b, layer="relu2_1", steps=1, progress=False), "image"),
    "style_transfer content": (lambda m, b: S.style_transfer(m, b, _img(), steps=1, progress=False), "content image"),
    "style_transfer style": (lambda m, b: S.style_transfer(m, _img(), b, steps=1, progress=False), "style image"),
    "texture_synthesis": (lambda m, b: S.texture_synthesis(m, b, steps=1, progress=False), "style image"),
    "style_targets": (lambda m, b: S.style_targets(m, b), "style image"),
    "content_loss": (lambda m, b: S.content_loss(m, b), "content image"),
    "style_distance": (lambda m, b: S.style_distance(m, b, _img()), "image"),
    "transfer_losses": (lambda m, b: S.transfer_losses(m, b, _img(), _img()), "image"),
    "image_quilting": (lambda m, b: TX.image_quilting(b, 16, patch=8, overlap=2), "texture sample"),
    "efros_leung": (lambda m, b: TX.efros_leung(b, 16, window=5, progress=False), "texture sample"),
    "heeger_bergen": (lambda m, b: TX.heeger_bergen(b, 16, iterations=1), "texture sample"),
    "psnr_ssim": (lambda m, b: I.psnr_ssim(b, b), "x"),
}


@pytest.mark.parametrize("case", SINGLE_IMAGE)
def test_a_batch_is_refused_by_single_image_functions(tiny_net, case):
    call, name = SINGLE_IMAGE[case]
    with pytest.raises(ValueError, match=rf"^{name} must be a single image \[1, 3, H, W\], got a batch of 2 .*"
                                         r"pass the images one at a time, e\.g\. x\[i:i \+ 1\]"):
        call(tiny_net, _img(2))


@pytest.mark.parametrize("v,error,match", [
    (torch.full((1, 3, 48, 48), 8.0), ValueError, r"^v must be a perturbation in pixel units, with values in \[-1, 1\], "
                                                  r"got values up to 8: in 0\.\.255 units\? divide it by 255"),
    (torch.zeros(1, 3, 32, 32), ValueError, r"^v must have shape \[1, 3, H, W\] .* images of shape \[4, 3, 48, 48\]"),
    (torch.zeros(1, 3, 48, 48, dtype=torch.uint8), TypeError, r"^v must be a floating-point tensor"),
    ([[0.0]], TypeError, r"^v must be a floating-point tensor .*got list"),
])
def test_fooling_rate_refuses_a_perturbation_it_cannot_add(tiny_net, v, error, match):
    with pytest.raises(error, match=match):
        A.fooling_rate(tiny_net, _img(4), v)


def test_a_perturbation_in_pixel_units_is_accepted_in_any_of_its_shapes(tiny_net):
    images, v = _img(4), 0.05 * torch.randn(1, 3, 48, 48).clamp(-1, 1)
    rate = A.fooling_rate(tiny_net, images, v, batch_size=3)
    assert rate == A.fooling_rate(tiny_net, images, v[0]) == A.fooling_rate(tiny_net, images, v.expand(4, -1, -1, -1))
    assert check_perturbation(v.double(), images).dtype == torch.float32


def test_zero_is_a_valid_budget_and_step_size(tiny_net):
    x = _img(2)
    assert torch.equal(A.fgsm(tiny_net, x, [1, 2], eps=0.0), x)
    assert torch.equal(O.optimize(tiny_net, O.class_score(tiny_net, 0), O.PixelImage(x), steps=2, lr=0, progress=False).image, x)


# --------------------------------------------------------------------------- confusing crashes, now clear errors


def test_the_smallest_size_comes_from_the_model_and_the_layers(tiny_net):
    def passes(s):
        try:
            with torch.no_grad():
                tiny_net(torch.zeros(1, 3, s, s))
            return True
        except RuntimeError:
            return False
    assert O.smallest_size(tiny_net) == min(s for s in range(1, 65) if passes(s)) == 15
    assert O.smallest_size(tiny_net, ["relu1_1"]) == 1          # conv1 alone takes any image
    O.check_fits(tiny_net, 8, ["relu1_1"])                      # so an 8 x 8 image fits as far as relu1_1
    assert S.texture_synthesis(tiny_net, _img(), size=8, layers=["relu1_1"], steps=1, progress=False).image.shape == (1, 3, 8, 8)


TOO_SMALL = {
    "scores": (lambda m: O.scores(m, _img(size=8)), "image"),
    "class_visualization": (lambda m: C.class_visualization(m, 1, size=8, steps=1, progress=False), "size"),
    "invert": (lambda m: I.invert(m, _img(size=8), layer="relu4_1", steps=1, progress=False), "image"),
    "style_transfer": (lambda m: S.style_transfer(m, _img(size=8), _img(), steps=1, progress=False), "content image"),
    "style_targets": (lambda m: S.style_targets(m, _img(size=8)), "style image"),
    "texture_synthesis size": (lambda m: S.texture_synthesis(m, _img(), size=(8, 40), steps=1, progress=False), "size"),
    "pgd": (lambda m: A.pgd(m, _img(size=8), 1, eps=0.03), "the optimised image"),
    "pgd_until_fooled": (lambda m: A.pgd_until_fooled(m, _img(size=8), 1, eps=0.03), "the optimised image"),
    "deepdream": (lambda m: DD.deepdream(m, _img(size=24), layer="relu4_1", steps=1, progress=False),
                  r"the smallest octave \(3 octaves, octave_scale 1\.4\)"),
}


@pytest.mark.parametrize("case", TOO_SMALL)
def test_images_too_small_for_the_network_name_the_smallest_size(tiny_net, case):
    call, name = TOO_SMALL[case]
    with pytest.raises(ValueError, match=rf"^{name} is \d+x\d+ pixels, too small for the model.*: "
                                         r"it needs at least 15x15 pixels \(use a larger"):
        call(tiny_net)


@pytest.mark.parametrize("call", [
    lambda m: A.universal_perturbation(m, _img(4), xi=0.03, batch_size=0, progress=False),
    lambda m: A.success_rates(m, _img(4), 0, epsilons=[0.01], batch_size=0, progress=False),
    lambda m: A.fooling_rate(m, _img(4), torch.zeros(1, 3, 48, 48), batch_size=0),
    lambda m: FS.photo_batches(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), 16, 0, 0),
], ids=["universal_perturbation", "success_rates", "fooling_rate", "photo_batches"])
def test_zero_batch_sizes_are_refused(tiny_net, call):
    with pytest.raises(ValueError, match=r"^batch_size must be an int >= 1, got 0$"):   # was ZeroDivisionError
        call(tiny_net)


@pytest.mark.parametrize("text,match", [
    ("{", r"starry_night_instance\.json is not valid JSON"),
    ('["a list"]', r"starry_night_instance\.json must hold a JSON object"),
    (json.dumps({"style": "starry_night", "norm": "instance", "variant": "full", "channels": [8, 8, 8]}),
     r"starry_night_instance\.json is incomplete: it lacks the key\(s\) residual_blocks, weights_sha256"),
])
def test_a_corrupt_or_incomplete_fast_style_record_names_the_file_and_the_key(tmp_path, text, match):
    (tmp_path / "starry_night_instance.json").write_text(text)
    with pytest.raises(D.DataError, match=match):
        FS.load_fast_style("starry_night", folder=tmp_path)
    with pytest.raises(D.DataError, match=match):
        FS.available(tmp_path)


@pytest.mark.parametrize("weights,match", [
    ({"relu1_1": 1.0}, r"^weights must give a weight for every style layer \(relu1_1, relu2_1\); missing: relu2_1$"),
    ({"relu2_1": 1.0, "relu3_1": 1.0}, r"missing: relu1_1$"),
    ({"relu1_1": 1.0, "relu2_1": -2.0}, r"^weights\['relu2_1'\] must be >= 0, got -2"),
])
def test_style_layer_weights_name_the_missing_layer(tiny_net, weights, match):
    targets = S.style_targets(tiny_net, _img(), layers=["relu1_1", "relu2_1"])
    with pytest.raises(ValueError, match=match):       # was a bare KeyError when the loss was first evaluated
        S.style_loss(targets, weights)
    S.style_loss(targets, {"relu1_1": 1.0, "relu2_1": 0.5, "relu3_1": 2.0})   # weights of other layers: ignored


@pytest.mark.parametrize("call,error,match", [
    (lambda m: S.texture_synthesis(m, _img(), 0, steps=1, progress=False), ValueError, r"^size must be an int >= 1, got 0"),
    (lambda m: S.texture_synthesis(m, _img(), (48, 0), progress=False), ValueError, r"^size must be an int >= 1, got 0"),
    (lambda m: S.texture_synthesis(m, _img(), 40.0, progress=False), TypeError,
     r"^size must be an int S or a pair \(H, W\) of ints, got float 40\.0; use int\(40\.0\)"),
    (lambda m: S.texture_synthesis(m, _img(), layers=[], progress=False), ValueError, r"^layers is empty"),
    (lambda m: TX.image_quilting(_img(), (0, 16)), ValueError, r"^size must be an int >= 1, got 0"),
    (lambda m: O.FourierImage((32, 32, 3)), TypeError, r"^size must be an int S or a pair \(H, W\)"),
    (lambda m: O.Perturbation(_img(2), init=torch.zeros(3, 3, 48, 48)), ValueError, r"^init must have shape"),
    (lambda m: O.optimize(m, "score", O.PixelImage(_img()), progress=False), TypeError, r"^objective must be an Objective"),
    (lambda m: FS.held_out_losses(FS.make_net(variant="compact"), m, _img(), []), ValueError, r"^photos is empty"),
], ids=["size 0", "size (48, 0)", "size float", "no layers", "quilting size", "fourier size", "perturbation init",
        "objective", "no photos"])
def test_parameters_are_blamed_by_their_own_names(tiny_net, call, error, match):
    with pytest.raises(error, match=match):   # texture_synthesis(model, s, 0) used to blame 'init'
        call(tiny_net)


def test_the_input_helpers():
    assert check_size(5) == (5, 5) and check_size((4, 6)) == (4, 6) and check_size(torch.Size([2, 3])) == (2, 3)
    assert check_pixels(_img(1), batch=False).shape == (1, 3, 48, 48)
    assert check_pixels(_img(1)[0], batch=False).shape == (1, 3, 48, 48)
    with pytest.raises(ValueError, match=r"^photo must be a single image .*batch of 3"):
        check_pixels(_img(3), "photo", batch=False)


# --------------------------------------------------------------------------- the ambiguity: a module applied twice


class _Twice(nn.Module):
    """A stem and one ResNet BasicBlock, whose ``relu`` runs twice: inside the block and after the skip connection."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = BasicBlock(4, 4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.block(self.stem(x)).mean((-2, -1)))


def test_a_module_applied_twice_means_its_first_call_everywhere():
    model = prepare_model(_Twice(), [f"class {i}" for i in range(10)], 32, (0.5,) * 3, (0.25,) * 3, None)
    x = _img(2, size=16)
    with torch.no_grad():
        b, h = model.block, model.stem(x)   # (a model without a Normalize layer: it takes x as it is)
        first = b.relu(b.bn1(b.conv1(h)))
        last = b.relu(b.bn2(b.conv2(first)) + h)
    assert not torch.allclose(first, last)
    close(O.activations(model, x, "block.relu")["block.relu"], first)
    close(O.activations(model, x, ["block.relu", O.OUTPUT])["block.relu"], first)    # with the whole forward pass too
    unit = O.channel(model, layer="block.relu", channel=1)
    close(O.evaluate(model, unit, x), first[:, 1].mean((-2, -1)))                     # stops after the first call
    close(O.evaluate(model, unit + 0.0 * O.class_score(model, 0), x), first[:, 1].mean((-2, -1)))  # runs to the end
