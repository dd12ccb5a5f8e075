"""Tests for course_lib.neighbors: features, cached extraction, nearest neighbours, agreement, 2-D maps.

Oracles: scipy's ``cdist`` + ``argsort`` (brute force) and scikit-learn's ``NearestNeighbors``
for the search; the network's own layers for the features; hand-counted examples for the
agreement; exact isometry for PCA of points on a plane.
"""
import copy

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.spatial.distance import cdist  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402
from torch import nn  # noqa: E402

from conftest import close  # noqa: E402
from course_lib.imaging import preprocess  # noqa: E402
from course_lib.neighbors import (  # noqa: E402
    cache_key, capture_input, classifier_features, classifier_layer, embed_2d, extract,
    label_agreement, nearest_neighbors, pairwise_distances, pixel_vectors, show_feature_map,
    show_neighbors, weights_hash)


class FakeImages:
    """A tiny dataset of random RGB PIL images (not square, so they get cropped) with labels."""

    split = "fake"

    def __init__(self, n=12, seed=0, size=(80, 70)):
        rng = np.random.default_rng(seed)
        self.items = [(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)), i % 3)
                      for i in range(n)]
        self.classes = ["a", "b", "c"]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def brute_force(x, k, metric="euclidean", queries=None):
    """Indices of the k nearest (self excluded) by scipy's cdist + a stable argsort."""
    q = np.arange(len(x)) if queries is None else np.asarray(queries)
    d = cdist(x[q], x, metric=metric)
    d[np.arange(len(q)), q] = np.inf
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


def assert_nearest(idx, x, k, metric="euclidean", queries=None):
    """``idx`` holds each query's k nearest items, nearest first, judged by float64 distances: by distance,
    not by index, since float32 rounding may order two almost equal distances either way (query 59 of
    test_nearest_neighbors_match_brute_force has two neighbours 2.4e-6 apart, relatively)."""
    idx = np.asarray(idx)
    q = np.arange(len(x)) if queries is None else np.asarray(queries)
    d = cdist(x[q], x, metric=metric)
    d[np.arange(len(q)), q] = np.inf
    assert idx.shape == (len(q), k) and all(len(set(row)) == k for row in idx.tolist())
    close(np.take_along_axis(d, idx, 1), brute_force(x, k, metric, queries)[1], rtol=1e-5, floor=1e-6)


# --------------------------------------------------------------------------- distances and search

@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pairwise_distances_match_cdist(metric):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 7)), rng.normal(size=(15, 7))
    d = pairwise_distances(torch.tensor(a), torch.tensor(b), metric)
    close(d, cdist(a, b, metric), rtol=1e-5, floor=1e-5)  # float32 (|a|^2 + |b|^2 - 2ab cancels) against float64


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("block", [1024, 37])  # one block, and many blocks merged
def test_nearest_neighbors_match_brute_force(metric, block):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 12)).astype(np.float32)
    idx, dist = nearest_neighbors(torch.tensor(x), k=7, metric=metric, block=block)
    _, od = brute_force(x.astype(np.float64), 7, metric)
    assert_nearest(idx, x.astype(np.float64), 7, metric)
    close(dist, od, rtol=1e-5, floor=1e-5)  # float32 (|a|^2 + |b|^2 - 2ab cancels) against float64
    assert not (idx == torch.arange(150)[:, None]).any()  # never the query itself


def test_nearest_neighbors_match_sklearn_for_chosen_queries():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 5))
    queries = [3, 50, 89, 0]
    idx, dist = nearest_neighbors(torch.tensor(x), k=4, queries=queries, block=16)
    nn_ = NearestNeighbors(n_neighbors=5).fit(x)
    sd, si = nn_.kneighbors(x[queries])  # includes the query itself first, at distance 0
    assert (si[:, 0] == queries).all()
    np.testing.assert_array_equal(idx.numpy(), si[:, 1:])  # (distances 0.9% apart or more: no rounding reorders them)
    close(dist, sd[:, 1:], rtol=1e-5, floor=1e-5)  # float32 (|a|^2 + |b|^2 - 2ab cancels) against float64


