"""Tests of course_lib.data: cache -> mirror -> network, checksums, Imagenette, images, CLI.

Nothing here touches the network: ``urllib.request.urlopen`` is replaced by a function
that raises ``URLError("offline")`` (and records the URL), every test gets its own
empty cache (``COURSE_DATA_DIR``) and, where it needs one, a small fake mirror
(``COURSE_DATA_MIRROR``) built from images generated with PIL. The real cache in
``data/`` is never read or written. Only the tests marked ``real_mirror`` look at the
real local mirror (read-only, hashing files in place), and only when
``COURSE_DATA_MIRROR`` names an existing folder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import course_lib.data as data
from course_lib.data import ChecksumError, DataError, DataUnavailableError

REPO = Path(__file__).resolve().parent.parent
#: The real mirror, read before any test's monkeypatching of the environment.
REAL_MIRROR = os.environ.get("COURSE_DATA_MIRROR")
real_mirror = pytest.mark.skipif(
    not (REAL_MIRROR and Path(REAL_MIRROR).is_dir()),
    reason="COURSE_DATA_MIRROR does not name an existing folder (no real local mirror)")

#: Written out independently of data.py (the table in the mirror's README).
EXPECTED_CLASSES = [
    ("n01440764", "tench", 0),
    ("n02102040", "English springer", 217),
    ("n02979186", "cassette player", 482),
    ("n03000684", "chain saw", 491),
    ("n03028079", "church", 497),
    ("n03394916", "French horn", 566),
    ("n03417042", "garbage truck", 569),
    ("n03425413", "gas pump", 571),
    ("n03445777", "golf ball", 574),
    ("n03888257", "parachute", 701),
]


# --------------------------------------------------------------------------- helpers

def _image_bytes(mode="RGB", size=(40, 30), color=(200, 30, 60), fmt="JPEG") -> bytes:
    if mode == "L":
        color = color[0]
    elif mode == "RGBA":
        color = (*color[:3], 128)
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, fmt)
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _files(folder: Path) -> list[Path]:
    """Every non-directory under ``folder`` (empty if it does not exist)."""
    return sorted(p for p in folder.rglob("*") if not p.is_dir()) if folder.exists() else []


def _partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if "part" in p.name) if folder.exists() else []


def _flip_byte(path: Path, at: int | None = None) -> None:
    b = bytearray(path.read_bytes())
    i = len(b) // 2 if at is None else at
    b[i] ^= 0xFF
    path.write_bytes(bytes(b))


def _truncate(path: Path) -> None:
    b = path.read_bytes()
    path.write_bytes(b[: len(b) // 2])


def _pin_image(monkeypatch, name: str, sha256: str) -> data.ImageAsset:
    """Make the registry pin ``sha256`` for ``name`` (everything else unchanged)."""
    asset = dataclasses.replace(data.IMAGES[name], sha256=sha256)
    monkeypatch.setitem(data.IMAGES, name, asset)
    return asset


def _build_imagenette_mirror(mirror: Path) -> tuple[Path, list[str]]:
    """A tiny imagenette2-224 (one JPEG per split and class, plus a greyscale JPEG and an
    RGBA PNG in train/tench) and its manifest. Returns (manifest, relative paths)."""
    root = mirror / data.IMAGENETTE_224
    rels = []
    for split in ("train", "val"):
        for i, (wnid, _, _) in enumerate(EXPECTED_CLASSES):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            (folder / "x.JPEG").write_bytes(_image_bytes(color=(20 * i, 100, 250 - 20 * i)))
            rels.append(f"{split}/{wnid}/x.JPEG")
    tench = root / "train" / EXPECTED_CLASSES[0][0]
    (tench / "grey.JPEG").write_bytes(_image_bytes("L", color=(90, 0, 0)))
    (tench / "alpha.png").write_bytes(_image_bytes("RGBA", fmt="PNG"))
    rels += [f"train/{EXPECTED_CLASSES[0][0]}/grey.JPEG", f"train/{EXPECTED_CLASSES[0][0]}/alpha.png"]
    manifest = mirror / f"{data.IMAGENETTE_224}.sha256"
    manifest.write_text("".join(f"{data.sha256_of(root / r)}  ./{r}\n" for r in sorted(rels)))
    return manifest, sorted(rels)


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, an empty private cache, no mirror. Returns the list of URLs tried."""
    tried = []

    def no_network(url, *args, **kwargs):
        tried.append(getattr(url, "full_url", url))
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COURSE_DATA_MIRROR", raising=False)
    return tried


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    m = tmp_path / "mirror"
    m.mkdir()
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(m))
    return m


