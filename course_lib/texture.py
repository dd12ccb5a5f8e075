"""Texture synthesis before CNNs: the two families the lecture names beside Gram matching.

**Copy from the sample** (non-parametric sampling). A texture is a stationary random field: what a
pixel looks like depends only on its neighbourhood. So a new texture can be *grown* by copying,
for each new pixel, a sample pixel whose neighbourhood looks like the new pixel's known neighbours.

* :func:`efros_leung` (Efros & Leung 1999) grows it pixel by pixel. A new pixel ``p`` with known
  neighbours ``N(p)`` (a ``window x window`` square, weights ``g`` a Gaussian times the known-mask)
  is compared with every sample window ``q``:

      d(p, q) = sum_k g_k (N(p)_k - N(q)_k)^2 / sum_k g_k

  and copies the centre of a window drawn at random among those with ``d <= (1 + epsilon) d_min``.
  The window size is the method's one knob: it must cover the texture's largest regular element.
* :func:`image_quilting` (Efros & Freeman 2001) copies whole blocks: in raster order, each block is
  drawn among the sample's blocks whose **overlap error** with what is already placed is within
  ``(1 + tolerance)`` of the best, then pasted along the **minimum-error boundary cut**
  (:func:`min_error_cut`): the path through the overlap where the old and the new block differ
  least, found by dynamic programming,

      E(i, j) = e(i, j) + min(E(i-1, j-1), E(i-1, j), E(i-1, j+1)),   e = |B_old - B_new|^2,

  so the transition at the block boundary follows the texture instead of a straight line.

**Match statistics of a fixed filter bank** (Heeger & Bergen 1995; Portilla & Simoncelli 2000).
Decompose the image into oriented, multi-scale sub-bands (:func:`steerable_bank`, a tight frame
in the Fourier domain: the bands add back up to the image exactly) and force the histogram of
every sub-band, and of the pixels, to match the sample's (:func:`match_histogram`), repeatedly,
starting from noise (:func:`heeger_bergen`). Marginal statistics of linear filters suffice for
stochastic textures; structured ones (bricks, text) need the joint statistics that a CNN's Gram
matrices (:func:`course_lib.style.texture_synthesis`) capture.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .inputs import check_int, check_number, check_pixels, check_size

QUILT_MODES = ("random", "overlap", "cut")


# --------------------------------------------------------------------------- copying pixels

def _gaussian_window(window: int) -> torch.Tensor:
    """The window's weights: a Gaussian of sigma = window / 6.4, as in Efros & Leung's paper."""
    t = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-t ** 2 / (2 * (window / 6.4) ** 2))
    return torch.outer(g, g)


def efros_leung(sample: torch.Tensor, size, *, window: int = 11, epsilon: float = 0.1, seed: int = 0,
                progress: bool = True) -> torch.Tensor:
    """Efros & Leung's non-parametric sampling: grow a ``size`` texture from a 3 x 3 seed of ``sample``.

    Every step fills the unfilled pixels that have the most known neighbours (the growing front,
    in a batch: they do not see each other, only pixels filled before), each with the centre of a
    sample window within ``(1 + epsilon)`` of its best Gaussian-weighted match (module docstring).
    Every output pixel is a copy of a sample pixel. Returns ``[1, 3, H, W]`` pixels.
    """
    from tqdm.auto import tqdm

    sample = check_pixels(sample, "texture sample", batch=False)[0]
    h, w = check_size(size)
    window = check_int(window, "window", low=3)
    if window % 2 == 0:
        raise ValueError(f"window must be odd (a centre pixel), got {window}")
    epsilon = check_number(epsilon, "epsilon", low=0)
    seed = check_int(seed, "seed")
    sh, sw = sample.shape[-2:]
    if min(sh, sw) < window:
        raise ValueError(f"the sample ({sh} x {sw}) must be at least one window ({window} px) on each side")
    r = window // 2
    windows = F.unfold(sample[None], window)[0].T                          # [P, 3 * window^2]
    centres = sample[:, r:sh - r, r:sw - r].reshape(3, -1).T                # [P, 3]
    gauss = _gaussian_window(window).reshape(-1).repeat(3)                   # [3 * window^2]
    g = torch.Generator().manual_seed(seed)

    canvas = torch.zeros(3, h + 2 * r, w + 2 * r)
    known = torch.zeros(1, 1, h + 2 * r, w + 2 * r)
    y0, x0 = (int(torch.randint(0, sh - 2, (1,), generator=g)), int(torch.randint(0, sw - 2, (1,), generator=g)))
    cy, cx = r + h // 2 - 1, r + w // 2 - 1
    canvas[:, cy:cy + 3, cx:cx + 3] = sample[:, y0:y0 + 3, x0:x0 + 3]
    known[..., cy:cy + 3, cx:cx + 3] = 1
    inside = torch.zeros_like(known, dtype=torch.bool)
    inside[..., r:r + h, r:r + w] = True
    ones = torch.ones(1, 1, 3, 3)
    offsets = torch.arange(-r, r + 1)
    bar = tqdm(total=h * w, initial=9, desc="Efros-Leung", unit="px", disable=not progress)
    while not bool(known[inside].all()):
        neighbours = F.conv2d(known, ones, padding=1)
        todo = inside & (known == 0) & (neighbours > 0)
        most = neighbours[todo].max()
        ys, xs = torch.nonzero((todo & (neighbours == most))[0, 0], as_tuple=True)
        rows, cols = ys[:, None, None] + offsets[None, :, None], xs[:, None, None] + offsets[None, None, :]
        cw = canvas[:, rows, cols].transpose(0, 1).reshape(len(ys), -1)     # [B, 3 * window^2], unfold's order
        cm = known[0, 0, rows, cols].reshape(len(ys), -1).repeat(1, 3) * gauss   # known x Gaussian
        # d(p, q) for every new pixel p and sample window q, as three matrix products
        d = (cm * cw ** 2).sum(1, keepdim=True) - 2 * (cm * cw) @ windows.T + cm @ (windows ** 2).T
        d = d.clamp_min(0) / cm.sum(1, keepdim=True)
        ok = d <= d.min(1, keepdim=True).values * (1 + epsilon) + 1e-12
        pick = torch.multinomial(ok.float(), 1, generator=g)[:, 0]
        canvas[:, ys, xs] = centres[pick].T
        known[0, 0, ys, xs] = 1
        bar.update(len(ys))
    bar.close()
    return canvas[None, :, r:r + h, r:r + w].clone()


# --------------------------------------------------------------------------- copying blocks

def min_error_cut(error: torch.Tensor) -> torch.Tensor:
    """The minimum-error boundary cut through an overlap: ``error`` ``[rows, cols]`` (the squared
    difference of the two blocks there) -> the column of the cut in each row, ``[rows]`` (int64).

    Dynamic programming, top to bottom: ``E(i, j) = e(i, j) + min(E(i-1, j-1), E(i-1, j), E(i-1, j+1))``;
    then back from the smallest ``E`` of the last row. The path moves at most one column per row.
    """
    rows, cols = error.shape
    cost = error.double().clone()
    for i in range(1, rows):
        above = cost[i - 1]
        left = torch.cat([above.new_tensor([math.inf]), above[:-1]])
        right = torch.cat([above[1:], above.new_tensor([math.inf])])
        cost[i] += torch.minimum(above, torch.minimum(left, right))
    path = torch.empty(rows, dtype=torch.long)
    path[-1] = int(cost[-1].argmin())
    for i in range(rows - 2, -1, -1):
        j = int(path[i + 1])
        lo, hi = max(j - 1, 0), min(j + 2, cols)
        path[i] = lo + int(cost[i, lo:hi].argmin())
    return path


def _cut_mask(old: torch.Tensor, new: torch.Tensor, overlap: int, top: bool, left: bool) -> torch.Tensor:
    """Where the new block shows (``[patch, patch]``, bool): right of the cut through the left overlap and
    below the cut through the top overlap."""
    patch = new.shape[-1]
    mask = torch.ones(patch, patch, dtype=torch.bool)
    e = ((old - new) ** 2).sum(0)
    cols = torch.arange(patch)
    if left:
        path = min_error_cut(e[:, :overlap])
        mask &= cols[None, :] >= path[:, None]
    if top:
        path = min_error_cut(e[:overlap, :].T)
        mask &= cols[:, None] >= path[None, :]
    return mask


def _correlate(spectrum: torch.Tensor, size: tuple[int, int], kernel: torch.Tensor) -> torch.Tensor:
    """``sum_c sum_ij image_c[y + i, x + j] kernel_c[i, j]`` for every block position ``(y, x)`` of an image of
    ``size`` whose ``rfft2`` is ``spectrum`` ``[3, ...]``: what ``F.conv2d`` computes, by FFT (one product)."""
    h, w = size
    k = kernel.shape[-1]
    product = spectrum * torch.fft.rfft2(kernel, s=(h, w)).conj()
    return torch.fft.irfft2(product, s=(h, w)).sum(0)[:h - k + 1, :w - k + 1]


def image_quilting(sample: torch.Tensor, size, *, patch: int = 32, overlap: int = 8, tolerance: float = 0.1,
                   mode: str = "cut", seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Efros & Freeman's image quilting: fill a ``size`` canvas with ``patch x patch`` blocks of ``sample``.

    ``mode`` shows the method's three steps (Fig. 2 of the paper):

    * ``"random"``: blocks drawn at random, pasted side by side (overlaps overwritten);
    * ``"overlap"``: each block drawn among those whose squared error on the ``overlap`` strips it shares
      with the blocks already placed is within ``(1 + tolerance)`` of the best one's; pasted as a square;
    * ``"cut"`` (the method): the same choice, pasted along the minimum-error boundary cut.

    Every sample block is a candidate (the overlap errors of all of them come from three convolutions).
    Returns ``[1, 3, H, W]`` pixels.
    """
    from tqdm.auto import tqdm

    sample = check_pixels(sample, "texture sample", batch=False)[0]
    h, w = check_size(size)
    patch, overlap = check_int(patch, "patch", low=2), check_int(overlap, "overlap", low=1)
    tolerance, seed = check_number(tolerance, "tolerance", low=0), check_int(seed, "seed")
    if mode not in QUILT_MODES:
        raise ValueError(f"mode must be one of {QUILT_MODES}, got {mode!r}")
    sh, sw = sample.shape[-2:]
    if not overlap < patch <= min(sh, sw):
        raise ValueError(f"need overlap < patch <= the sample's shorter side ({min(sh, sw)}); "
                         f"got patch {patch}, overlap {overlap}")
    g = torch.Generator().manual_seed(seed)
    step = patch - overlap
    rows, cols = math.ceil(max(h - overlap, 1) / step), math.ceil(max(w - overlap, 1) / step)
    canvas = torch.zeros(3, rows * step + overlap, cols * step + overlap)
    blocks = F.unfold(sample[None], patch)[0].T.reshape(-1, 3, patch, patch)   # every sample block
    spectrum, sample_sq = torch.fft.rfft2(sample), torch.fft.rfft2(sample ** 2)   # for the correlations below
    bar = tqdm(total=rows * cols, desc="quilting", unit="block", disable=not progress)
    for r in range(rows):
        for c in range(cols):
            y0, x0 = r * step, c * step
            old = canvas[:, y0:y0 + patch, x0:x0 + patch]
            mask = torch.zeros(patch, patch)
            if r:
                mask[:overlap] = 1
            if c:
                mask[:, :overlap] = 1
            if mode == "random" or not (r or c):
                pick = int(torch.randint(0, len(blocks), (1,), generator=g))
            else:
                # sum over the overlap of (B - old)^2 = sum m B^2 - 2 sum m B old + sum m old^2, for every block B
                m_b2 = _correlate(sample_sq, (sh, sw), mask.expand(3, patch, patch))
                m_b_old = _correlate(spectrum, (sh, sw), old * mask)
                err = (m_b2 - 2 * m_b_old + (old ** 2 * mask).sum()).clamp_min(0).reshape(-1)
                ok = err <= err.min() * (1 + tolerance) + 1e-9
                pick = int(torch.multinomial(ok.float(), 1, generator=g))
            new = blocks[pick]
            if mode == "cut" and (r or c):
                keep = _cut_mask(old, new, overlap, top=r > 0, left=c > 0)
                canvas[:, y0:y0 + patch, x0:x0 + patch] = torch.where(keep, new, old)
            else:
                canvas[:, y0:y0 + patch, x0:x0 + patch] = new
            bar.update(1)
    bar.close()
    return canvas[None, :, :h, :w].clone()


