"""Every notebook as a student meets it: in JupyterLab, in a real browser (Chromium).

nbval runs kernels, not a browser, so it would not notice a widget that stopped rendering or
a figure that never reaches the page. Here JupyterLab runs from the project venv on a free
127.0.0.1 port with a random token, in fast mode (``COURSE_FAST=1``) and without the results
cache (``COURSE_CACHE=0``: everything is computed), on *copies* of the notebooks (a browser
session must never write outputs into the committed files). For each notebook the test

1. opens it and waits for its kernel, which must start without the "Select Kernel" dialog;
2. runs all cells (Run > Run All Cells) and waits for the last one;
3. asserts that no cell has an error output and that the browser logged no console error;
4. changes one control of every interactive widget (a dropdown if it has one, else toggle
   buttons, else a slider), presses its run button if it has one (``interact_manual``), and
   asserts that the widget's rendered output changed (screenshots before and after) and
   shows no traceback.

On failure a screenshot of the page and the browser console are written to
``build/browser/<notebook>.*`` and the message names the notebook, cell and widget; each widget's
redrawn output is kept as ``build/browser/<notebook>-widget<k>.png``.
The executed notebooks, with their widget state, are saved to ``build/browser/executed/``, and
the last test builds the course website from them (``tools/book.py site``, as ``make book`` does)
and checks it: a page per notebook, in order, with previous/next links and a table of contents;
every internal link and anchor resolves; no error output; the widgets embedded with their state.

Needs Chromium (``make test`` installs Debian's ``chromium`` when run as root; elsewhere
``sudo apt-get install chromium``, or set ``COURSE_CHROMIUM`` to a Chromium/Chrome binary)
and Playwright for Python (``requirements-test.txt``). The JupyterLab server is shut down by
the fixture whatever happens; each notebook's kernel is shut down after its test.
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = REPO / "build" / "browser"
EXECUTED = ARTIFACTS / "executed"
RUN_ALL_TIMEOUT_S = 300    # one notebook, fast mode (the slowest takes about a minute)
WIDGET_TIMEOUT_S = 120     # one widget re-render, fast mode
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]

# JupyterLab user settings for the test server (written to its own settings folder):
SETTINGS = {
    # every cell stays in the page, so that every output is rendered and can be checked
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
    # the copies are saved once, explicitly, at the end of each test
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    # no network: no news or update checks, no extension manager listing PyPI
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension:plugin": {"enabled": False},
    # saving a notebook stores its widgets' state (the course website shows them from it)
    "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True},
}


def chromium_binary():
    found = os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("The browser test needs Chromium: `make test` installs it when run as root; otherwise run "
                    "`sudo apt-get install chromium` (Debian/Ubuntu) or set COURSE_CHROMIUM to a Chromium or "
                    "Chrome binary.", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on copies of the notebooks; stop() ends it and its kernels."""

    def __init__(self, home: Path):
        self.home, self.root, self.token, self.port = home, home / "root", secrets.token_hex(24), free_port()
        (self.root / "notebooks").mkdir(parents=True)
        for nb in NOTEBOOKS:
            shutil.copy2(nb, self.root / "notebooks" / nb.name)
        for plugin, values in SETTINGS.items():
            package, name = plugin.split(":")
            f = home / "settings" / package / f"{name}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(values))
        env = {**os.environ, "COURSE_FAST": "1", "COURSE_CACHE": "0", "JUPYTER_CONFIG_DIR": str(home / "config"),
               "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "IPYTHONDIR": str(home / "ipython")}
        env.pop("MPLBACKEND", None)   # the kernel must use the inline backend, as in a student's JupyterLab
        self.log = home / "server.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
             f"--LabApp.user_settings_dir={home / 'settings'}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
             "--LabApp.news_url=", *(["--allow-root"] if os.geteuid() == 0 else [])],
            env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                self.api("GET", "status")
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"JupyterLab did not answer in 90 s:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.3)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def api(self, method: str, path: str):
        req = urllib.request.Request(self.url(f"api/{path}"), method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernel(self, kernel_id: str) -> None:
        try:
            self.api("DELETE", f"kernels/{kernel_id}")
        except OSError:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                for k in self.api("GET", "kernels"):
                    self.shutdown_kernel(k["id"])
                self.api("POST", "shutdown")
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    shutil.rmtree(EXECUTED, ignore_errors=True)   # the website test must see this run's notebooks only
    server = Lab(tmp_path_factory.mktemp("lab"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    executable = chromium_binary()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-test.txt")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


# ---- what the page is asked (JupyterLab's application object, exposed by expose_app_in_browser) ----

NOTEBOOK_READY = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(w && w.content && w.content.model && k && k.status === 'idle'); }"""

# done: the kernel is idle and every code cell ran, or one failed (Run All stops there)
RUN_ALL_DONE = """() => { const w = window.jupyterapp.shell.currentWidget; const cells = w.content.model.cells;
  let pending = 0, failed = false;
  for (let i = 0; i < cells.length; i++) { const c = cells.get(i); if (c.type !== 'code') continue;
    for (let j = 0; j < c.outputs.length; j++) if (c.outputs.get(j).type === 'error') failed = true;
    if (c.executionCount === null && c.sharedModel.getSource().trim()) pending++; }
  return w.sessionContext.session.kernel.status === 'idle' && (pending === 0 || failed); }"""

CELL_ERRORS = """() => { const cells = window.jupyterapp.shell.currentWidget.content.model.cells; const out = [];
  for (let i = 0; i < cells.length; i++) { const c = cells.get(i); if (c.type !== 'code') continue;
    for (let j = 0; j < c.outputs.length; j++) { const o = c.outputs.get(j).toJSON();
      if (o.output_type === 'error') out.push({cell: i, error: o.ename + ': ' + o.evalue}); } }
  return out; }"""

KERNEL_ID = "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id"
KERNEL_IDLE = "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"

# top-level widget views with at least one control and an output: marked, described
INTERACTIVE_WIDGETS = """() => { const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'));
  const found = [];
  document.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').forEach(w => {
    if (w.parentElement.closest('.jupyter-widgets')) return;
    const controls = w.querySelectorAll('select, .noUi-handle, .widget-toggle-button');
    if (!w.querySelector('.widget-output') || controls.length === 0) return;
    w.setAttribute('data-browser-test', String(found.length));
    const labels = Array.from(w.querySelectorAll('.widget-label')).map(l => l.textContent.trim()).filter(Boolean);
    found.push({cell: cells.indexOf(w.closest('.jp-Cell')), labels: labels}); });
  return found; }"""

# counts the kernel's busy phases, so that a re-render is known to be over (busy, then idle again)
WATCH_KERNEL = """() => { if (window.__busyCount === undefined) { window.__busyCount = 0;
  window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.statusChanged.connect(
    (_, s) => { if (s === 'busy') window.__busyCount++; }); } return window.__busyCount; }"""

KERNEL_WORKED = """n => window.__busyCount > n &&
  window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'"""


