"""Run notebooks with their real settings and render them as HTML (``make book``).

    python tools/book.py build notebooks/*.ipynb

Why not plain ``jupyter nbconvert --execute``: with widget cells, nbclient sometimes
misses the kernel's execute reply and waits forever (jupyter/nbclient#312). Here the
wait for the reply is done in one-second slices, so a missed wake-up costs a second.
"""
import argparse
import sys
import time
from pathlib import Path
from queue import Empty

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter


class SlicedWaitClient(NotebookClient):
    """A NotebookClient whose shell-channel waits are cut into short slices."""

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        wait = kc.shell_channel.get_msg

        async def get_msg(timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
                try:
                    return await wait(timeout=left)
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

        kc.shell_channel.get_msg = get_msg
        return kc


def build(paths, out_dir: Path, cell_timeout: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in map(Path, paths):
        t = time.time()
        nb = nbformat.read(path, as_version=4)
        SlicedWaitClient(nb, timeout=cell_timeout, kernel_name="python3",
                         resources={"metadata": {"path": str(path.parent)}}).execute()
        html, _ = HTMLExporter().from_notebook_node(nb)
        (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
        print(f"{path.name}: {time.time() - t:.0f} s -> {out_dir / path.with_suffix('.html').name}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["build"])
    p.add_argument("notebooks", nargs="+")
    p.add_argument("--out", type=Path, default=Path("build"))
    p.add_argument("--cell-timeout", type=int, default=3600, help="seconds one cell may run")
    a = p.parse_args()
    build(a.notebooks, a.out, a.cell_timeout)
    sys.exit(0)