def seam_visibility(image: torch.Tensor, *, patch: int, overlap: int) -> float:
    """How visible a quilt's block borders are: the mean gradient energy ``|dI/dx|^2 + |dI/dy|^2`` on the
    lines where straight-pasted blocks meet, divided by its mean elsewhere (1: seams as sharp as the
    texture itself; higher: visible seams). The borders are those of :func:`image_quilting`'s grid."""
    image = check_pixels(image, "quilt", batch=False)[0]
    step = patch - overlap
    dx = (image[:, :, 1:] - image[:, :, :-1]).pow(2).sum(0)                # between columns j and j+1
    dy = (image[:, 1:, :] - image[:, :-1, :]).pow(2).sum(0)                # between rows i and i+1
    col = torch.zeros(dx.shape[-1], dtype=torch.bool)
    col[step - 1::step] = True                      # a block pasted at x0 = c * step leaves an edge at x0 - 1 | x0
    row = torch.zeros(dy.shape[0], dtype=torch.bool)
    row[step - 1::step] = True
    on = torch.cat([dx[:, col].reshape(-1), dy[row].reshape(-1)])
    off = torch.cat([dx[:, ~col].reshape(-1), dy[~row].reshape(-1)])
    return float(on.mean() / off.mean().clamp_min(1e-12))