class Failure(AssertionError):
    pass


def control_changes(root):
    """Ways a student would change the widget, one at a time: each yields what it did."""
    for s in root.locator("select").all():
        n, cur = s.locator("option").count(), s.evaluate("e => e.selectedIndex")
        if n > 1:
            new = n - 1 if cur != n - 1 else 0   # far from the default: the next option may look the same
            s.select_option(index=new)
            yield f"dropdown {label_of(s)}: option {cur} -> {new}"
    for t in root.locator(".widget-toggle-button:not(.mod-active)").all():
        text = t.inner_text()
        t.click()
        yield f"toggle button '{text}'"
    for handle in root.locator(".noUi-handle").all():
        handle.focus()
        at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
        handle.press("Home" if at_max else "End")
        yield f"slider {label_of(handle)}: to its {'minimum' if at_max else 'maximum'}"


def label_of(control) -> str:
    text = control.evaluate("e => { const w = e.closest('.widget-inline-hbox');"
                            " const l = w && w.querySelector('.widget-label'); return l ? l.textContent : ''; }")
    return f"'{text.strip()}'" if text and text.strip() else "(unlabelled)"


def screenshot(element) -> bytes:
    box = element.bounding_box()
    if not box or box["width"] < 1 or box["height"] < 1:
        return b""
    return element.screenshot(animations="disabled")


def wait_for_kernel(page, busy_before: int, what: str, where: str) -> None:
    try:
        page.wait_for_function(KERNEL_WORKED, arg=busy_before, timeout=WIDGET_TIMEOUT_S * 1000, polling=250)
    except Exception:
        raise Failure(f"{where}: after {what} the kernel did not run and return to idle within "
                      f"{WIDGET_TIMEOUT_S} s") from None