@pytest.fixture
def style_in_mirror(mirror, monkeypatch):
    """starry_night as a generated image in the fake mirror, pinned by the registry."""
    content = _image_bytes(size=(64, 40))
    asset = _pin_image(monkeypatch, "starry_night", _sha(content))
    src = mirror / asset.relpath
    src.parent.mkdir(parents=True)
    src.write_bytes(content)
    return asset, src, content


@pytest.fixture
def imagenette_mirror(mirror, monkeypatch):
    manifest, rels = _build_imagenette_mirror(mirror)
    monkeypatch.setattr(data, "IMAGENETTE_224_MANIFEST_SHA256", data.sha256_of(manifest))
    return mirror, manifest, rels


# --------------------------------------------------------------------------- registered images

def test_image_mirror_hit_copies_into_cache_then_cache_is_used(style_in_mirror, cache, mirror, offline):
    asset, src, content = style_in_mirror
    path = data.image_path("starry_night")
    assert path == cache / "styles" / "starry_night.jpg"
    assert path.read_bytes() == content
    assert _files(cache) == [path]  # no temporary files left behind
    shutil.rmtree(mirror)
    assert data.image_path("starry_night") == path
    assert path.read_bytes() == content
    assert offline == []


def test_content_image_goes_to_content_folder(mirror, cache, monkeypatch):
    content = _image_bytes(size=(50, 50), color=(1, 2, 3))
    asset = _pin_image(monkeypatch, "tubingen", _sha(content))
    (mirror / "content").mkdir()
    (mirror / "content" / "tubingen.jpg").write_bytes(content)
    assert data.image_path("tubingen") == cache / "content" / "tubingen.jpg" == cache / asset.relpath


@pytest.mark.parametrize("damage", [_flip_byte, _truncate], ids=["modified-byte", "truncated"])
def test_image_checksum_mismatch_in_mirror(style_in_mirror, cache, damage, offline):
    asset, src, _ = style_in_mirror
    damage(src)
    with pytest.raises(ChecksumError) as info:
        data.image_path("starry_night")
    assert str(src) in str(info.value)
    assert asset.sha256 in str(info.value)
    assert _files(cache) == []
    assert offline == []  # a bad mirror file is an error, not a reason to go online


def test_corrupted_cached_image_is_refetched_from_mirror(style_in_mirror, cache):
    asset, src, content = style_in_mirror
    path = data.image_path("starry_night")
    _flip_byte(path)
    assert data.image_path("starry_night") == path
    assert path.read_bytes() == content
    path.write_bytes(content[:10])  # truncated
    assert data.load_image("starry_night").size == (64, 40)
    assert path.read_bytes() == content


def test_corrupted_cached_image_is_never_used(style_in_mirror, cache, mirror, offline):
    asset, src, content = style_in_mirror
    path = data.image_path("starry_night")
    _flip_byte(path)
    shutil.rmtree(mirror)
    with pytest.raises(DataUnavailableError):
        data.image_path("starry_night")
    assert offline == [asset.url]
    assert not path.exists()


def test_image_offline_without_mirror(cache, offline):
    asset = data.IMAGES["the_scream"]
    with pytest.raises(DataUnavailableError) as info:
        data.image_path("the_scream")
    msg = str(info.value)
    assert asset.url in msg
    assert str(cache / "styles") in msg
    assert "COURSE_DATA_MIRROR" in msg
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert offline == [asset.url]
    assert _files(cache) == []  # no .part file left