# --------------------------------------------------------------------------- matching statistics

def steerable_bank(height: int, width: int, *, scales: int = 4, orientations: int = 4) -> torch.Tensor:
    """An oriented multi-scale filter bank in the Fourier domain, ``[K, height, width]`` (real, even):
    a high-pass, ``scales x orientations`` oriented bands one octave apart, and the low-pass residual.

    Its squared responses add up to one at every frequency (a *tight frame*, as in the steerable pyramid
    of Simoncelli & Freeman 1995, without subsampling), so decomposing (:func:`decompose`) and adding the
    bands back (:func:`reconstruct`) gives the image exactly. Radial parts: raised-cosine octaves in
    ``log2`` of the frequency; angular parts: ``|cos(theta - theta_k)|^(orientations - 1)``, normalised."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None].expand(height, width)
    fx = torch.fft.fftfreq(width, dtype=torch.float64)[None, :].expand(height, width)
    radius = torch.sqrt(fx ** 2 + fy ** 2).clamp_min(1e-12) / 0.5          # 1 at Nyquist
    theta = torch.atan2(fy, fx)

    def lowpass(r_edge):
        t = ((torch.log2(radius) - math.log2(r_edge)) + 1).clamp(0, 1)      # 0 (pass) .. 1 (stop) over an octave
        return torch.cos(math.pi / 2 * t)

    bands = []
    previous = torch.ones(height, width, dtype=torch.float64)
    n = orientations - 1
    norm = math.sqrt((2 ** (2 * n)) * math.factorial(n) ** 2 / (orientations * math.factorial(2 * n)))
    for s in range(scales + 1):
        current = lowpass(2.0 ** -s)          # keeps frequencies below 2^-s Nyquist
        ring = torch.sqrt((previous ** 2 - current ** 2).clamp_min(0))
        if s == 0:
            bands.append(ring)                # the high-pass above Nyquist / 2 .. Nyquist
        else:
            for k in range(orientations):
                angle = (theta - math.pi * k / orientations)
                bands.append(ring * norm * torch.cos(angle).abs() ** n)
        previous = current
    bands.append(previous)                    # the low-pass residual
    return torch.stack(bands).float()


def decompose(x: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """The sub-bands of one channel ``x`` ``[H, W]``: ``[K, H, W]`` (real: the bank is even)."""
    return torch.fft.ifft2(torch.fft.fft2(x)[None] * bank).real


def reconstruct(bands: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """The channel back from its sub-bands: ``sum_k IFFT(H_k FFT(band_k))`` (exact for a tight frame)."""
    return torch.fft.ifft2((torch.fft.fft2(bands) * bank).sum(0)).real


def match_histogram(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``values`` with their histogram replaced by ``reference``'s: the ``k``-th smallest value becomes the
    reference's value at the same quantile (linearly interpolated; exact when the sizes are equal).
    Keeps the shape of ``values`` and the order of its entries."""
    flat = values.reshape(-1)
    ref = reference.reshape(-1).sort().values
    order = flat.argsort()
    q = torch.linspace(0, 1, len(flat), dtype=torch.float64) * (len(ref) - 1)
    lo = q.floor().long().clamp(max=len(ref) - 1)
    hi = (lo + 1).clamp(max=len(ref) - 1)
    t = (q - lo).to(ref.dtype)
    out = torch.empty_like(flat)
    out[order] = (ref[lo] * (1 - t) + ref[hi] * t).to(flat.dtype)
    return out.reshape(values.shape)