def check_widgets(page, name: str, tries: int = 3) -> list[str]:
    """Change every interactive widget until its rendered output changes (at most `tries` changes);
    the list of what was done, for the report."""
    done = []
    found = page.evaluate(INTERACTIVE_WIDGETS)
    broken = page.locator("text=/Error displaying widget|Failed to display Jupyter Widget|model not found/")
    if broken.count():
        raise Failure(f"{name}: a widget failed to render: {broken.first.inner_text()[:300]!r}")
    if not found:   # every notebook has at least one; none rendered means the widgets are broken
        raise Failure(f"{name}: no interactive widget rendered in the page")
    for k, info in enumerate(found):
        where = f"{name}, cell {info['cell']}, widget {k} (controls {', '.join(info['labels']) or '?'})"
        root = page.locator(f'[data-browser-test="{k}"]')
        root.scroll_into_view_if_needed()
        output = root.locator(".widget-output").first
        before = screenshot(output)
        tried, after, changes = [], b"", control_changes(root)
        while len(tried) < tries:
            busy = page.evaluate(WATCH_KERNEL)
            what = next(changes, None)
            if what is None:
                tried.append("(no other control to change)")
                break
            wait_for_kernel(page, busy, what, where)
            run = root.locator("button.widget-button:not(.widget-toggle-button)")
            if run.count():   # interact_manual: the function runs when its button is pressed
                busy = page.evaluate(WATCH_KERNEL)
                run.first.click()
                what += f", then '{run.first.inner_text()}'"
                wait_for_kernel(page, busy, what, where)
            page.wait_for_timeout(300)   # let the browser paint the new output
            text = output.inner_text()
            if "Traceback" in text:
                raise Failure(f"{where}: after {what} the widget shows an error:\n{text[-1500:]}")
            tried.append(what)
            after = screenshot(output)
            if after and after != before:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)   # for people to look at
                (ARTIFACTS / f"{Path(name).stem}-widget{k}.png").write_bytes(after)
                break
        if not after or after == before:
            raise Failure(f"{where}: the rendered output stayed the same after " + "; ".join(tried))
        done.append(f"cell {info['cell']}: " + "; ".join(tried))
    return done


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.stem for nb in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab(notebook, lab, browser):
    name = notebook.name
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console = []
    page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    kernel = None
    t0 = time.monotonic()
    try:
        page.goto(lab.url(f"lab/workspaces/test-{notebook.stem}/tree/notebooks/{name}?token={lab.token}"))
        try:   # the kernel is ready, or a dialog (such as "Select Kernel") asks the student something
            page.wait_for_function(f"() => ({NOTEBOOK_READY})() || !!document.querySelector('.jp-Dialog')",
                                   timeout=120_000, polling=250)
        except Exception:
            raise Failure(f"{name}: the notebook's kernel was not ready within 120 s") from None
        if page.locator(".jp-Dialog").count():
            raise Failure(f"{name}: a dialog appeared instead of the kernel starting: "
                          f"{page.locator('.jp-Dialog').first.inner_text()[:300]!r}")
        kernel = page.evaluate(KERNEL_ID)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        try:
            page.wait_for_function(RUN_ALL_DONE, timeout=RUN_ALL_TIMEOUT_S * 1000, polling=500)
        except Exception:
            raise Failure(f"{name}: Run All did not finish within {RUN_ALL_TIMEOUT_S} s") from None
        ran = time.monotonic() - t0
        errors = page.evaluate(CELL_ERRORS)
        if errors:
            raise Failure(f"{name}: " + "; ".join(f"cell {e['cell']}: {e['error']}" for e in errors))
        done = check_widgets(page, name)
        page.wait_for_function(KERNEL_IDLE, timeout=60_000)
        page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function("() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=60_000)
        EXECUTED.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lab.root / "notebooks" / name, EXECUTED / name)
        problems = [m for m in console if m.startswith(("[error]", "[pageerror]"))]
        if problems:
            raise Failure(f"{name}: the browser console has errors:\n" + "\n".join(problems[:20]))
        print(f"{name}: ran in {ran:.0f} s, widgets checked in {time.monotonic() - t0 - ran:.0f} s: {done}")
    except BaseException as err:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(ARTIFACTS / f"{notebook.stem}.png"), full_page=True)
        except Exception:
            pass
        (ARTIFACTS / f"{notebook.stem}.console.log").write_text("\n".join(console), encoding="utf-8")
        if isinstance(err, Failure):
            pytest.fail(f"{err}\n(screenshot and console: {ARTIFACTS}/{notebook.stem}.*)", pytrace=False)
        raise
    finally:
        if kernel:
            lab.shutdown_kernel(kernel)
        context.close()


