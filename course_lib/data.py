"""Every data file the course uses: where it comes from, how it is checked, where it is kept.

Each asset is found in this order:

1. the local cache, ``data/`` in the repository (git-ignored; override with
   ``COURSE_DATA_DIR``);
2. a local mirror folder named by the environment variable ``COURSE_DATA_MIRROR``
   (same layout as the public sources; the Makefile points it at ``../shared/data``
   when that folder exists);
3. the network: the public URL below, with a progress bar.

Whatever the source, the bytes are checked against the pinned checksum before the
file is moved (atomically) into the cache; a file that does not match is never used.

For the training commands (:mod:`course_lib.train`, :mod:`course_lib.fast_style`):
:func:`decode_split` (an Imagenette split as one uint8 tensor, cached) and
:func:`random_resized_crop` (their augmentation: random crops and flips).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent


class DataError(RuntimeError):
    """Base class of every data problem the course reports."""


class ChecksumError(DataError):
    """A file's bytes do not match the pinned checksum (corrupt, truncated or replaced)."""


class DataUnavailableError(DataError):
    """An asset is not cached, not in a mirror, and could not be downloaded."""


def data_dir() -> Path:
    """The local cache folder (``COURSE_DATA_DIR`` or ``<repo>/data``).

    An empty (or blank) ``COURSE_DATA_DIR`` counts as unset, as an empty ``COURSE_DATA_MIRROR``
    does: ``Path("")`` would silently make the current directory the data folder.
    """
    d = os.environ.get("COURSE_DATA_DIR", "").strip()
    return Path(d) if d else REPO_ROOT / "data"


def mirror_dir() -> Path | None:
    """The local mirror folder from ``COURSE_DATA_MIRROR``, or None if unset (or empty)."""
    m = os.environ.get("COURSE_DATA_MIRROR", "").strip()
    return Path(m) if m else None


# --------------------------------------------------------------------------- registry

NEURAL_STYLE = "https://raw.githubusercontent.com/jcjohnson/neural-style/master/examples/inputs/"
FAST_STYLE = "https://raw.githubusercontent.com/jcjohnson/fast-neural-style/master/images/"


@dataclass(frozen=True)
class ImageAsset:
    """One image file: its public URL, sha256 and where it lives (``styles/`` or ``content/``)."""

    name: str
    folder: str
    url: str
    sha256: str
    credit: str

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.name}.jpg"


def _img(name, folder, base, sha256, credit):
    sub = "" if base == NEURAL_STYLE else folder + "/"
    return ImageAsset(name, folder, f"{base}{sub}{name}.jpg", sha256, credit)


