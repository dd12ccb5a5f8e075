"""tools/book.py's parts that need no notebook run: the pinned JavaScript it vendors into the site
(checked by sha256, with a CDN fallback) and the index page made from the README. The site built
from really executed notebooks is checked at the end of tests/test_browser.py."""
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import book  # noqa: E402

sys.path.pop(0)


@pytest.fixture
def tarball(tmp_path, monkeypatch):
    """A stand-in npm tarball served from a file: URL, and a cache folder of its own."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [("package/dist/embed-amd.js", b"// manager"), ("package/dist/a.woff2", b"font"),
                           ("package/dist/embed.js.map", b"map"), ("package/src/x.ts", b"source")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    f = tmp_path / "html-manager-9.9.9.tgz"
    f.write_bytes(buf.getvalue())
    return f, hashlib.sha256(buf.getvalue()).hexdigest()


def test_vendor_takes_only_the_wanted_files_of_a_checked_tarball(tarball, tmp_path, monkeypatch):
    f, sha = tarball
    monkeypatch.setattr(book, "VENDOR", {"html-manager": (f.as_uri(), sha, r"package/dist/[^/]+\.(js|woff2)$")})
    urls = book.vendor(tmp_path / "static", offline=False)
    got = sorted(p.relative_to(tmp_path / "static").as_posix() for p in (tmp_path / "static").rglob("*") if p.is_file())
    assert got == ["vendor/html-manager/dist/a.woff2", "vendor/html-manager/dist/embed-amd.js"]
    assert urls["embed"] == "vendor/html-manager/dist/embed-amd.js"
    assert (tmp_path / "data" / "cache" / "vendor" / f.name).exists()   # fetched once


def test_vendor_refuses_a_tarball_with_another_checksum_and_links_the_cdn(tarball, tmp_path, monkeypatch, capsys):
    f, sha = tarball
    monkeypatch.setattr(book, "VENDOR", {"html-manager": (f.as_uri(), "0" * 64, r"package/dist/.*")})
    assert book.vendor(tmp_path / "static", offline=False) == book.CDN
    assert "sha256 mismatch" in capsys.readouterr().out
    assert not (tmp_path / "static").exists() and not (tmp_path / "data" / "cache" / "vendor" / f.name).exists()


def test_offline_site_links_the_cdn_and_fetches_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(book.urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    assert book.vendor(tmp_path / "static", offline=True) == book.CDN


def test_index_page_links_every_notebook_by_its_title_and_reports_the_run(tmp_path):
    for nb in sorted((REPO / "notebooks").glob("0*.ipynb")):
        (tmp_path / nb.name).write_bytes(nb.read_bytes())
    (tmp_path / "timings.json").write_text(json.dumps(
        {nb.name: {"seconds": 12.3, "mode": "fast", "cache": False} for nb in tmp_path.glob("*.ipynb")}))
    page = book.index_page(sorted(tmp_path.glob("*.ipynb")))
    for nb in sorted(tmp_path.glob("*.ipynb")):
        assert f"]({'notebooks/' + nb.stem}.ipynb)" in page
        assert f"[{book.first_heading(nb)}]" in page
        assert f"| {nb.stem} | 12 | fast | off |" in page
    assert "in fast mode" in page and "## Set-up" in page and "make lab" in page
