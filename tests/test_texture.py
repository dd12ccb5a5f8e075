"""course_lib.texture: the texture families before CNNs, against exact properties and brute force.

* Efros-Leung copies every output pixel from the sample;
* the minimum-error boundary cut equals the cheapest of all paths, enumerated, on small overlaps;
* quilting's overlap errors (by FFT) equal ``F.conv2d``'s; its seams show less with the cut;
* the filter bank is a tight frame (the bands add back up to the image); a matched histogram is the
  reference's exactly; Heeger-Bergen brings every sub-band's histogram close to the sample's.
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from course_lib import texture as T


def smooth_texture(size: int = 48, seed: int = 0) -> torch.Tensor:
    """A stationary random texture: low-pass noise in three correlated channels, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 3, size + 8, size + 8, generator=g)
    blurred = F.avg_pool2d(noise, 5, stride=1)[..., :size, :size]
    mixed = torch.einsum("ij,njhw->nihw", torch.tensor([[1.0, 0.5, 0.0], [0.3, 1.0, 0.3], [0.0, 0.5, 1.0]]), blurred)
    return (mixed - mixed.min()) / (mixed.max() - mixed.min())


def _colours(x: torch.Tensor) -> set:
    return {tuple(p) for p in x[0].reshape(3, -1).T.tolist()}


def test_efros_leung_copies_every_pixel_from_the_sample():
    sample = smooth_texture(20)
    out = T.efros_leung(sample, (24, 28), window=5, seed=1, progress=False)
    assert out.shape == (1, 3, 24, 28)
    assert _colours(out) <= _colours(sample)
    again = T.efros_leung(sample, (24, 28), window=5, seed=1, progress=False)
    assert torch.equal(out, again)                                   # the seed decides
    assert not torch.equal(out, T.efros_leung(sample, (24, 28), window=5, seed=2, progress=False))


def _brute_force_cut(error: torch.Tensor) -> float:
    rows, cols = error.shape
    best = float("inf")
    for path in itertools.product(range(cols), repeat=rows):
        if all(abs(a - b) <= 1 for a, b in zip(path, path[1:])):
            best = min(best, sum(float(error[i, j]) for i, j in enumerate(path)))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_min_error_cut_is_the_cheapest_path(seed):
    error = torch.rand(6, 4, generator=torch.Generator().manual_seed(seed))
    path = T.min_error_cut(error)
    assert all(abs(int(a) - int(b)) <= 1 for a, b in zip(path, path[1:]))     # a connected path
    cost = sum(float(error[i, j]) for i, j in enumerate(path.tolist()))
    assert cost == pytest.approx(_brute_force_cut(error), rel=1e-9)


def test_overlap_errors_by_fft_equal_a_convolution():
    g = torch.Generator().manual_seed(0)
    image, kernel = torch.rand(3, 37, 45, generator=g), torch.rand(3, 9, 9, generator=g)
    fft = T._correlate(torch.fft.rfft2(image), (37, 45), kernel)
    conv = F.conv2d(image[None], kernel[None])[0, 0]
    torch.testing.assert_close(fft, conv, rtol=1e-5, atol=1e-5 * float(conv.abs().max()))


def test_quilting_copies_blocks_and_the_cut_hides_the_seams():
    sample = smooth_texture(64)
    quilts = {mode: T.image_quilting(sample, 96, patch=16, overlap=6, mode=mode, seed=0) for mode in T.QUILT_MODES}
    for mode, q in quilts.items():
        assert q.shape == (1, 3, 96, 96)
        assert _colours(q) <= _colours(sample), mode                 # copied pixels only
    seams = {mode: T.seam_visibility(q, patch=16, overlap=6) for mode, q in quilts.items()}
    assert seams["random"] > 1.5 * seams["overlap"] and seams["overlap"] > seams["cut"], seams
    assert seams["cut"] < 1.3, seams                                 # about as sharp as the texture itself


def test_the_filter_bank_is_a_tight_frame():
    bank = T.steerable_bank(40, 52, scales=3, orientations=4)
    assert bank.shape == (1 + 3 * 4 + 1, 40, 52)
    torch.testing.assert_close((bank.double() ** 2).sum(0), torch.ones(40, 52, dtype=torch.float64),
                               rtol=0, atol=1e-6)
    x = torch.rand(40, 52, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(T.reconstruct(T.decompose(x, bank), bank), x, rtol=0, atol=1e-5)


def test_a_matched_histogram_is_the_references():
    g = torch.Generator().manual_seed(0)
    values, reference = torch.randn(30, 20, generator=g), torch.rand(600, generator=g) ** 3
    matched = T.match_histogram(values, reference)
    assert torch.equal(matched.reshape(-1).sort().values, reference.sort().values)     # the same values
    assert torch.equal(matched.reshape(-1).argsort(), values.reshape(-1).argsort())    # in the same order
    other = T.match_histogram(torch.randn(50, generator=g), reference)                 # another size:
    assert float(other.min()) == float(reference.min()) and float(other.max()) == float(reference.max())


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Kolmogorov-Smirnov distance of two samples' distributions."""
    grid = torch.cat([a.reshape(-1), b.reshape(-1)]).sort().values
    cdf = lambda v: torch.searchsorted(v.reshape(-1).sort().values, grid, right=True) / v.numel()  # noqa: E731
    return float((cdf(a) - cdf(b)).abs().max())


def test_heeger_bergen_matches_every_sub_band_histogram():
    sample = smooth_texture(40, seed=1)
    out = T.heeger_bergen(sample, 40, scales=2, orientations=4, iterations=4, seed=0)
    noise = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    assert out.shape == (1, 3, 40, 40) and float(out.min()) >= 0 and float(out.max()) <= 1
    bank = T.steerable_bank(40, 40, scales=2, orientations=4)
    lum = lambda x: x[0].mean(0)  # noqa: E731 - one channel is enough to compare
    ours = [_ks(a, b) for a, b in zip(T.decompose(lum(out), bank), T.decompose(lum(sample), bank))]
    theirs = [_ks(a, b) for a, b in zip(T.decompose(lum(noise), bank), T.decompose(lum(sample), bank))]
    assert max(ours) < 0.25 and sum(ours) < 0.5 * sum(theirs), (ours, theirs)


@pytest.mark.parametrize("call, error, match", [
    (lambda s: T.efros_leung(s, 16, window=4), ValueError, "window must be odd"),
    (lambda s: T.efros_leung(s, 16, window=41), ValueError, "at least one window"),
    (lambda s: T.image_quilting(s, 32, patch=8, overlap=8), ValueError, "overlap < patch"),
    (lambda s: T.image_quilting(s, 32, patch=64), ValueError, "shorter side"),
    (lambda s: T.image_quilting(s, 32, patch=8, overlap=2, mode="best"), ValueError, "mode must be one of"),
    (lambda s: T.heeger_bergen(s[0, :1], 16), ValueError, "texture sample"),
])
def test_bad_inputs_get_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call(smooth_texture(32))
