"""Running notebooks without a browser (``jupyter nbconvert --execute``, ``jupyter execute``, nbclient).

**Why plain nbconvert could wait forever on a widget cell** (jupyter/nbclient#312). ipywidgets'
``interact`` draws into an ``Output`` widget. Headless, nbclient stands in for the browser's Output
widget (``nbclient.output_widget.OutputWidget``) and, for every output captured in it, sends the new
state back to the kernel on the *shell* channel, while the same client is waiting on that shell
socket for the cell's ``execute_reply``. jupyter_client's ``Session.send`` sends through a plain
(synchronous) shadow of the asyncio socket, so pyzmq's asyncio layer never learns that a send
happened. A ZeroMQ send also processes the socket's pending commands, among them "a message has
arrived": the reply is then ready, but the edge-triggered file descriptor the event loop watches has
already been read, so nothing wakes the waiting poll. nbclient waits for the reply until its cell
timeout, which nbconvert leaves at None: forever. (Measured here, a notebook with 15 ``interact``
cells: with a 20 s cell timeout, 5 of 10 nbclient runs lost replies, 9 in all, each costing exactly
20 s before the reply was found waiting; 3 of 6 plain ``jupyter nbconvert --execute`` runs never
finished.)

**The fix.** :class:`KernelManager` hands out clients whose shell channel waits in slices of at most
``SLICE`` seconds: each slice ends with a fresh poll that sees a message that is already there, so a
lost wake-up costs at most a second instead of the whole timeout. ``make setup`` makes it the
default of the course's venv for ``jupyter nbconvert --execute`` and ``jupyter execute`` (a config
file in ``.venv/etc/jupyter``); ``tools/book.py`` uses it directly.
"""
from __future__ import annotations

import time
from queue import Empty

from jupyter_client import AsyncKernelManager
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import DottedObjectName, Type

#: Longest wait, in seconds, before the shell socket is polled afresh.
SLICE = 1.0
#: The configuration ``make setup`` writes to ``.venv/etc/jupyter/`` (for nbconvert and ``jupyter execute``).
CONFIG = {"NotebookClient": {"kernel_manager_class": "course_lib.headless.KernelManager"}}
CONFIG_FILES = ("jupyter_nbconvert_config.json", "jupyter_execute_config.json")


class SlicedShellChannel(AsyncZMQSocketChannel):
    """A shell channel whose ``get_msg`` polls in slices of at most ``SLICE`` seconds."""

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE if deadline is None else min(SLICE, max(0.0, deadline - time.monotonic()))
            try:
                return await super().get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class KernelClient(AsyncKernelClient):
    """An asyncio kernel client with a :class:`SlicedShellChannel`."""

    shell_channel_class = Type(SlicedShellChannel)


class KernelManager(AsyncKernelManager):
    """An asyncio kernel manager whose clients are :class:`KernelClient` s."""

    client_class = DottedObjectName("course_lib.headless.KernelClient")
    client_factory = Type(KernelClient, klass=AsyncKernelClient)   # what client() builds (jupyter_client 8)


def install_config(prefix: str | None = None) -> list[str]:
    """Write :data:`CONFIG` into ``<prefix>/etc/jupyter/`` (default: this Python's ``sys.prefix``, the
    venv); the files written."""
    import json
    import sys
    from pathlib import Path

    folder = Path(prefix or sys.prefix) / "etc" / "jupyter"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CONFIG_FILES:
        (folder / name).write_text(json.dumps(CONFIG, indent=1) + "\n")
        written.append(str(folder / name))
    return written


if __name__ == "__main__":   # python -m course_lib.headless: what `make setup` runs
    for path in install_config():
        print(f"wrote {path}")