IMAGES: dict[str, ImageAsset] = {a.name: a for a in [
    _img("starry_night", "styles", NEURAL_STYLE,
         "0592ab0f7b51b3ce72608a95e53880bd93971e5b48f93a0ce8dfd3cbccf3d098",
         "Vincent van Gogh, The Starry Night (1889); via jcjohnson/neural-style"),
    _img("the_scream", "styles", NEURAL_STYLE,
         "f3075cddeb974a9ee1d6418f7f33fd05185a7ac7dcb4288bd2805d499a9dcaee",
         "Edvard Munch, The Scream (1893); via jcjohnson/neural-style"),
    _img("shipwreck", "styles", NEURAL_STYLE,
         "4f7cf34e3cd4a5daaf3f421f059ca9a01aaa2a3afd7243d6670c9c8bc001a213",
         "J. M. W. Turner, The Shipwreck (1805); via jcjohnson/neural-style"),
    _img("woman-with-hat-matisse", "styles", NEURAL_STYLE,
         "6a8b2383d9c110354a97a42c74bdcc5341be879cbb842ddb7ab5843dbdf56d53",
         "Henri Matisse, Woman with a Hat (1905); via jcjohnson/neural-style"),
    _img("composition_vii", "styles", FAST_STYLE,
         "8f992ed4aecd6dd56972d7bc8166761de7c94e670ee6effa8fd05f3daeb33409",
         "Wassily Kandinsky, Composition VII (1913); via jcjohnson/fast-neural-style"),
    _img("wave", "styles", FAST_STYLE,
         "14bcf58a39b7095168f27756d76d0c615bb8954acc5eae9e62c66a9684c2ee2b",
         "Katsushika Hokusai, The Great Wave off Kanagawa (c. 1831); via jcjohnson/fast-neural-style"),
    _img("wave_crop", "styles", FAST_STYLE,
         "e58c782cb8f135f32bb9678468901aaace4f2f037286e9d914208de7108026e7",
         "Katsushika Hokusai, The Great Wave off Kanagawa (crop); via jcjohnson/fast-neural-style"),
    _img("starry_night_crop", "styles", FAST_STYLE,
         "50a49fdb99cbe5e4899835b33e0b1ac75317f75ddeff7f40cbb867560272b3a2",
         "Vincent van Gogh, The Starry Night (crop); via jcjohnson/fast-neural-style"),
    _img("udnie", "styles", FAST_STYLE,
         "c3d3d4b9e325b485820d1a91df3bad591c2bab86919412e9f1b424e862cf204a",
         "Francis Picabia, Udnie (1913); via jcjohnson/fast-neural-style"),
    _img("tubingen", "content", NEURAL_STYLE,
         "e67d1869f01fd805385c681a80d9ebcf0f70ea4a5fe6127f0606bb1c7f4bf506",
         "Neckarfront, Tuebingen; via jcjohnson/neural-style"),
    _img("golden_gate", "content", NEURAL_STYLE,
         "f8476ac216e0d409af2e52bf82ad2cdc3433e23d7895e6f9b2048fc014ed57ba",
         "Golden Gate Bridge; via jcjohnson/neural-style"),
    _img("hoovertowernight", "content", NEURAL_STYLE,
         "8852910ed1594af535c3dee012b020b9ee4045798645885d20a9445d12e98093",
         "Hoover Tower at night; via jcjohnson/neural-style"),
    _img("chicago", "content", FAST_STYLE,
         "a1e8bf5a5ffec464ee1bb4c1dd6662e5b83a905a64ae10755e5801c3343cebe9",
         "Chicago skyline; via jcjohnson/fast-neural-style"),
]}

#: Imagenette (fast.ai, Apache-2.0): 10 easy ImageNet classes.
#: ``wnid -> (class name, ImageNet-1k index)``, in label order.
IMAGENETTE_CLASSES: dict[str, tuple[str, int]] = {
    "n01440764": ("tench", 0),
    "n02102040": ("English springer", 217),
    "n02979186": ("cassette player", 482),
    "n03000684": ("chain saw", 491),
    "n03028079": ("church", 497),
    "n03394916": ("French horn", 566),
    "n03417042": ("garbage truck", 569),
    "n03425413": ("gas pump", 571),
    "n03445777": ("golf ball", 574),
    "n03888257": ("parachute", 701),
}

#: The course's copy of Imagenette: every image squashed to 224x224 JPEG. In a
#: mirror it is the folder ``imagenette2-224/`` plus the manifest
#: ``imagenette2-224.sha256`` (one "sha256  ./split/wnid/file" line per image);
#: the manifest itself is pinned by this hash, so every image is pinned.
IMAGENETTE_224 = "imagenette2-224"
IMAGENETTE_224_MANIFEST_SHA256 = "2fae9bb900954e21c558f947f747fd093d4f78438905757f7ff75d9e32636db7"

#: Online, the same dataset comes from fast.ai's 160px release through torchvision
#: (which checks the archive's md5 itself).
IMAGENETTE_160_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
IMAGENETTE_160_MD5 = "e793b78cc4c9e9a4ccc0c1155377a412"

ASSET_NAMES = ("imagenette",) + tuple(IMAGES)


# --------------------------------------------------------------------------- checking & fetching