def test_duplicates_are_neighbours_but_self_is_not_and_ties_go_to_lower_index():
    x = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    idx, dist = nearest_neighbors(x, k=3, block=2)
    assert idx[0].tolist() == [2, 3, 4] and dist[0, 0] == 0  # the duplicate, then a tie broken by index
    assert idx[2].tolist() == [0, 3, 4]


def test_vectors_function_is_applied_to_compact_storage():
    rng = np.random.default_rng(3)
    u8 = torch.tensor(rng.integers(0, 256, (40, 3, 4, 4), dtype=np.uint8))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.4)

    def vec(p):
        return ((p.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]).flatten(1)

    idx, _ = nearest_neighbors(u8, k=3, vectors=vec, block=7)
    assert_nearest(idx, vec(u8).double().numpy(), 3)


def test_nearest_neighbors_errors():
    x = torch.randn(5, 3)
    for bad_k in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="k must"):
            nearest_neighbors(x, k=bad_k)
    with pytest.raises(ValueError, match="metric"):
        nearest_neighbors(x, k=2, metric="manhattan")
    with pytest.raises(IndexError, match="query"):
        nearest_neighbors(x, k=2, queries=[7])
    with pytest.raises(ValueError, match=r"\[Na, D\]"):
        pairwise_distances(torch.randn(2, 3), torch.randn(2, 4))


# --------------------------------------------------------------------------- agreement

def test_label_agreement_hand_counted():
    labels = [0, 0, 1, 1, 1]
    nbrs = torch.tensor([[1, 2], [0, 4], [3, 4], [2, 0], [2, 3]])
    # matches per query: 1, 1, 2, 1, 2 of 2 -> 7 / 10
    assert label_agreement(nbrs, labels) == pytest.approx(0.7)
    # only queries 2 and 4 (both class 1): rows [3, 4] -> 2 matches, [0, 1] -> 0 matches -> 2 / 4
    assert label_agreement(torch.tensor([[3, 4], [0, 1]]), labels, queries=[2, 4]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="queries"):
        label_agreement(nbrs, labels, queries=[0, 1])


# --------------------------------------------------------------------------- features of a batch

def test_features_of_course_net_are_the_gap_output(tiny_net):
    x = torch.rand(4, 3, 64, 64)
    x0 = x.clone()
    assert classifier_layer(tiny_net) == "fc"
    tiny_net.train()
    feats = classifier_features(tiny_net, x)
    assert tiny_net.training  # mode restored
    tiny_net.eval()
    with torch.no_grad():
        gap = torch.flatten(tiny_net.gap(tiny_net.features(tiny_net.normalize(x.clone()))), 1)   # pixels normalised first
        close(tiny_net.fc(feats), tiny_net(x))  # they really feed fc
    assert feats.shape == (4, 16)
    close(feats, gap)
    assert torch.equal(x, x0)  # input not mutated
    assert not tiny_net.fc._forward_pre_hooks  # hook removed


def test_capture_input_removes_hook_on_error(tiny_net):
    with pytest.raises(RuntimeError, match="boom"):
        with capture_input(tiny_net, "fc"):
            raise RuntimeError("boom")
    assert not tiny_net.fc._forward_pre_hooks


