"""course_lib.grading's side-effect check: the state of the arguments as plain data, judged by the caller."""
import copy

import pytest
import torch
from torch import nn

from course_lib import grading
from course_lib.grading import call_with_report, changes, check_no_side_effects, random_image, state, tiny_net


def _args():
    net = tiny_net(0, input_size=32)
    return net, random_image(32, seed=1)


def _first_conv(net):
    return next(m for m in net.modules() if isinstance(m, nn.Conv2d))


SIDE_EFFECTS = {
    "modified in place": lambda net, x: x.mul_(2),
    "requires_grad changed to True": lambda net, x: x.requires_grad_(True),
    "left in training mode": lambda net, x: net.train(),
    "1 hook(s) left registered": lambda net, x: _first_conv(net).register_forward_hook(lambda *a: None),
    "the .grad of some parameters was filled": lambda net, x: setattr(_first_conv(net).weight, "grad",
                                                                      torch.zeros_like(_first_conv(net).weight)),
    "requires_grad of some parameters was changed": lambda net, x: _first_conv(net).weight.requires_grad_(True),
    "its weights were changed": lambda net, x: _first_conv(net).bias.data.add_(1),
    "its layers": lambda net, x: setattr(net.features if hasattr(net, "features") else net, "extra", nn.ReLU()),
}


@pytest.mark.parametrize("expected", list(SIDE_EFFECTS))
def test_each_side_effect_is_found_and_named(expected):
    net, x = _args()
    _, problems = call_with_report(SIDE_EFFECTS[expected], (net, x), {})
    assert len(problems) >= 1 and any(expected in p for p in problems), problems
    with pytest.raises(AssertionError, match="must leave its arguments as they were"):
        check_no_side_effects(SIDE_EFFECTS[expected], *_args())


def test_a_function_without_side_effects_passes_and_returns_its_result():
    net, x = _args()
    before = state((net, x), {})
    out = check_no_side_effects(lambda m, im: m(im.clone()), net, x)
    assert out.shape == (1, 10)
    assert changes(before, state((net, x), {})) == []


def test_state_is_plain_data():
    def plain(v):
        if isinstance(v, list):
            return all(plain(i) for i in v)
        return v is None or isinstance(v, (bool, int, float, str))
    assert plain(state(_args(), {"k": torch.ones(2)}))


@pytest.mark.parametrize("after", ["junk", [], None, [[0, "tensor", "x", False]], [["x"], ["y"]]])
def test_an_unreadable_state_after_the_call_counts_as_a_change(after):
    assert changes(state(_args(), {}), after)


class _Remote:
    """Stands for a student's function graded in another process: it sends back the state after the call."""

    __name__ = "remote_fn"

    def __init__(self, effect):
        self.effect = effect

    def __grading_call__(self, args, kwargs, report=False):
        theirs = copy.deepcopy(args)                 # "their process" has its own copy of the arguments
        self.effect(*theirs)
        return "value", state(theirs, kwargs)


def test_a_remote_call_is_judged_by_the_caller_against_its_own_state_before(monkeypatch):
    # a student's process that patches the helpers changes nothing here: the judgement is made by the caller
    monkeypatch.setattr(grading, "compare", lambda *a: [], raising=False)
    net, x = _args()
    value, problems = call_with_report(_Remote(SIDE_EFFECTS["left in training mode"]), (net, x), {})
    assert value == "value" and any("training mode" in p for p in problems)
    assert not net.training                           # the caller's own arguments were never touched
    assert call_with_report(_Remote(lambda *a: None), (net, x), {})[1] == []


def test_check_close_scales_with_the_values_compared():
    """The default floor is 1e-5 of the largest |expected|: 3 float32 ulps at 49 pass (an AMD CPU's rounding,
    issue 25), a 1% error fails at any scale, and an almost-0 value is judged on the scale of the others."""
    from course_lib.grading import check_close

    ref = torch.tensor([-49.36476516723633, 0.5, 1e-3])
    check_close(torch.tensor([-49.364776611328125, 0.5, 1e-3]), ref)
    for scale in (1e-6, 1.0, 1e4):
        check_close(ref * scale + torch.tensor([0.0, 0.0, 4e-4]) * scale, ref * scale)  # 4e-4 < 1e-5 * 49.4
        with pytest.raises(AssertionError, match="differs"):
            check_close(ref * scale * 1.01, ref * scale)
    check_close(torch.tensor([3e-7]), torch.zeros(1))                 # all 0: an absolute floor of 1e-6
    with pytest.raises(AssertionError, match="differs"):
        check_close(torch.tensor([1e-9]), torch.zeros(1), rtol=0, atol=0)


# --------------------------------------------------------------------------- pixels: the one image space


def test_random_image_is_pixels_that_every_method_accepts():
    from course_lib.inputs import check_image

    x = random_image(24, seed=3, height=16)
    assert x.shape == (1, 3, 16, 24) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) < 1
    assert float(x.std()) > 0.2                                   # spread over [0, 1), not a constant
    assert torch.equal(x, random_image(24, seed=3, height=16)) and not torch.equal(x, random_image(24, seed=4, height=16))
    assert check_image(x) is not None


def test_tiny_net_normalises_its_own_input():
    from course_lib.layers import lecture_names
    from course_lib.models import IMAGENET_MEAN, IMAGENET_STD, CourseNet, Normalize, mean_colour

    net = tiny_net(0, input_size=32)
    assert isinstance(net, CourseNet) and isinstance(net.normalize, Normalize)
    assert list(net._modules)[0] == "normalize" and list(lecture_names(net))[0] == "normalize"
    assert mean_colour(net) == pytest.approx(IMAGENET_MEAN)
    x = random_image(32, seed=1)
    m = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = net.fc(torch.flatten(net.gap(net.features((x - m) / s)), 1))
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-6)
    # the same seed, the same weights: the exercises' reference and the student's code see one network
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), tiny_net(0, input_size=32).state_dict().values()))