def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _verified_copy(src: Path, dest: Path, sha256: str) -> None:
    """Copy ``src`` to ``dest`` atomically, only if its sha256 matches."""
    actual = sha256_of(src)
    if actual != sha256:
        raise ChecksumError(
            f"{src} is corrupt or not the expected file: sha256 {actual}, expected {sha256}. "
            f"It was not used; replace it with a good copy.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    os.close(fd)
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the cache is readable by everyone (e.g. a grading sandbox)
    os.replace(tmp, dest)


def _download(url: str, dest: Path, sha256: str) -> None:
    """Download ``url`` to ``dest`` with a progress bar; check sha256; rename atomically."""
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while block := resp.read(1 << 16):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        if h.hexdigest() != sha256:
            raise ChecksumError(
                f"download of {url} is corrupt: sha256 {h.hexdigest()}, expected {sha256}; not used.")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _unavailable(what: str, url: str, where: Path, err: Exception) -> DataUnavailableError:
    mirror = mirror_dir()
    return DataUnavailableError(
        f"Cannot get {what}: it is not in the cache ({where}), "
        + (f"not in the mirror ({mirror}), " if mirror else "no mirror is set (COURSE_DATA_MIRROR), ")
        + f"and downloading {url} failed ({err}). Either connect to the internet, or download "
        f"that file yourself and put it at {where}, or set COURSE_DATA_MIRROR to a folder that "
        f"holds a copy of the course data.")


def image_path(name: str) -> Path:
    """Local path of a registered style/content image, fetching it if needed."""
    if name not in IMAGES:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(ASSET_NAMES)}")
    asset = IMAGES[name]
    dest = data_dir() / asset.relpath
    if dest.exists():
        if sha256_of(dest) == asset.sha256:
            return dest
        dest.unlink()  # a bad cached copy is never used: fetch it again
    mirror = mirror_dir()
    if mirror is not None and (mirror / asset.relpath).exists():
        _verified_copy(mirror / asset.relpath, dest, asset.sha256)
        return dest
    try:
        _download(asset.url, dest, asset.sha256)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise _unavailable(f"image {name!r}", asset.url, dest, err) from err
    return dest