def test_image_offline_and_not_in_mirror(mirror, cache, offline):
    with pytest.raises(DataUnavailableError) as info:
        data.image_path("udnie")
    assert str(mirror) in str(info.value)
    assert data.IMAGES["udnie"].url in str(info.value)
    assert "COURSE_DATA_MIRROR" in str(info.value)
    assert offline == [data.IMAGES["udnie"].url]


def test_image_offline_when_download_helper_fails(monkeypatch, cache):
    def fail(url, dest, sha256):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(data, "_download", fail)
    with pytest.raises(DataUnavailableError, match="offline"):
        data.image_path("wave")


class _FakeResponse(io.BytesIO):
    def __init__(self, content: bytes):
        super().__init__(content)
        self.headers = {"Content-Length": str(len(content))}


def test_download_path_checks_checksum(monkeypatch, cache):
    """The network path, with a fake urlopen: good bytes are cached, bad bytes never are."""
    good = _image_bytes(size=(33, 22))
    asset = _pin_image(monkeypatch, "wave", _sha(good))
    served = []

    def fake_urlopen(url, *args, **kwargs):
        served.append(url)
        return _FakeResponse(served_bytes)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    served_bytes = good[:-5]
    with pytest.raises(ChecksumError, match="wave"):
        data.image_path("wave")
    assert _files(cache) == []
    served_bytes = good
    assert data.image_path("wave").read_bytes() == good
    assert served == [asset.url, asset.url]
    assert _files(cache) == [cache / asset.relpath]


def test_unknown_asset_name():
    with pytest.raises(KeyError) as info:
        data.image_path("mona_lisa")
    msg = str(info.value)
    assert "mona_lisa" in msg
    for name in ("imagenette", "starry_night", "chicago", "udnie"):
        assert name in msg
    with pytest.raises(KeyError, match="starry_night"):
        data.fetch(["mona_lisa"])
    with pytest.raises(FileNotFoundError, match="starry_night"):
        data.load_image("mona_lisa")


# --------------------------------------------------------------------------- load_image

@pytest.mark.parametrize("mode,fmt", [("L", "PNG"), ("L", "JPEG"), ("RGBA", "PNG"), ("P", "PNG")])
def test_load_image_is_rgb(tmp_path, mode, fmt):
    path = tmp_path / f"img.{fmt.lower()}"
    img = Image.new("RGB", (20, 10), (10, 200, 30))
    (img.convert(mode) if mode != "RGBA" else Image.new("RGBA", (20, 10), (10, 200, 30, 0))).save(path, fmt)
    with Image.open(path) as raw:
        assert raw.mode == mode
    out = data.load_image(path)
    assert out.mode == "RGB" and out.size == (20, 10)
    assert data.load_image(str(path)).mode == "RGB"


def test_load_image_registered_name(style_in_mirror):
    img = data.load_image("starry_night")
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (64, 40)


@pytest.mark.parametrize("wh,size,expected", [
    ((300, 200), 100, (150, 100)),
    ((200, 300), 100, (100, 150)),
    ((333, 217), 224, (344, 224)),
    ((50, 50), 128, (128, 128)),
    ((640, 20), 10, (320, 10)),
])
def test_load_image_size_is_shorter_side(tmp_path, wh, size, expected):
    path = tmp_path / "x.png"
    Image.new("RGB", wh, (1, 2, 3)).save(path)
    out = data.load_image(path, size=size)
    assert min(out.size) == size
    assert out.size == expected


def test_load_image_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        data.load_image(tmp_path / "nope.jpg")


@pytest.mark.parametrize("size,err,match", [(0, ValueError, "size must be an int >= 1, got 0"),
                                            (-3, ValueError, ">= 1"), (2.5, TypeError, "size must be an int"),
                                            (True, TypeError, "not a bool")])
