"""Which images does the network think are alike? Nearest neighbours in pixel space and in feature space.

Every image ``x`` gets two descriptions, both vectors:

* its **pixels**: the preprocessed image (resized, centre-cropped), values in [0, 1],
  flattened to ``3 * S * S`` numbers;
* its **features** ``phi(x)``: the vector the network hands to its final classifier
  layer (the course model: the 384 global-average-pooled values that feed ``fc``;
  VGG: the 4096 ReLU outputs of ``fc7`` that feed ``fc8``). It is caught with a forward
  *pre*-hook on the classifier layer, so the same code works for any model.

The ``k`` nearest neighbours of a query ``q`` are the ``k`` other images with the
smallest Euclidean distance::

    d(a, b) = ||a - b||_2 = sqrt( sum_j (a_j - b_j)^2 )
            = sqrt( ||a||^2 + ||b||^2 - 2 a.b )         (how it is computed, in blocks)

or (optionally) the cosine distance ``1 - a.b / (||a|| ||b||)``. The query itself is
never its own neighbour. How good a space is for finding "the same kind of thing" is
measured by the **label agreement**: the fraction of all the queries' ``k`` neighbours
that share the query's class.

Extracting features of a whole dataset takes a while, so :func:`extract` caches them on
disk (``data/cache/features``), keyed by the model's weights, the layer and the images.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from .cache import weights_hash
from .data import data_dir
from .imaging import fit_to_square, to_tensor
from .inputs import check_image, check_int, model_device
from .layers import architecture, eval_mode, get_layer

METRICS = ("euclidean", "cosine")


# --------------------------------------------------------------------------- features of a batch

def classifier_layer(model: nn.Module) -> str:
    """Name of the model's final classifier layer: its family's (``Architecture.classifier``:
    ``"fc"``; SqueezeNet, which has no linear layer, classifies with the 1x1 convolution ``conv10``),
    else the module path of its last ``nn.Linear``. Its *input* is the feature vector (averaged over
    positions when it is a feature map: SqueezeNet's 512 numbers)."""
    family = architecture(model, None)
    if family is not None:
        return family.classifier
    linear = [p for p, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier layer; pass layer=<name> "
                         f"to use the input of another layer as the features")
    return linear[-1]


class capture_input:
    """Context manager that records the input of one layer (a forward pre-hook).

        with capture_input(model, "fc") as got:
            model(x)
        got["input"]    # the tensor that entered model.fc

    The hook is removed when the block ends, even if it raises.
    """

    def __init__(self, model: nn.Module, layer: str):
        self.module = get_layer(model, layer)
        self.captured: dict[str, torch.Tensor] = {}
        self._handle = None

    def __enter__(self):
        def hook(_m, args):
            self.captured["input"] = args[0].detach().clone()

        self._handle = self.module.register_forward_pre_hook(hook)
        return self.captured

    def __exit__(self, *exc):
        self._handle.remove()
        return False


@torch.no_grad()
def classifier_features(model: nn.Module, x: torch.Tensor, *, layer: str | None = None) -> torch.Tensor:
    """``phi(x)``: the input of ``layer`` (default :func:`classifier_layer`) for the batch ``x``,
    flattened to ``[N, D]`` (float32, on the CPU). A feature-map input ``[N, C, h, w]`` of the
    default layer (SqueezeNet's ``conv10``) is first averaged over its h x w positions, as the
    network itself does after that layer.

    ``x``: pixel images ``[N, 3, H, W]`` in [0, 1] (or ``[3, H, W]``), of the model's float
    type (:func:`course_lib.inputs.check_image`). The model runs in eval mode; afterwards every
    submodule gets its own training flag back."""
    x = check_image(x, batch=True, model=model)
    pool = layer is None
    layer = classifier_layer(model) if layer is None else layer
    with eval_mode(model), capture_input(model, layer) as got:
        model(x)
    if "input" not in got:
        raise RuntimeError(f"layer {layer!r} was not used in the forward pass")
    phi = got["input"]
    if pool and phi.ndim == 4:
        phi = phi.mean(dim=(2, 3))
    return phi.flatten(1).float().cpu()


def pixel_vectors(x: torch.Tensor) -> torch.Tensor:
    """The raw-pixel description: the preprocessed images ``[N, 3, S, S]`` flattened to ``[N, 3*S*S]``."""
    return x.flatten(1)


def uint8_pixel_vectors(pixels: torch.Tensor) -> torch.Tensor:
    """:func:`pixel_vectors` of 8-bit images ``[N, 3, S, S]``: ``p / 255``, flattened."""
    # (a float32 copy, divided in place: the same numbers as pixels.float() / 255, in about half the time)
    return pixel_vectors(pixels.to(torch.float32, copy=True).div_(255))


# --------------------------------------------------------------------------- a whole dataset, cached

@dataclass
class FeatureSet:
    """Pixels and features of some images of a dataset.

    ``features`` ``[N, D]`` float32: the classifier's input for each image;
    ``pixels`` ``[N, 3, S, S]`` uint8: the image the model saw (resized and centre-cropped),
    kept as 8-bit pixels to save memory (like an image file); ``labels`` ``[N]``;
    ``indices``: the images' positions in the dataset; ``layer``: where the features were taken.
    """

    features: torch.Tensor
    pixels: torch.Tensor
    labels: torch.Tensor
    indices: list
    layer: str

    def __len__(self) -> int:
        return len(self.labels)

    def pixel_vectors(self, rows=slice(None)) -> torch.Tensor:
        """The preprocessed images ``rows`` (pixels in [0, 1]) flattened: float32 ``[n, 3*S*S]``."""
        return uint8_pixel_vectors(self.pixels[rows])

    def nearest(self, space: str, k: int = 5, queries=None, metric: str = "euclidean",
                progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`nearest_neighbors` of the ``queries`` (default: all) by ``"pixels"`` or ``"features"``."""
        if space == "pixels":
            return nearest_neighbors(self.pixels, k, queries, metric, progress=progress,
                                     vectors=uint8_pixel_vectors, squared_norms=self._pixel_squared_norms())
        if space == "features":
            return nearest_neighbors(self.features, k, queries, metric, progress=progress)
        raise ValueError(f"space must be 'pixels' or 'features', got {space!r}")

    def _pixel_squared_norms(self) -> torch.Tensor:
        """``|p|^2`` of every image's pixel vector, computed once (each search by pixels needs them all: 0.3 s
        for the 3,925 validation images), by the very expression :func:`pairwise_distances` uses."""
        key = (self.pixels.data_ptr(), tuple(self.pixels.shape))
        if getattr(self, "_norms_of", None) != key:
            blocks = (uint8_pixel_vectors(self.pixels[s:s + 1024]) for s in range(0, len(self.pixels), 1024))
            self._norms, self._norms_of = torch.cat([(b * b).sum(1) for b in blocks]), key
        return self._norms

    def images(self, rows) -> list[np.ndarray]:
        """The images ``rows`` as ``S x S x 3`` float arrays in ``[0, 1]``, for display."""
        return [p.permute(1, 2, 0).numpy() / 255 for p in self.pixels[rows]]


def cache_key(model: nn.Module, dataset, indices, layer: str) -> str:
    """File name of the cached features: model class + weights hash, layer, image count, and a hash
    of the dataset, the image indices and the model's input size and normalisation."""
    what = hashlib.sha256(repr((type(dataset).__name__, getattr(dataset, "split", None), len(dataset),
                                list(indices), getattr(model, "input_size", None),
                                getattr(model, "mean", None), getattr(model, "std", None))).encode())
    safe_layer = layer.replace(".", "-")
    return (f"{type(model).__name__}-{weights_hash(model)[:16]}-{safe_layer}-{len(indices)}img-"
            f"{what.hexdigest()[:12]}.pt")


def default_cache_dir() -> Path:
    """Where :func:`extract` keeps features: ``data_dir()/cache/features``."""
    return data_dir() / "cache" / "features"


@torch.no_grad()
def extract(model: nn.Module, dataset, indices=None, layer: str | None = None, batch_size: int = 64,
            cache: bool = True, cache_dir: Path | str | None = None, progress: bool = True) -> FeatureSet:
    """Pixels and features (the input of ``layer``, default the final classifier) of ``dataset[i]``
    for ``i`` in ``indices`` (default: all), batched with a progress bar.

    With ``cache=True`` the result is saved under ``cache_dir`` (default
    :func:`default_cache_dir`) with a name from :func:`cache_key`, and loaded from there
    next time: the same model weights, layer and images give the same file, any other
    model or image selection a different one.
    """
    from tqdm.auto import tqdm

    batch_size = check_int(batch_size, "batch_size", low=1)
    idx = list(range(len(dataset))) if indices is None else [check_int(i, "index") for i in indices]
    if not idx:
        raise ValueError("no images selected (indices is empty)")
    if min(idx) < 0 or max(idx) >= len(dataset):
        raise IndexError(f"indices must lie in [0, {len(dataset)}), got {min(idx)}..{max(idx)}")
    layer = classifier_layer(model) if layer is None else layer
    get_layer(model, layer)  # unknown layer: KeyError listing the valid names
    if not hasattr(model, "input_size"):
        raise TypeError("the model needs an input_size attribute (models from load_model have it)")
    size = int(model.input_size)

    path = Path(cache_dir or default_cache_dir()) / cache_key(model, dataset, idx, layer)
    if cache and path.exists():
        d = torch.load(path, weights_only=True)
        return FeatureSet(d["features"], d["pixels"], d["labels"], idx, layer)

    device = model_device(model)
    feats, pixels, labels = [], [], []
    for s in tqdm(range(0, len(idx), batch_size), desc="features", unit="batch", disable=not progress):
        batch = [dataset[i] for i in idx[s:s + batch_size]]
        x01 = torch.cat([fit_to_square(to_tensor(img)[None], size) for img, _ in batch])  # [b,3,S,S] in [0,1]
        feats.append(classifier_features(model, x01.to(device), layer=layer))
        pixels.append((x01 * 255).round().clamp(0, 255).to(torch.uint8))
        labels += [int(y) for _, y in batch]
    fs = FeatureSet(torch.cat(feats), torch.cat(pixels), torch.tensor(labels), idx, layer)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + "-", suffix=".part")
        os.close(fd)
        try:
            torch.save({"features": fs.features, "pixels": fs.pixels, "labels": fs.labels}, tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return fs


# --------------------------------------------------------------------------- nearest neighbours

def pairwise_distances(a: torch.Tensor, b: torch.Tensor, metric: str = "euclidean", *,
                       b_squared_norms: torch.Tensor | None = None) -> torch.Tensor:
    """Distances ``[Na, Nb]`` between the rows of ``a`` ``[Na, D]`` and ``b`` ``[Nb, D]``.

    euclidean: ``sqrt(max(0, ||a||^2 + ||b||^2 - 2 a.b))``; cosine: ``1 - a.b / (||a|| ||b||)``
    (a zero vector counts as orthogonal to everything). ``b_squared_norms``: ``||b||^2`` of each row
    of ``b`` when already known (``(b * b).sum(1)``; euclidean only).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two matrices [Na, D] and [Nb, D], got shapes {list(a.shape)} and {list(b.shape)}")
    a, b = a.float(), b.float()
    if metric == "cosine":
        an = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
        bn = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 1 - an @ bn.T
    bb = (b * b).sum(1) if b_squared_norms is None else b_squared_norms
    sq = (a * a).sum(1)[:, None] + bb[None, :] - 2 * (a @ b.T)
    return sq.clamp_min(0).sqrt()


def nearest_neighbors(x, k: int = 5, queries=None, metric: str = "euclidean", vectors=None,
                      block: int = 1024, progress: bool = False,
                      squared_norms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest rows of ``x`` to each query, the query itself excluded.

    ``x`` holds ``N`` items (rows of a tensor or array); ``queries`` are indices into ``x``
    (default: every row). ``vectors`` turns a block of rows of ``x`` into float vectors
    ``[n, D]`` (default: flatten), so ``x`` may be stored compactly (e.g. uint8 pixels).
    Distances are computed ``block`` x ``block`` items at a time, so memory stays small.
    ``squared_norms``: ``|v|^2`` of every item's vector, when known (euclidean; they are most of the
    work of a search for a few queries). Returns ``(indices [Q, k], distances [Q, k])``, nearest
    first; ties go to the lower index.
    """
    from tqdm.auto import tqdm

    x = torch.as_tensor(x)
    n = len(x)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(f"k must be an int between 1 and {n - 1} (the number of other items), got {k!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    q = torch.arange(n) if queries is None else torch.as_tensor(queries, dtype=torch.long).reshape(-1)
    if len(q) and (q.min() < 0 or q.max() >= n):
        raise IndexError(f"query indices must lie in [0, {n}), got {q.min().item()}..{q.max().item()}")
    vectors = vectors or (lambda rows: rows.flatten(1).float())
    best_i, best_d = [], []
    for qs in tqdm(range(0, len(q), block), desc="neighbours", unit="block", disable=not progress):
        qb = q[qs:qs + block]
        qv = vectors(x[qb])
        bd = torch.full((len(qb), k), float("inf"))
        bi = torch.full((len(qb), k), -1, dtype=torch.long)
        for s in range(0, n, block):
            ids = torch.arange(s, min(s + block, n))
            known = squared_norms[s:s + block] if squared_norms is not None and metric == "euclidean" else None
            d = pairwise_distances(qv, vectors(x[s:s + block]), metric, b_squared_norms=known)
            d[qb[:, None] == ids[None, :]] = float("inf")  # never the query itself
            # merge with the best so far (lower indices first, and a stable sort keeps ties in index order)
            cand_d = torch.cat([bd, d], 1)
            cand_i = torch.cat([bi, ids.expand(len(qb), -1)], 1)
            order = torch.sort(cand_d, dim=1, stable=True).indices[:, :k]
            bd, bi = cand_d.gather(1, order), cand_i.gather(1, order)
        best_i.append(bi)
        best_d.append(bd)
    if not best_i:
        return torch.empty(0, k, dtype=torch.long), torch.empty(0, k)
    return torch.cat(best_i), torch.cat(best_d)


def label_agreement(neighbors: torch.Tensor, labels, queries=None) -> float:
    """The fraction of neighbours that share their query's class::

        agreement = 1/(Q k) * sum_q sum_j [ label(neighbor_qj) == label(q) ]

    ``neighbors`` ``[Q, k]`` indexes ``labels``; ``queries`` are the queries' own indices
    (default: ``0 .. Q-1``, i.e. every item was a query).
    """
    labels = torch.as_tensor(labels)
    neighbors = torch.as_tensor(neighbors)
    if neighbors.ndim != 2:
        raise ValueError(f"expected neighbours of shape [Q, k], got {list(neighbors.shape)}")
    q = torch.arange(len(neighbors)) if queries is None else torch.as_tensor(queries).reshape(-1)
    if len(q) != len(neighbors):
        raise ValueError(f"{len(neighbors)} rows of neighbours but {len(q)} queries")
    return (labels[neighbors] == labels[q][:, None]).float().mean().item()


# --------------------------------------------------------------------------- a map of feature space

def embed_2d(features, method: str = "pca", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """Each feature vector as a point in the plane, ``[N, 2]``, with scikit-learn.

    ``"pca"``: the projection onto the two directions of largest variance (a linear map:
    distances can only shrink). ``"tsne"``: t-SNE (after PCA to 50 dimensions), which
    keeps *neighbours* close but distorts large distances and cluster sizes.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features)
    x = x.reshape(len(x), -1).astype(np.float32 if x.dtype == np.float32 else np.float64)  # float32 stays (memory)
    if len(x) < 3:
        raise ValueError(f"need at least 3 points to embed, got {len(x)}")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        if x.shape[1] > 50 and len(x) > 50:
            x = PCA(n_components=50, random_state=seed).fit_transform(x)
        perplexity = min(perplexity, (len(x) - 1) / 3)
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


# --------------------------------------------------------------------------- figures

def show_neighbors(fs: FeatureSet, queries, k: int = 5, class_names=None, metric: str = "euclidean",
                   size: float = 1.6) -> matplotlib.figure.Figure:
    """For each query: a row with its ``k`` nearest neighbours by pixels, and a row by features.

    The first image of each row is the query; neighbour titles are green when the
    neighbour shares the query's class, red when not.
    """
    queries = [int(i) for i in np.atleast_1d(queries)]
    rows = [fs.nearest(space, k, queries, metric)[0] for space in ("pixels", "features")]
    fig, axes = plt.subplots(2 * len(queries), k + 1, figsize=((k + 1) * size, 2 * len(queries) * (size + 0.25)),
                             squeeze=False)
    name = (lambda y: class_names[y]) if class_names is not None else str
    for qi, q in enumerate(queries):
        for r, space in enumerate(("pixels", "features")):
            ax_row = axes[2 * qi + r]
            nbrs = rows[r][qi].tolist()
            ax_row[0].imshow(fs.images([q])[0])
            ax_row[0].set_title(f"query: {name(int(fs.labels[q]))}", fontsize=8, fontweight="bold")
            ax_row[0].set_ylabel(space)
            for j, n in enumerate(nbrs, start=1):
                same = fs.labels[n] == fs.labels[q]
                ax_row[j].imshow(fs.images([n])[0])
                ax_row[j].set_title(f"{space[:-1]} #{j}: {name(int(fs.labels[n]))}", fontsize=7,
                                    color="green" if same else "red")
            for ax in ax_row:
                ax.set_xticks([])
                ax.set_yticks([])
            ax_row[0].set_ylabel(f"by {space}", fontsize=9)
    fig.tight_layout()
    return fig


def show_feature_map(xy, labels, class_names=None, title: str | None = None, ax=None,
                     size: float = 5) -> matplotlib.figure.Figure:
    """Scatter the 2-D points ``xy`` ``[N, 2]`` coloured by class, with a legend."""
    xy = np.asarray(xy)
    labels = np.asarray(torch.as_tensor(labels))
    if xy.ndim != 2 or xy.shape[1] != 2 or len(xy) != len(labels):
        raise ValueError(f"expected points [N, 2] and N labels, got {xy.shape} and {labels.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(size + 1.5, size), layout="constrained")
    cmap = plt.get_cmap("tab10" if labels.max() < 10 else "tab20")
    for c in np.unique(labels):
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(int(c) % cmap.N),
                   label=class_names[c] if class_names is not None else str(c))
    ax.legend(fontsize=7, markerscale=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax.figure
