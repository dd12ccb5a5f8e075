"""The course as a website (``make book``): run the notebooks, then build a Jupyter Book from them.

    python tools/book.py build notebooks/*.ipynb          # run with the real settings, then the site
    python tools/book.py run --out DIR notebooks/X.ipynb  # only run notebooks (executed copies + HTML)
    python tools/book.py site --executed DIR              # only build the site from executed notebooks

``run`` executes each notebook with nbclient, keeping the widgets' state, and writes the executed
copy to ``<out>/executed/`` and a standalone HTML page to ``<out>/html/``; ``--jobs N`` runs N
notebooks side by side (``make book``: 2), longest first, and the seconds each took are kept in
``executed/timings.json`` and shown on the site's first page. The long optimisations of notebooks
05-07 are cached (:mod:`course_lib.cache`), so a second run reads them instead of computing them. ``site`` assembles a
Jupyter Book (``book/_config.yml``, the table of contents, an index page made from the README)
around the executed notebooks and builds it with the ``jupyter-book`` of the book venv
(``.venv-book``, from ``requirements-book.txt``) into ``<out>/site/``: open ``site/index.html``.
Widgets are shown in their last state by ipywidgets' HTML manager, and formulas by MathJax; both
JavaScript packages are fetched once from the npm registry (URL + sha256, like the course data)
into ``data/cache/vendor/`` so that the site works offline. Without a network they are linked
from a CDN instead (``--no-vendor`` forces that; the tests use it, as they never use the network).

Why Jupyter Book 1.x: it builds offline (Sphinx + MyST-NB, no service), gives a course the
navigation it needs out of the box (a book-style sidebar, previous/next links, a table of contents
per page, search), renders executed notebooks without re-running them, and embeds ipywidgets
from the saved widget state with a configurable (here: local) HTML manager.

Running uses nbclient, as ``jupyter nbconvert --execute`` does, with the course's kernel manager
(:mod:`course_lib.headless`: without it a widget cell can lose its execute reply, jupyter/nbclient#312).
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"

# The JavaScript the site loads, pinned like the course data: (tarball URL, sha256, files wanted).
VENDOR = {
    "html-manager": ("https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-1.0.15.tgz",
                     "2b9d65cb7913e1c7d671757a10008b32c9c2448d4429513371e55c07d6107638",
                     r"package/dist/[^/]+\.(js|woff2?|ttf|eot|svg|txt)$"),
    "requirejs": ("https://registry.npmjs.org/requirejs/-/requirejs-2.3.8.tgz",
                  "777158e89275e16bd51aec3ef714fbcb5dc45789e7078659933bc814916d7dec",
                  r"package/(require\.js|LICENSE)$"),
    "mathjax": ("https://registry.npmjs.org/mathjax/-/mathjax-3.2.2.tgz",
                "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09",
                r"package/(LICENSE|es5/(tex-chtml\.js|output/chtml/fonts/woff-v2/.*|input/tex/extensions/.*"
                r"|a11y/.*|ui/.*|sre/.*))$"),
}
CDN = {  # what the site links to when the files above cannot be fetched
    "require": "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js",
    "embed": "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.15/dist/embed-amd.js",
    "mathjax": "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js",
}


# ------------------------------------------------------------------------------ running notebooks

def run_one(path: Path, out_dir: Path, cell_timeout: int, threads: int | None = None) -> float:
    """Execute one notebook; write ``executed/<name>.ipynb`` and ``html/<name>.html``; its seconds."""
    import nbformat
    from nbconvert import HTMLExporter

    os.environ.pop("MPLBACKEND", None)   # the kernel draws inline, as in JupyterLab (the Makefile sets Agg)
    if threads:   # the kernel's torch/OpenMP threads, when notebooks run side by side
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    t = time.time()
    nb = nbformat.read(path, as_version=4)
    from nbclient import NotebookClient

    from course_lib.headless import KernelManager   # no lost execute replies (jupyter/nbclient#312)

    NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", store_widget_state=True,
                   kernel_manager_class=KernelManager, resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, out_dir / "executed" / path.name)
    page, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / "html" / path.with_suffix(".html").name).write_text(page, encoding="utf-8")
    return time.time() - t


def run(paths, out_dir: Path, cell_timeout: int, jobs: int = 1) -> dict:
    """Execute the notebooks, ``jobs`` at a time (the longest first, by the last run's timings);
    the seconds each took, also kept in ``executed/timings.json`` for the site's index page."""
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from course_lib.cache import enabled as cache_enabled

    paths = [Path(p) for p in paths]
    (out_dir / "executed").mkdir(parents=True, exist_ok=True)
    (out_dir / "html").mkdir(parents=True, exist_ok=True)
    record = out_dir / "executed" / "timings.json"
    seen = json.loads(record.read_text()) if record.exists() else {}
    # the longest first, so that no long notebook runs alone at the end: by the last run's times,
    # and, never run yet, the optimisation notebooks (05-08) before the rest
    paths.sort(key=lambda p: (-seen.get(p.name, {}).get("seconds", 0), p.name[:2] < "05", p.name))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    times = {}
    with ProcessPoolExecutor(max(1, jobs), mp_context=get_context("spawn")) as pool:
        running = {pool.submit(run_one, p, out_dir, cell_timeout, threads): p for p in paths}
        for done in as_completed(running):
            name = running[done].name
            times[name] = done.result()   # a failed notebook raises here, naming its cell
            print(f"{name}: {times[name]:.0f} s", flush=True)
            seen[name] = {"seconds": round(times[name], 1), "cache": cache_enabled(), "jobs": max(1, jobs),
                          "mode": "fast" if os.environ.get("COURSE_FAST") == "1" else "real settings"}
            record.write_text(json.dumps(seen, indent=1, sort_keys=True))
    return times


# ------------------------------------------------------------------------------ the site

def first_heading(notebook: Path) -> str | None:
    """The text of a notebook's first ``# heading``."""
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            m = re.search(r"^# (.+)$", "".join(cell["source"]), flags=re.M)
            if m:
                return m.group(1).strip()
    return None


def index_page(notebooks) -> str:
    """The book's first page, made from the README: what the course is, the course map, set-up."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", readme, flags=re.S | re.M))
    intro = readme.split("\n## ", 1)[0].split("\n", 1)[1].strip()
    pages = {nb.stem[:2]: nb.stem for nb in notebooks}
    titles = {nb.stem[:2]: first_heading(nb) for nb in notebooks}
    rows = []
    for line in sections["The notebooks"].splitlines():
        m = re.match(r"\| (\d\d) \| (.+?) \| (.+) \|$", line)
        if m and m.group(1) in pages:
            title = titles.get(m.group(1)) or m.group(2).strip("`").removesuffix(".ipynb")
            rows.append(f"| {m.group(1)} | [{title}](notebooks/{pages[m.group(1)]}.ipynb) | {m.group(3)} |")
    start = sections["Get started"].split("\nConda users:")[0].strip()
    timings, how = [], "as it last ran"
    record = notebooks[0].parent / "timings.json"
    if record.exists():
        t = json.loads(record.read_text())
        modes = {t[nb.name]["mode"] for nb in notebooks if nb.name in t}
        jobs = max(t[nb.name].get("jobs", 1) for nb in notebooks if nb.name in t) if modes else 1
        if modes == {"real settings"}:
            how = "as it ran with its real settings"
        elif "fast" in modes:
            how = "as it ran in fast mode (reduced data and steps: its numbers differ from those the text quotes)"
        timings = ["## How long each notebook ran", "",
                   "For this build, on the machine that built it (a cached result is read, not computed)"
                   + (f"; {jobs} notebooks ran side by side, sharing the CPU cores" if jobs > 1 else "") + ":", "",
                   "| notebook | seconds | settings | results cache |", "| --- | --- | --- | --- |",
                   *[f"| {nb.stem} | {t[nb.name]['seconds']:.0f} | {t[nb.name]['mode']} | "
                     f"{'on' if t[nb.name]['cache'] else 'off'} |" for nb in notebooks if nb.name in t], ""]
    return "\n".join([
        "# Visualizing and Understanding CNNs", "", intro, "",
        "## The course map", "",
        f"Each chapter is one notebook, shown here {how}. The widgets are shown "
        "in their last state; they are live (every control re-runs the method) when you open the notebook "
        "in JupyterLab.", "",
        "| # | notebook | what you will see |", "| --- | --- | --- |", *rows, "",
        "## Set-up", "", start, "", *timings])


def vendor(static: Path, offline: bool) -> dict:
    """Fetch (or reuse) the pinned JavaScript into ``static/vendor``; the URLs the pages load."""
    if offline:
        return CDN
    cache = Path(os.environ.get("COURSE_DATA_DIR", "").strip() or REPO / "data") / "cache" / "vendor"
    try:
        for name, (url, sha256, wanted) in VENDOR.items():
            tgz = cache / url.rsplit("/", 1)[1]
            if not tgz.exists():
                cache.mkdir(parents=True, exist_ok=True)
                with urllib.request.urlopen(url, timeout=30) as r:
                    data = r.read()
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise OSError(f"{url}: sha256 mismatch, not used")
                tgz.write_bytes(data)
            elif hashlib.sha256(tgz.read_bytes()).hexdigest() != sha256:
                tgz.unlink()
                raise OSError(f"{tgz}: sha256 mismatch, removed")
            with tarfile.open(tgz) as tar:
                for member in tar.getmembers():
                    if member.isfile() and re.fullmatch(wanted, member.name):
                        dest = static / "vendor" / name / member.name.removeprefix("package/")
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        dest.write_bytes(tar.extractfile(member).read())
    except OSError as err:
        print(f"note: the site's JavaScript could not be fetched ({err}); its pages load it from a CDN "
              f"instead (widgets and formulas then need a network connection)", flush=True)
        return CDN
    return {"require": "vendor/requirejs/require.js", "embed": "vendor/html-manager/dist/embed-amd.js",
            "mathjax": "vendor/mathjax/es5/tex-chtml.js"}


def site(executed: Path, out: Path, offline: bool = False, jupyter_book: str | None = None) -> Path:
    """Build the website from the executed notebooks in ``executed``; returns the folder of index.html."""
    notebooks = sorted(executed.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise SystemExit(f"no executed notebooks in {executed}: run `python tools/book.py run` first")
    src = out / "book-src"
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    for nb in notebooks:
        shutil.copy2(nb, src / "notebooks" / nb.name)
    (src / "index.md").write_text(index_page(notebooks), encoding="utf-8")
    (src / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n"
                                  + "".join(f"- file: notebooks/{nb.stem}\n" for nb in notebooks))
    (src / "_vendor").mkdir()
    js = vendor(src / "_vendor", offline)
    shutil.copy2(BOOK / "static" / "widgets-offline.js", src / "_vendor" / "widgets-offline.js")
    config = (BOOK / "_config.yml").read_text(encoding="utf-8")
    config = config.replace("@REQUIRE_JS@", js["require"]).replace("@EMBED_JS@", js["embed"]) \
                   .replace("@MATHJAX_JS@", js["mathjax"])
    (src / "_config.yml").write_text(config, encoding="utf-8")
    jb = jupyter_book or str(REPO / ".venv-book" / "bin" / "jupyter-book")
    if not Path(jb).exists() and not shutil.which(jb):
        raise SystemExit(f"{jb} not found: `make book-setup` makes the book venv (requirements-book.txt)")
    t = time.time()
    proc = subprocess.run([jb, "build", str(src), "--path-output", str(out / "book-build"), "--builder", "html"],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"jupyter-book failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    html_dir = out / "site"
    shutil.rmtree(html_dir, ignore_errors=True)
    shutil.copytree(out / "book-build" / "_build" / "html", html_dir)
    fonts = html_dir / "_static" / "vendor" / "html-manager" / "dist"
    if fonts.is_dir():   # the manager asks for its icon fonts relative to the page, and pages are in notebooks/
        shutil.copytree(fonts, html_dir / "notebooks" / "@jupyter-widgets" / "html-manager" / "dist",
                        ignore=shutil.ignore_patterns("*.js", "*.txt"))
    print(f"site: {len(notebooks)} notebooks, built in {time.time() - t:.0f} s -> {html_dir / 'index.html'}",
          flush=True)
    return html_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["build", "run", "site"])
    p.add_argument("notebooks", nargs="*")
    p.add_argument("--out", type=Path, default=REPO / "build")
    p.add_argument("--executed", type=Path, help="site: the folder of executed notebooks (default OUT/executed)")
    p.add_argument("--cell-timeout", type=int, default=3600, help="seconds one cell may run")
    p.add_argument("--jobs", type=int, default=1, help="notebooks run side by side (each kernel gets "
                   "cores/jobs threads); `make book` uses one per core")
    p.add_argument("--no-vendor", action="store_true", help="site: link widget/MathJax JavaScript from a CDN")
    a = p.parse_intermixed_args(argv)
    if a.cmd in ("build", "run"):
        if not a.notebooks:
            p.error("name the notebooks to run")
        t = time.time()
        times = run(a.notebooks, a.out, a.cell_timeout, a.jobs)
        print(f"ran {len(times)} notebook(s) in {time.time() - t:.0f} s: "
              + ", ".join(f"{k[:2]} {v:.0f} s" for k, v in times.items()), flush=True)
    if a.cmd in ("build", "site"):
        site(a.executed or a.out / "executed", a.out, offline=a.no_vendor)


if __name__ == "__main__":
    main()