def test_load_image_refuses_sizes_that_are_not_sizes(tmp_path, size, err, match):
    """size=0 used to give a 1x1 image."""
    path = tmp_path / "x.png"
    Image.new("RGB", (30, 20)).save(path)
    with pytest.raises(err, match=match):
        data.load_image(path, size=size)
    with pytest.raises(err, match=match):
        data.image_from_bytes(path.read_bytes(), size=size)
    assert data.load_image(path, size=np.int64(10)).size == (15, 10)  # numpy ints are ints


def test_a_truncated_jpeg_names_the_file(tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "cut.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good, "JPEG")
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"cut\.jpg \(300 bytes\) is not an image file Pillow can read "
                                         r"\(truncated.*Replace it with a complete copy"):
        data.load_image(bad)
    with pytest.raises(ValueError, match="not an image file"):
        data.image_from_bytes(bad.read_bytes())


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_course_data_dir_means_the_default_not_the_current_folder(monkeypatch, value):
    monkeypatch.setenv("COURSE_DATA_DIR", value)
    assert data.data_dir() == data.REPO_ROOT / "data"
    monkeypatch.setenv("COURSE_DATA_MIRROR", value)
    assert data.mirror_dir() is None


# --------------------------------------------------------------------------- Imagenette

def test_imagenette_mirror_hit_copies_into_cache_then_cache_is_used(imagenette_mirror, cache, offline):
    mirror, manifest, rels = imagenette_mirror
    root = data.imagenette_root()
    assert root == cache / data.IMAGENETTE_224
    assert (root / ".verified").exists()
    for rel in rels:
        assert (root / rel).read_bytes() == (mirror / data.IMAGENETTE_224 / rel).read_bytes()
    assert sorted(str(p.relative_to(root)) for p in _files(root)) == sorted(rels + [".verified"])
    assert _partials(cache) == []
    shutil.rmtree(mirror)
    assert data.imagenette_root() == root
    assert len(data.imagenette("val")) == 10
    assert offline == []


def test_imagenette_dataset(imagenette_mirror):
    train = data.imagenette("train")
    assert train.wnids == [w for w, _, _ in EXPECTED_CLASSES]
    assert train.classes == [c for _, c, _ in EXPECTED_CLASSES]
    assert train.imagenet_indices == [i for _, _, i in EXPECTED_CLASSES]
    assert len(train.classes) == 10
    assert train.classes[0] == "tench" and train.imagenet_indices[0] == 0
    assert train.classes[9] == "parachute" and train.imagenet_indices[9] == 701
    assert len(train) == 12
    assert train.targets == [label for _, label in train.samples]
    assert sorted(set(train.targets)) == list(range(10))
    seen = {}
    for i in range(len(train)):
        image, label = train[i]
        path = train.samples[i][0]
        assert isinstance(image, Image.Image) and image.mode == "RGB", path
        assert path.parent.name == EXPECTED_CLASSES[label][0]
        seen[path.name] = label
    assert seen["grey.JPEG"] == 0 and seen["alpha.png"] == 0  # greyscale and RGBA come out RGB
    val = data.imagenette("val", transform=lambda im: im.size)
    assert len(val) == 10
    assert [val[i] for i in range(10)] == [((40, 30), label) for label in range(10)]
    assert "val" in repr(val)


def test_imagenette_bad_split_fails_before_fetching(cache, offline):
    with pytest.raises(ValueError, match="test"):
        data.imagenette("test")
    assert offline == []
    assert _files(cache) == []


@pytest.mark.parametrize("damage", [_flip_byte, _truncate], ids=["modified-byte", "truncated"])
def test_imagenette_checksum_mismatch_in_mirror(imagenette_mirror, cache, damage, offline):
    mirror, manifest, rels = imagenette_mirror
    bad = mirror / data.IMAGENETTE_224 / rels[-1]  # the last one copied: the others are already in the cache
    damage(bad)
    with pytest.raises(ChecksumError) as info:
        data.imagenette_root()
    assert str(bad) in str(info.value)
    assert _files(cache) == []
    assert _partials(cache) == []
    assert not (cache / data.IMAGENETTE_224).exists()
    assert offline == []