def _read_manifest(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, rel = line.split(maxsplit=1)
            out[rel.strip().removeprefix("./")] = digest
    return out


def imagenette_root() -> Path:
    """Folder holding Imagenette's ``train/`` and ``val/`` ImageFolders, fetched if needed.

    Cache: ``data/imagenette2-224`` (complete once its ``.verified`` stamp exists).
    Mirror: ``$COURSE_DATA_MIRROR/imagenette2-224`` with its pinned manifest; every
    file is checked as it is copied. Network: fast.ai's 160px release via torchvision.
    """
    cache = data_dir() / IMAGENETTE_224
    if (cache / ".verified").exists():
        return cache
    net = data_dir() / "imagenette2-160"
    if (net / ".verified").exists():
        return net
    mirror = mirror_dir()
    if mirror is not None and (mirror / IMAGENETTE_224).is_dir():
        return _imagenette_from_mirror(mirror, cache)
    return _imagenette_from_network(net)


def _imagenette_from_mirror(mirror: Path, cache: Path) -> Path:
    from tqdm.auto import tqdm

    manifest = mirror / f"{IMAGENETTE_224}.sha256"
    if not manifest.exists():
        raise DataUnavailableError(f"the mirror {mirror} has {IMAGENETTE_224}/ but no manifest {manifest.name}")
    if sha256_of(manifest) != IMAGENETTE_224_MANIFEST_SHA256:
        raise ChecksumError(f"{manifest} is not the expected manifest (sha256 mismatch); not used.")
    files = _read_manifest(manifest)
    tmp = cache.parent / (cache.name + ".part")
    if tmp.exists():
        shutil.rmtree(tmp)
    for rel, digest in tqdm(sorted(files.items()), desc="Imagenette from mirror", unit="file"):
        src = mirror / IMAGENETTE_224 / rel
        if not src.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise DataUnavailableError(f"the mirror lacks {src} (listed in {manifest.name})")
        try:
            _verified_copy(src, tmp / rel, digest)
        except ChecksumError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    (tmp / ".verified").write_text(IMAGENETTE_224_MANIFEST_SHA256 + "\n")
    if cache.exists():
        shutil.rmtree(cache)
    os.replace(tmp, cache)
    return cache


def _imagenette_from_network(dest: Path) -> Path:
    from torchvision.datasets import Imagenette

    if dest.exists():
        # No .verified stamp: an interrupted extraction. torchvision would take any existing
        # folder as complete (and we would stamp it); re-extract from the md5-checked archive.
        shutil.rmtree(dest)
    try:
        Imagenette(str(dest.parent), split="train", size="160px", download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise _unavailable("the Imagenette dataset", IMAGENETTE_160_URL, dest, err) from err
    (dest / ".verified").write_text(IMAGENETTE_160_MD5 + "\n")
    return dest


# --------------------------------------------------------------------------- datasets and images

class ImagenetteDataset:
    """Imagenette as a map-style dataset of ``(RGB PIL image, label)`` pairs.

    ``classes[label]`` is the class name, ``wnids[label]`` the WordNet id and
    ``imagenet_indices[label]`` the class's index among the 1000 ImageNet classes.
    Greyscale files are converted to RGB. ``transform`` (if given) is applied to the image.
    """

    def __init__(self, root: Path, split: str, transform=None):
        self.root = Path(root) / split
        self.split = split
        self.transform = transform
        self.wnids = list(IMAGENETTE_CLASSES)
        self.classes = [IMAGENETTE_CLASSES[w][0] for w in self.wnids]
        self.imagenet_indices = [IMAGENETTE_CLASSES[w][1] for w in self.wnids]
        self.samples: list[tuple[Path, int]] = []
        for label, wnid in enumerate(self.wnids):
            folder = self.root / wnid
            if not folder.is_dir():
                raise DataError(f"{folder} is missing: the Imagenette copy at {root} is incomplete")
            self.samples += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpeg", ".jpg", ".png")]
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        image = _read_rgb(path, str(path))
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    def __repr__(self) -> str:
        return f"Imagenette(split={self.split!r}, {len(self)} images, root={self.root.parent})"


def imagenette(split: str = "val", transform=None) -> ImagenetteDataset:
    """The Imagenette ``"train"`` or ``"val"`` split (fetched on first use)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    return ImagenetteDataset(imagenette_root(), split, transform)


def spread_indices(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them if ``k`` is None or >= n).

    Imagenette is sorted by class, so an evenly spread subset contains every class.
    """
    if k is None or k >= n:
        return list(range(n))
    return [i * n // k for i in range(k)]


def load_image(name_or_path, size: int | None = None) -> Image.Image:
    """An RGB PIL image: a registered asset name (``"starry_night"``) or a file path.

    ``size`` (optional, an int >= 1) resizes so the *shorter* side is ``size`` pixels, keeping
    the aspect ratio. Greyscale and RGBA files are converted to RGB (alpha dropped). A file
    Pillow cannot read (not an image, truncated, corrupt) raises a ``ValueError`` naming it.
    """
    size = _check_size(size)
    if isinstance(name_or_path, str) and name_or_path in IMAGES:
        path = image_path(name_or_path)
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist and is not a course image; known images: {', '.join(IMAGES)}")
    return _shorter_side(_read_rgb(path, f"{path} ({path.stat().st_size} bytes)"), size)


def _read_rgb(source, what: str) -> Image.Image:
    """The image in ``source`` (a path or a file object) as RGB, fully decoded; a ``ValueError``
    naming ``what`` if Pillow cannot read it."""
    from PIL import UnidentifiedImageError

    try:
        with Image.open(source) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{what} is not an image file Pillow can read (truncated, corrupt or another "
                         f"format?): {err}. Replace it with a complete copy, or pick another file.") from err


def _check_size(size):
    """``size``: None, or an int >= 1 (numpy ints accepted; 0, negatives, floats and bools refused)."""
    from .inputs import check_int

    return None if size is None else check_int(size, "size", low=1)


def _shorter_side(image: Image.Image, size: int | None) -> Image.Image:
    """``image`` resized so its shorter side is ``size`` pixels (aspect kept); unchanged for ``None``."""
    if size is None:
        return image
    w, h = image.size
    s = size / min(w, h)
    return image.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)


def image_from_bytes(content: bytes, size: int | None = None) -> Image.Image:
    """An RGB PIL image from the bytes of an image file (e.g. an ``ipywidgets.FileUpload``'s
    content); ``size`` as in :func:`load_image`. A file that is not a readable image raises
    a ``ValueError``; greyscale and RGBA images are converted to RGB (alpha dropped)."""
    import io

    size = _check_size(size)
    return _shorter_side(_read_rgb(io.BytesIO(bytes(content)), f"the upload ({len(content)} bytes)"), size)


# --------------------------------------------------------------------------- training data
# For the training commands (course_lib.train, course_lib.fast_style). torch is imported inside
# the functions: fetching and checking the data runs without it.

def decode_split(split: str, cache_dir: Path):
    """All images of an Imagenette split as a uint8 tensor ``[N, 3, 224, 224]`` and their labels ``[N]``.

    Decoded once and kept in ``cache_dir`` (``imagenette_<split>_224.npz``): later calls read that
    file. Images of another size (the network copy is 160 px) are resized to 224 x 224.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    path = cache_dir / f"imagenette_{split}_224.npz"
    if path.exists():
        z = np.load(path)
        return torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
    ds = imagenette(split)
    x = np.empty((len(ds), 3, 224, 224), dtype=np.uint8)
    for i in tqdm(range(len(ds)), desc=f"decode {split}", unit="img"):
        img, _ = ds[i]
        if img.size != (224, 224):
            img = img.resize((224, 224), Image.BILINEAR)
        x[i] = np.asarray(img).transpose(2, 0, 1)
    y = np.asarray(ds.targets, dtype=np.int64)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, x=x, y=y)
    tmp.replace(path)
    return torch.from_numpy(x), torch.from_numpy(y)


#: The range of the crop's area (a share of the image) drawn by :func:`random_resized_crop`: the
#: main training schedule's, and the gentler one of the FixRes stage and of fast style transfer.
CROP_SCALE, FIXRES_CROP_SCALE = (0.25, 1.0), (0.64, 1.0)


def random_resized_crop(x, size: int, gen, scale=CROP_SCALE, ratio=(3 / 4, 4 / 3)):
    """A random crop of each image, resized to ``size x size`` and flipped left-right with probability 1/2.

    For float images ``x`` ``[N, 3, H, W]``, each crop is drawn from the generator ``gen``:

        area a ~ U(scale),  aspect ratio r = exp(u), u ~ U(log ratio)
        width = sqrt(a r),  height = sqrt(a / r)      (shares of the image's sides, at most 1)
        centre: uniform over the positions that keep the crop inside the image

    The batch is first resized (antialiased) to ``1.25 size``, so the crop never aliases much, then
    every crop is sampled (bilinear) through one affine grid. Returns ``[N, 3, size, size]``;
    ``x`` is not modified.
    """
    import math

    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    src = round(size * 1.25)
    x = F.interpolate(x, size=(src, src), mode="bilinear", antialias=True, align_corners=False)
    area = torch.empty(n).uniform_(*scale, generator=gen)
    logr = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(logr)
    sw = torch.sqrt(area * r).clamp(max=1.0)  # crop width / image width
    sh = torch.sqrt(area / r).clamp(max=1.0)
    tx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sw)
    ty = (torch.rand(n, generator=gen) * 2 - 1) * (1 - sh)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = sw * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta.to(x.device), [n, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def fetch(names=None) -> None:
    """Fetch (and check) the named assets, or all of them, into the cache."""
    for name in names or ASSET_NAMES:
        if name == "imagenette":
            root = imagenette_root()
            print(f"imagenette: {root}")
        else:
            print(f"{name}: {image_path(name)}")


def _main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m course_lib.data", description="Fetch the course data.")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fetch assets into the cache (default: all)")
    f.add_argument("names", nargs="*", help=f"asset names ({', '.join(ASSET_NAMES)})")
    sub.add_parser("list", help="list every asset with its source")
    args = p.parse_args(argv)
    if args.cmd == "fetch":
        try:
            fetch(args.names)
        except (DataError, KeyError) as err:
            raise SystemExit(f"error: {err}")
    else:
        print(f"imagenette  {IMAGENETTE_160_URL} (md5 {IMAGENETTE_160_MD5}); mirror: {IMAGENETTE_224}/")
        for a in IMAGES.values():
            print(f"{a.name:24s}{a.url} sha256 {a.sha256}")


if __name__ == "__main__":
    _main()
