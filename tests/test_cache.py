"""course_lib.cache.remember: a cached result is the call's result, and any change of the model,
the arguments or the library computes it again."""
import pytest
import torch
from PIL import Image

from course_lib import cache

CALLS = []


def slow_sum(model, x, scale=1.0, seed=0, callback=None):
    """A stand-in for an expensive, seeded computation; records each real call."""
    CALLS.append(scale)
    if callback:
        callback(0)
    g = torch.Generator().manual_seed(seed)
    return {"y": model(x).detach() * scale + torch.rand(1, generator=g), "loss": float(scale)}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_CACHE", raising=False)
    CALLS.clear()


def net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())


def test_second_call_is_read_from_disk_and_equal():
    m, x = net(), torch.randn(2, 4)
    first = cache.remember(slow_sum, m, x, scale=2.0, seed=3)
    second = cache.remember(slow_sum, m, x, scale=2.0, seed=3)
    assert CALLS == [2.0]                                   # computed once
    assert torch.equal(first["y"], second["y"]) and second["loss"] == 2.0
    assert torch.equal(second["y"], slow_sum(m, x, scale=2.0, seed=3)["y"])   # what the call returns
    assert len(list(cache.cache_dir().glob("slow_sum-*.pt"))) == 1


def test_progress_arguments_are_not_part_of_the_key():
    m, x = net(), torch.randn(2, 4)
    seen = []
    cache.remember(slow_sum, m, x, callback=seen.append)
    cache.remember(slow_sum, m, x, callback=None)
    assert CALLS == [1.0] and seen == [0]


@pytest.mark.parametrize("change", ["weights", "structure", "tensor", "argument", "image"])
def test_any_change_computes_again(change):
    m, x = net(), torch.randn(2, 4)
    k = cache.key(slow_sum, (m, x), {"scale": 1.0})
    if change == "weights":
        with torch.no_grad():
            m[0].weight[0, 0] += 1e-6
        k2 = cache.key(slow_sum, (m, x), {"scale": 1.0})
    elif change == "structure":   # same weights, another network (e.g. average instead of max pooling)
        m2 = torch.nn.Sequential(m[0], torch.nn.Tanh())
        k2 = cache.key(slow_sum, (m2, x), {"scale": 1.0})
    elif change == "tensor":
        x2 = x.clone()
        x2[0, 0] += 1e-6
        k2 = cache.key(slow_sum, (m, x2), {"scale": 1.0})
    elif change == "argument":
        k2 = cache.key(slow_sum, (m, x), {"scale": 1.0000001})
    else:
        a, b = Image.new("RGB", (4, 4), (1, 2, 3)), Image.new("RGB", (4, 4), (1, 2, 4))
        k, k2 = cache.key(slow_sum, (m, a), {}), cache.key(slow_sum, (m, b), {})
    assert k != k2


def test_library_source_is_part_of_the_key(monkeypatch):
    m, x = net(), torch.randn(2, 4)
    k = cache.key(slow_sum, (m, x), {})
    monkeypatch.setattr(cache, "_source_hash", lambda fn: "edited")
    assert cache.key(slow_sum, (m, x), {}) != k


def test_unreadable_file_is_computed_again():
    m, x = net(), torch.randn(2, 4)
    cache.remember(slow_sum, m, x)
    (f,) = cache.cache_dir().glob("slow_sum-*.pt")
    f.write_bytes(b"truncated")
    out = cache.remember(slow_sum, m, x)
    assert CALLS == [1.0, 1.0] and torch.equal(out["y"], slow_sum(m, x)["y"])


def test_course_cache_0_turns_it_off(monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", "0")
    m, x = net(), torch.randn(2, 4)
    cache.remember(slow_sum, m, x)
    cache.remember(slow_sum, m, x)
    assert CALLS == [1.0, 1.0] and not cache.cache_dir().exists()


def optimised(x):
    out = x * 2
    out.note = "a Python attribute"   # dropped: a kept tensor is only its data
    return out, [1, 2.5, "a", None, {"k": x}]


def test_results_are_kept_as_plain_loadable_data():
    x = torch.randn(3)
    first = cache.remember(optimised, x)
    second = cache.remember(optimised, x)
    for r in (first, second):
        assert not hasattr(r[0], "note") and torch.equal(r[0], x * 2)
        assert r[1][:4] == [1, 2.5, "a", None] and torch.equal(r[1][4]["k"], x)
    (f,) = cache.cache_dir().glob("optimised-*.pt")
    torch.load(f, weights_only=True)   # readable without unpickling arbitrary objects


def test_an_optimisation_is_kept_with_its_history(tiny_net):
    from course_lib.class_viz import class_visualization
    from course_lib.optimize import History, Optimized

    run = dict(steps=3, size=32, progress=False)
    computed = class_visualization(tiny_net, 2, **run)
    first = cache.remember(class_visualization, tiny_net, 2, **run)
    second = cache.remember(class_visualization, tiny_net, 2, **run)   # read from disk
    (f,) = cache.cache_dir().glob("class_visualization-*.pt")
    with torch.serialization.safe_globals(list(cache.KEPT_CLASSES)):   # as remember reads it
        stored = torch.load(f, weights_only=True)
    for r in (first, second, stored):
        assert type(r) is Optimized and type(r.history) is History
        image, history = r
        assert torch.equal(image, computed.image) and history == computed.history
        assert len(history.objective) == 3 and history.evaluations == [1, 2, 3]


def test_a_result_that_cannot_be_kept_safely_is_refused():
    import numpy as np

    with pytest.raises(TypeError, match=r"result of <lambda>\[1\] is a numpy.ndarray"):
        cache.remember(lambda: (1, np.zeros(2)))


def test_a_default_given_or_not_is_the_same_call():
    m, x = net(), torch.randn(2, 4)
    cache.remember(slow_sum, m, x)
    cache.remember(slow_sum, m, x, scale=1.0, seed=0)      # the defaults, spelled out
    cache.remember(slow_sum, model=m, x=x)                 # by name
    assert CALLS == [1.0]
    cache.remember(slow_sum, m, x, scale=1.5)
    assert CALLS == [1.0, 1.5]