def test_classifier_layer_generic():
    seq = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    assert classifier_layer(seq) == "3"
    x = torch.rand(2, 3, 2, 2)
    close(classifier_features(seq, x), torch.relu(seq[1](x.flatten(1))))
    # another layer's input can be chosen: here the flattened image itself
    torch.testing.assert_close(classifier_features(seq, x, layer="1"), x.flatten(1))
    with pytest.raises(ValueError, match="no nn.Linear"):
        classifier_layer(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(KeyError):
        classifier_features(seq, x, layer="nope")


def test_pixel_vectors_flatten():
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(pixel_vectors(x), x.reshape(2, 48))


# --------------------------------------------------------------------------- extraction and cache

def test_extract_features_and_pixels_equal_direct_computation(tiny_net, tmp_path):
    data = FakeImages(10)
    fs = extract(tiny_net, data, indices=[1, 4, 9, 0], batch_size=3, cache_dir=tmp_path, progress=False)
    assert fs.features.shape == (4, 16) and fs.pixels.shape == (4, 3, 64, 64) and fs.pixels.dtype == torch.uint8
    assert fs.labels.tolist() == [1, 1, 0, 0] and fs.indices == [1, 4, 9, 0] and fs.layer == "fc"
    for row, i in enumerate([1, 4, 9, 0]):
        x = preprocess(data[i][0], tiny_net)
        close(fs.features[row], classifier_features(tiny_net, x)[0], floor=1e-5)  # batches of 3 against 1: other kernels
        # 8-bit storage: within half a grey level of the preprocessed image (pixels in [0, 1], not normalised)
        err = (fs.pixel_vectors([row])[0] - x.flatten()).abs().max().item()
        assert err <= 0.5 / 255 + 1e-6


def test_cache_hit_returns_identical_features_without_running_the_model(tiny_net, tmp_path, monkeypatch):
    data = FakeImages(8)
    first = extract(tiny_net, data, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [cache_key(tiny_net, data, range(8), "fc")]

    def boom(*a, **k):
        raise AssertionError("the model ran although the features were cached")

    monkeypatch.setattr(tiny_net, "forward", boom)
    second = extract(tiny_net, data, cache_dir=tmp_path, progress=False)
    assert torch.equal(first.features, second.features) and torch.equal(first.pixels, second.pixels)
    assert torch.equal(first.labels, second.labels)
    with pytest.raises(AssertionError, match="model ran"):  # without the cache it does run
        extract(tiny_net, data, cache=False, progress=False)


def test_cache_key_differs_for_different_models_layers_and_images(tiny_net, course_model, tmp_path):
    data = FakeImages(6)
    key = cache_key(tiny_net, data, range(6), "fc")
    assert key == cache_key(tiny_net, data, list(range(6)), "fc")  # deterministic
    other = copy.deepcopy(tiny_net)
    with torch.no_grad():
        other.features.conv1_1.weight[0, 0, 0, 0] += 1e-3  # one weight differs
    assert weights_hash(other) != weights_hash(tiny_net)
    assert cache_key(other, data, range(6), "fc") != key
    assert cache_key(course_model, data, range(6), "fc") != key
    assert cache_key(tiny_net, data, range(5), "fc") != key
    assert cache_key(tiny_net, data, [0, 1, 2, 3, 4, 5][::-1], "fc") != key
    assert cache_key(tiny_net, data, range(6), "conv4_2") != key
    # and a different model really gets its own features, not the cached ones
    a = extract(tiny_net, data, cache_dir=tmp_path, progress=False)
    b = extract(other, data, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.iterdir())) == 2 and not torch.equal(a.features, b.features)


def test_extract_errors(tiny_net, tmp_path):
    data = FakeImages(4)
    with pytest.raises(IndexError):
        extract(tiny_net, data, indices=[0, 4], cache=False, progress=False)
    with pytest.raises(ValueError, match="no images"):
        extract(tiny_net, data, indices=[], cache=False, progress=False)
    with pytest.raises(KeyError, match="Valid names"):
        extract(tiny_net, data, layer="fc9", cache=False, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract(tiny_net, data, batch_size=0, cache=False, progress=False)


def test_featureset_nearest_spaces(tiny_net, tmp_path):
    data = FakeImages(12)
    fs = extract(tiny_net, data, cache=False, progress=False)
    pi, _ = fs.nearest("pixels", k=3)
    assert_nearest(pi, fs.pixel_vectors().double().numpy(), 3)
    fi, _ = fs.nearest("features", k=3, metric="cosine")
    assert_nearest(fi, fs.features.double().numpy(), 3, "cosine")
    with pytest.raises(ValueError, match="space"):
        fs.nearest("colours")


def test_features_beat_pixels_on_the_course_model(course_model, val_set):
    """The lecture's claim, on 200 validation images (20 per class) of the shipped model."""
    from course_lib.data import spread_indices

    fs = extract(course_model, val_set, spread_indices(len(val_set), 200), cache=False, progress=False)
    pix = label_agreement(fs.nearest("pixels", 5)[0], fs.labels)
    feat = label_agreement(fs.nearest("features", 5)[0], fs.labels)
    assert feat > pix + 0.15, (pix, feat)


# --------------------------------------------------------------------------- 2-D maps and figures

def test_pca_of_points_on_a_plane_keeps_every_distance():
    rng = np.random.default_rng(4)
    plane = rng.normal(size=(50, 2)) * [3.0, 1.0]
    basis, _ = np.linalg.qr(rng.normal(size=(10, 2)))  # an orthonormal 2-D basis in 10-D
    x = plane @ basis.T + rng.normal(size=10)
    xy = embed_2d(torch.tensor(x), "pca")
    np.testing.assert_allclose(cdist(xy, xy), cdist(x, x), atol=1e-8)


def test_tsne_separates_clusters_and_is_seeded():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(size=(30, 8)), rng.normal(size=(30, 8)) + 20])
    xy = embed_2d(x, "tsne", seed=0)
    assert xy.shape == (60, 2) and np.isfinite(xy).all()
    np.testing.assert_array_equal(xy, embed_2d(x, "tsne", seed=0))
    c0, c1 = xy[:30].mean(0), xy[30:].mean(0)
    spread = max(np.linalg.norm(xy[:30] - c0, axis=1).max(), np.linalg.norm(xy[30:] - c1, axis=1).max())
    assert np.linalg.norm(c0 - c1) > spread
    with pytest.raises(ValueError, match="method"):
        embed_2d(x, "umap")