def _colour_basis(sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample's mean colour and principal colour axes ``[3, 3]`` (rows): decorrelated channels."""
    pixels = sample.reshape(3, -1)
    mean = pixels.mean(1, keepdim=True)
    cov = torch.cov(pixels)
    _, vectors = torch.linalg.eigh(cov.double())
    return mean, vectors.T.float()


def heeger_bergen(sample: torch.Tensor, size, *, scales: int = 4, orientations: int = 4, iterations: int = 5,
                  seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Heeger & Bergen's pyramid-based texture synthesis: start from noise and, ``iterations`` times, match
    the histogram of every sub-band of :func:`steerable_bank` to the sample's, add the bands back, and
    match the pixel histogram. Colour: each principal colour axis of the sample is one channel, as in the
    paper. Returns ``[1, 3, H, W]`` pixels."""
    from tqdm.auto import tqdm

    sample = check_pixels(sample, "texture sample", batch=False)[0]
    h, w = check_size(size)
    scales, orientations = check_int(scales, "scales", low=1), check_int(orientations, "orientations", low=1)
    iterations, seed = check_int(iterations, "iterations", low=1), check_int(seed, "seed")
    mean, basis = _colour_basis(sample)
    channels = (basis @ (sample.reshape(3, -1) - mean)).reshape(sample.shape)
    bank_s = steerable_bank(*sample.shape[-2:], scales=scales, orientations=orientations)
    bank_x = steerable_bank(h, w, scales=scales, orientations=orientations)
    targets = [decompose(ch, bank_s) for ch in channels]
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([match_histogram(torch.randn(h, w, generator=g), ch) for ch in channels])
    for _ in tqdm(range(iterations), desc="Heeger-Bergen", disable=not progress):
        out = []
        for ch, target, sample_ch in zip(x, targets, channels):
            bands = decompose(ch, bank_x)
            bands = torch.stack([match_histogram(b, t) for b, t in zip(bands, target)])
            out.append(match_histogram(reconstruct(bands, bank_x), sample_ch))
        x = torch.stack(out)
    pixels = basis.T @ x.reshape(3, -1) + mean
    return pixels.reshape(1, 3, h, w).clamp(0, 1)