def test_imagenette_manifest_with_wrong_hash(imagenette_mirror, cache, offline):
    mirror, manifest, rels = imagenette_mirror
    with open(manifest, "a") as f:
        f.write(f"{'0' * 64}  ./train/n01440764/extra.JPEG\n")
    with pytest.raises(ChecksumError, match=manifest.name):
        data.imagenette_root()
    assert _files(cache) == []
    assert offline == []


def test_imagenette_pinned_hash_differs_from_manifest(imagenette_mirror, monkeypatch, cache):
    monkeypatch.setattr(data, "IMAGENETTE_224_MANIFEST_SHA256", "0" * 64)
    with pytest.raises(ChecksumError):
        data.imagenette_root()
    assert _files(cache) == []


def test_imagenette_file_missing_from_mirror(imagenette_mirror, cache, offline):
    mirror, manifest, rels = imagenette_mirror
    gone = mirror / data.IMAGENETTE_224 / rels[-1]
    gone.unlink()
    with pytest.raises(DataUnavailableError) as info:
        data.imagenette_root()
    assert str(gone) in str(info.value)
    assert _files(cache) == []
    assert _partials(cache) == []
    assert offline == []


def test_imagenette_mirror_without_manifest(imagenette_mirror, cache):
    mirror, manifest, rels = imagenette_mirror
    manifest.unlink()
    with pytest.raises(DataUnavailableError, match="manifest"):
        data.imagenette_root()
    assert _files(cache) == []


def test_imagenette_stale_partial_copy_is_replaced(imagenette_mirror, cache):
    """Leftovers of an interrupted copy (``.part`` folder, unstamped cache) are not used."""
    mirror, manifest, rels = imagenette_mirror
    (cache / (data.IMAGENETTE_224 + ".part") / "junk").mkdir(parents=True)
    (cache / data.IMAGENETTE_224 / "train").mkdir(parents=True)
    (cache / data.IMAGENETTE_224 / "train" / "stale.txt").write_text("old")
    root = data.imagenette_root()
    assert sorted(str(p.relative_to(root)) for p in _files(root)) == sorted(rels + [".verified"])
    assert _partials(cache) == []


def test_imagenette_offline_without_mirror(cache, offline):
    with pytest.raises(DataUnavailableError) as info:
        data.imagenette_root()
    msg = str(info.value)
    assert data.IMAGENETTE_160_URL in msg
    assert str(cache / "imagenette2-160") in msg
    assert "COURSE_DATA_MIRROR" in msg
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert offline and all("imagenette2-160" in u for u in offline)
    assert _files(cache) == []
    with pytest.raises(DataUnavailableError):
        data.imagenette("val")


def test_imagenette_unstamped_network_copy_is_not_trusted(cache, offline):
    """A half-extracted ``imagenette2-160/`` (no ``.verified`` stamp) must not be stamped
    and used as is: the archive has to be fetched (and its md5 checked) again."""
    for wnid, _, _ in EXPECTED_CLASSES:
        folder = cache / "imagenette2-160" / "train" / wnid
        folder.mkdir(parents=True)
        (folder / "a.JPEG").write_bytes(_image_bytes())
    with pytest.raises(DataUnavailableError):
        data.imagenette_root()
    assert offline, "the archive was not fetched again"
    assert not (cache / "imagenette2-160" / ".verified").exists()


def test_imagenette_stamped_network_copy_is_used(cache, offline):
    net = cache / "imagenette2-160"
    for split in ("train", "val"):
        for wnid, _, _ in EXPECTED_CLASSES:
            (net / split / wnid).mkdir(parents=True)
            (net / split / wnid / "a.JPEG").write_bytes(_image_bytes("L"))
    (net / ".verified").write_text(data.IMAGENETTE_160_MD5 + "\n")
    ds = data.imagenette("val")
    assert ds.root == net / "val" and len(ds) == 10 and ds[3][0].mode == "RGB"
    assert offline == []