def test_figures(tiny_net):
    data = FakeImages(9)
    fs = extract(tiny_net, data, cache=False, progress=False)
    fig = show_neighbors(fs, [0, 5], k=3, class_names=data.classes)
    assert isinstance(fig, Figure) and len(fig.axes) == 2 * 2 * 4
    assert fig.axes[0].get_title() == "query: a"
    fig2 = show_feature_map(embed_2d(fs.features), fs.labels, data.classes, title="map")
    assert isinstance(fig2, Figure) and len(fig2.axes[0].get_legend().get_texts()) == 3
    with pytest.raises(ValueError):
        show_feature_map(np.zeros((3, 3)), [0, 1, 2])
    plt.close("all")


# --------------------------------------------------------------------------- issue 15: mode and input checks


def test_classifier_features_restores_every_submodules_own_mode(tiny_net):
    """It used to reset every submodule's training flag to the root's (a frozen part came back in train mode)."""
    tiny_net.train()
    tiny_net.features.eval()                  # e.g. a frozen feature extractor under a head being trained
    before = {name: m.training for name, m in tiny_net.named_modules()}
    classifier_features(tiny_net, torch.rand(2, 3, 64, 64))
    assert {name: m.training for name, m in tiny_net.named_modules()} == before
    assert tiny_net.training and not tiny_net.features.training and not tiny_net.features.conv1_1.training


def test_classifier_features_runs_in_eval_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)).train()
    x = torch.rand(2, 3, 2, 2)
    torch.testing.assert_close(classifier_features(net, x), classifier_features(net, x), rtol=0, atol=0)  # dropout is off
    assert net.training