# ---- the course website (make book), built from the notebooks the browser just ran -------------

def test_course_website_has_every_notebook_linked_and_no_errors(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import book
    finally:
        sys.path.pop(0)
    from html.parser import HTMLParser

    executed = sorted(EXECUTED.glob("*.ipynb"))
    missing = [nb.name for nb in NOTEBOOKS if not (EXECUTED / nb.name).exists()]
    assert not missing, f"the browser test did not produce these executed notebooks: {missing}"
    if not (REPO / ".venv-book" / "bin" / "jupyter-book").exists():
        pytest.fail("the website builder is missing: run `make book-setup`", pytrace=False)
    site = book.site(EXECUTED, tmp_path, offline=True)   # offline: the tests never use the network

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.links, self.ids, self.classes, self.scripts = [], set(), [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if "id" in a:
                self.ids.add(a["id"])
            self.classes.append((tag, a.get("class") or "", a))
            for key in ("href", "src"):
                if a.get(key) and tag in ("a", "link", "script", "img"):
                    self.links.append((tag, a[key]))
            if tag == "script" and a.get("type"):
                self.scripts.append(a["type"])

    pages = {}
    for f in site.rglob("*.html"):
        if "_static" in f.parts or "_sources" in f.parts:
            continue
        parsed = Page()
        parsed.feed(f.read_text(encoding="utf-8"))
        pages[f] = parsed
    nb_pages = [site / "notebooks" / f"{nb.stem}.html" for nb in NOTEBOOKS]
    assert (site / "index.html") in pages and all(p in pages for p in nb_pages), sorted(map(str, pages))

    # the index (course map) links every notebook
    index_links = {(site / href.split("#")[0]).resolve() for tag, href in pages[site / "index.html"].links
                   if tag == "a" and "://" not in href}
    assert all(p.resolve() in index_links for p in nb_pages), "the course map must link every notebook"

    # every internal link and anchor resolves
    broken = []
    for f, parsed in pages.items():
        for tag, url in parsed.links:
            if url.startswith(("http://", "https://", "mailto:", "data:", "javascript:")) or url == "#":
                continue
            path, _, anchor = url.split("?")[0].partition("#")
            target = (f.parent / path).resolve() if path else f.resolve()
            if not target.exists():
                broken.append(f"{f.relative_to(site)}: {url}")
            elif anchor and target.suffix == ".html":
                ids = next((p.ids for q, p in pages.items() if q.resolve() == target), None)
                if ids is not None and anchor not in ids:
                    broken.append(f"{f.relative_to(site)}: {url} (no such anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken[:30])

    for i, page in enumerate(nb_pages):
        parsed = pages[page]
        # in order: previous and next chapter, and a table of contents of its own
        nav = {c.split()[0]: a.get("href", "") for tag, c, a in parsed.classes
               if tag == "a" and c.split()[:1] in (["left-prev"], ["right-next"])}
        want_prev = "../index.html" if i == 0 else f"{nb_pages[i - 1].stem}.html"
        assert nav.get("left-prev", "").split("#")[0] == want_prev, (page.name, nav)
        if i + 1 < len(nb_pages):
            assert nav.get("right-next", "").split("#")[0] == f"{nb_pages[i + 1].stem}.html", (page.name, nav)
        assert any("bd-toc" in c or "page-toc" in c for _, c, _ in parsed.classes), f"{page.name}: no contents"
        # no error output, no traceback
        text = page.read_text(encoding="utf-8")
        assert "Traceback (most recent call last)" not in text and not any(
            "traceback" in c.split() for _, c, _ in parsed.classes), f"{page.name} shows an error output"
        # widgets embedded in their last state: the saved state and a view for each widget output
        nb = json.loads((EXECUTED / NOTEBOOKS[i].name).read_text(encoding="utf-8"))
        if nb["metadata"].get("widgets"):
            assert "application/vnd.jupyter.widget-state+json" in parsed.scripts, page.name
            assert "application/vnd.jupyter.widget-view+json" in parsed.scripts, page.name