def test_imagenette_incomplete_copy_is_reported(cache):
    root = cache / data.IMAGENETTE_224
    (root / "val" / EXPECTED_CLASSES[0][0]).mkdir(parents=True)
    with pytest.raises(DataError, match=EXPECTED_CLASSES[1][0]):
        data.ImagenetteDataset(root, "val")


# --------------------------------------------------------------------------- command line

def _run(args, env_update, tmp_path, *, offline_site=True):
    """Run ``python <args>`` in the repository with a private environment; with
    ``offline_site`` a sitecustomize makes every urlopen fail (no network)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COURSE_DATA_MIRROR", "COURSE_DATA_DIR")}
    env.update(env_update)
    paths = [str(REPO)]
    if offline_site:
        site = tmp_path / "offline_site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(
            "import urllib.error, urllib.request\n"
            "def _blocked(*a, **k):\n"
            "    raise urllib.error.URLError('offline (blocked by test)')\n"
            "urllib.request.urlopen = _blocked\n")
        paths.insert(0, str(site))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_fetch_with_fake_mirror(tmp_path, cache):
    """``_main(["fetch", ...])`` in a fresh process, with the registry pinned to the fake files."""
    mirror = tmp_path / "mirror"
    manifest, rels = _build_imagenette_mirror(mirror)
    content = _image_bytes(size=(30, 30))
    (mirror / "styles").mkdir()
    (mirror / "styles" / "udnie.jpg").write_bytes(content)
    script = tmp_path / "cli.py"
    script.write_text(
        "import dataclasses, sys\n"
        "import course_lib.data as d\n"
        "d.IMAGES['udnie'] = dataclasses.replace(d.IMAGES['udnie'], sha256=sys.argv[1])\n"
        "d.IMAGENETTE_224_MANIFEST_SHA256 = sys.argv[2]\n"
        "d._main(sys.argv[3:])\n")
    env = {"COURSE_DATA_DIR": str(cache), "COURSE_DATA_MIRROR": str(mirror)}
    r = _run([str(script), _sha(content), data.sha256_of(manifest), "fetch", "udnie", "imagenette"],
             env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(cache / "styles" / "udnie.jpg") in r.stdout
    assert str(cache / data.IMAGENETTE_224) in r.stdout
    assert (cache / "styles" / "udnie.jpg").read_bytes() == content
    assert (cache / data.IMAGENETTE_224 / ".verified").exists()


def test_cli_module_fetch_bad_name(tmp_path, cache):
    r = _run(["-m", "course_lib.data", "fetch", "mona_lisa"], {"COURSE_DATA_DIR": str(cache)}, tmp_path)
    assert r.returncode != 0
    assert "mona_lisa" in r.stderr and "starry_night" in r.stderr
    assert "Traceback" not in r.stderr
    assert _files(cache) == []


def test_cli_module_fetch_bad_mirror_file(tmp_path, cache):
    mirror = tmp_path / "mirror"
    (mirror / "styles").mkdir(parents=True)
    bad = mirror / "styles" / "udnie.jpg"
    bad.write_bytes(_image_bytes())  # not the pinned bytes
    r = _run(["-m", "course_lib.data", "fetch", "udnie"],
             {"COURSE_DATA_DIR": str(cache), "COURSE_DATA_MIRROR": str(mirror)}, tmp_path)
    assert r.returncode != 0
    assert "error:" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr
    assert _files(cache) == []


def test_cli_module_fetch_offline_without_mirror(tmp_path, cache):
    r = _run(["-m", "course_lib.data", "fetch", "tubingen"], {"COURSE_DATA_DIR": str(cache)}, tmp_path)
    assert r.returncode != 0
    assert "blocked by test" in r.stderr  # the network really was blocked
    assert "COURSE_DATA_MIRROR" in r.stderr and data.IMAGES["tubingen"].url in r.stderr
    assert "Traceback" not in r.stderr
    assert _files(cache) == []


def test_cli_module_list(tmp_path, cache):
    r = _run(["-m", "course_lib.data", "list"], {"COURSE_DATA_DIR": str(cache)}, tmp_path)
    assert r.returncode == 0, r.stderr
    for name in data.ASSET_NAMES:
        assert name in r.stdout
    assert data.IMAGENETTE_160_URL in r.stdout
    assert _files(cache) == []


# --------------------------------------------------------------------------- the real local mirror

@real_mirror
def test_real_mirror_images_match_pins():
    mirror = Path(REAL_MIRROR)
    missing = [a.relpath for a in data.IMAGES.values() if not (mirror / a.relpath).is_file()]
    assert missing == []
    wrong = [a.relpath for a in data.IMAGES.values() if data.sha256_of(mirror / a.relpath) != a.sha256]
    assert wrong == []


@real_mirror
def test_real_mirror_imagenette_manifest_matches_pin():
    mirror = Path(REAL_MIRROR)
    manifest = mirror / f"{data.IMAGENETTE_224}.sha256"
    assert data.sha256_of(manifest) == data.IMAGENETTE_224_MANIFEST_SHA256
    files = data._read_manifest(manifest)
    for split, count in (("train", 9469), ("val", 3925)):
        in_split = [r for r in files if r.startswith(split + "/")]
        assert len(in_split) == count
        assert {r.split("/")[1] for r in in_split} == {w for w, _, _ in EXPECTED_CLASSES}
    first = sorted(files)[0]  # one spot check of the manifest against the files themselves
    assert data.sha256_of(mirror / data.IMAGENETTE_224 / first) == files[first]


@real_mirror
def test_real_mirror_cli_fetch_image(tmp_path, cache):
    r = _run(["-m", "course_lib.data", "fetch", "wave_crop"],
             {"COURSE_DATA_DIR": str(cache), "COURSE_DATA_MIRROR": REAL_MIRROR}, tmp_path)
    assert r.returncode == 0, r.stderr
    path = cache / data.IMAGES["wave_crop"].relpath
    assert str(path) in r.stdout
    assert data.sha256_of(path) == data.IMAGES["wave_crop"].sha256


def test_image_from_bytes_reads_uploads_and_rejects_other_files():
    import io

    from PIL import Image

    from course_lib.data import image_from_bytes

    buf = io.BytesIO()
    Image.new("RGBA", (30, 20), (10, 20, 30, 0)).save(buf, "PNG")
    im = image_from_bytes(buf.getvalue(), size=10)
    assert im.mode == "RGB" and im.size == (15, 10) and im.getpixel((0, 0)) == (10, 20, 30)
    with pytest.raises(ValueError, match="not an image file"):
        image_from_bytes(b"GIF89a but not really")


# --------------------------------------------------------------------------- training data

def test_decode_split_gives_uint8_224_images_and_keeps_them(imagenette_mirror, cache, monkeypatch):
    import torch

    x, y = data.decode_split("val", cache / "decoded")
    assert x.dtype == torch.uint8 and tuple(x.shape) == (10, 3, 224, 224) and y.tolist() == list(range(10))
    assert (cache / "decoded" / "imagenette_val_224.npz").exists()
    monkeypatch.setattr(data, "imagenette", lambda split: pytest.fail("decoded again instead of read"))
    x2, y2 = data.decode_split("val", cache / "decoded")
    assert torch.equal(x2, x) and torch.equal(y2, y)


def test_random_resized_crop_shapes_and_range():
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 224, 224)
    before = x.clone()
    out = data.random_resized_crop(x, 96, g)
    assert out.shape == (5, 3, 96, 96)
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6
    assert torch.equal(x, before)
    # a constant image stays constant whatever the crop
    assert torch.allclose(data.random_resized_crop(torch.full((2, 3, 50, 50), 0.3), 32, g), torch.tensor(0.3))