def test_classifier_features_checks_its_images(tiny_net):
    with pytest.raises(TypeError, match=r"float64 but the model's weights are torch\.float32: .*x\.float\(\)"):
        classifier_features(tiny_net, torch.rand(2, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        classifier_features(tiny_net, torch.full((2, 3, 64, 64), float("nan")))
    with pytest.raises(ValueError, match="greyscale or RGBA"):
        classifier_features(tiny_net, torch.rand(2, 1, 64, 64))
    assert classifier_features(tiny_net, torch.rand(3, 64, 64)).shape == (1, 16)   # one image, unbatched
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"pixels in \[0, 1\].*normalised by hand.*pass the pixels instead"):
        classifier_features(tiny_net, tiny_net.normalize(x))


def test_pixel_vectors_of_a_feature_set_are_the_pixels_over_255():
    """No normalisation any more: the pixel space is the pixels themselves, p / 255 of the stored 8-bit images."""
    from course_lib.neighbors import FeatureSet, uint8_pixel_vectors

    u8 = torch.tensor(np.random.default_rng(5).integers(0, 256, (3, 3, 4, 4), dtype=np.uint8))
    expected = (u8.float() / 255).reshape(3, 48)
    assert torch.equal(uint8_pixel_vectors(u8), expected)
    fs = FeatureSet(torch.zeros(3, 2), u8, torch.tensor([0, 1, 0]), [0, 1, 2], "fc")
    assert torch.equal(fs.pixel_vectors(), expected) and torch.equal(fs.pixel_vectors([2]), expected[2:])
    assert 0 <= float(fs.pixel_vectors().min()) and float(fs.pixel_vectors().max()) <= 1
    idx, _ = fs.nearest("pixels", k=1)
    assert_nearest(idx, expected.double().numpy(), 1)


def test_squeezenet_features_are_its_pooled_conv10_input():
    """SqueezeNet has no linear layer: its feature vector is the input of the 1x1 classifier conv
    averaged over positions (512 numbers), the same as pooling fire9's output by hand."""
    import torchvision

    from course_lib.layers import get_layer, record_activations
    from course_lib.neighbors import classifier_features, classifier_layer

    net = torchvision.models.squeezenet1_1().eval()
    assert classifier_layer(net) == "conv10"
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), record_activations(net, ["fire9"]) as acts:
        net(x)
    phi = classifier_features(net, x)
    assert phi.shape == (2, 512)
    close(phi, acts["fire9"].mean(dim=(2, 3)))
    assert isinstance(get_layer(net, "conv10"), torch.nn.Conv2d)


def test_a_pixel_search_with_the_cached_norms_finds_exactly_what_it_found_without():
    """FeatureSet keeps the images' squared pixel norms: the same numbers, bit for bit, as computing them each time."""
    from course_lib.neighbors import FeatureSet, uint8_pixel_vectors

    u8 = torch.tensor(np.random.default_rng(7).integers(0, 256, (40, 3, 8, 8), dtype=np.uint8))
    u8[5] = u8[9]                                                           # a tie: the lower index first
    fs = FeatureSet(torch.zeros(40, 2), u8, torch.arange(40) % 3, list(range(40)), "fc")
    for queries in (None, [5, 9, 30]):
        got = fs.nearest("pixels", 4, queries, "euclidean")
        plain = nearest_neighbors(u8, 4, queries, "euclidean", vectors=uint8_pixel_vectors)
        assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1])
    v = uint8_pixel_vectors(u8)
    assert torch.equal(fs._pixel_squared_norms(), (v * v).sum(1))
    assert torch.equal(fs.nearest("pixels", 3, [2], "cosine")[0], nearest_neighbors(u8, 3, [2], "cosine",
                                                                                   vectors=uint8_pixel_vectors)[0])
    assert fs.nearest("pixels", 1, [5])[0].item() == 9 and fs.nearest("pixels", 1, [9])[0].item() == 5
