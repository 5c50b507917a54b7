"""Headless Chromium for `preview --png` and the rendering tests: what a person would see.

Chromium is run with the network-quiet flags (no background networking, sync or updates), so it
only ever loads the local file it is given.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
QUIET_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--disable-extensions", "--mute-audio",
)  # fmt: skip


class BrowserError(RuntimeError):
    """Chromium is missing or failed; the message says what to do."""


def chromium() -> str:
    """The Chromium binary: $CHROMIUM, else the first known name on PATH."""
    found = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, _CANDIDATES)), None)
    if not found:
        raise BrowserError("Chromium not found: install it (Debian: apt-get install chromium) or set CHROMIUM")
    return found


def run_chromium(page: Path, *args: str, width: int = 600, height: int = 1200, timeout: float = 60) -> str:
    """Load ``page`` at the given window size; return what Chromium printed on stdout."""
    with tempfile.TemporaryDirectory(prefix="notifier-chromium-") as profile:
        command = [chromium(), *QUIET_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", *args,
                   page.resolve().as_uri()]  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"Chromium did not finish within {timeout:.0f}s") from None
    if result.returncode != 0:
        raise BrowserError(f"Chromium failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return result.stdout


# The email goes in a same-origin iframe of exactly the width asked for (Chromium will not make a
# window narrower than 500 px), and a script outside it reports what is inside.
_PROBE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="email" style="width:%(width)dpx;height:100px;border:0" srcdoc="%(srcdoc)s"></iframe>
<script>
window.addEventListener("load", function () {
  var frame = document.getElementById("email"), doc = frame.contentDocument, win = frame.contentWindow;
  var links = Array.prototype.map.call(doc.querySelectorAll("a[href]"), function (a) { return a.href; });
  var images = Array.prototype.map.call(doc.images, function (i) { return [i.src, i.complete, i.naturalWidth]; });
  var probe = document.createElement("pre");
  probe.id = "notifier-probe";
  probe.textContent = JSON.stringify({
    text: doc.body.innerText, links: links, images: images, width: win.innerWidth,
    scrollWidth: doc.documentElement.scrollWidth, scrollHeight: doc.documentElement.scrollHeight
  });
  document.body.appendChild(probe);
});
</script></body></html>"""
_PROBE_OUTPUT = re.compile(r'<pre id="notifier-probe">(.*?)</pre>', re.DOTALL)


def measure(page: Path, *, width: int = 600) -> dict[str, Any]:
    """Load ``page`` at ``width`` and report what is on it: its text, links, images, and whether
    anything overflows horizontally. The page is probed from outside, never changed."""
    source = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="notifier-probe-") as folder:
        probe = Path(folder) / "probe.html"
        probe.write_text(_PROBE % {"width": width, "srcdoc": html.escape(source, quote=True)}, encoding="utf-8")
        dom = dump_dom(probe, width=max(width, 500) + 20, height=200)
    found = _PROBE_OUTPUT.search(dom)
    if found is None:
        raise BrowserError("the page did not finish loading in Chromium")
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, png: Path, *, width: int = 600, height: int | None = None) -> Path:
    """A PNG of ``page`` at ``width``, as tall as the page unless ``height`` is given."""
    height = height or min(4000, measure(page, width=width)["scrollHeight"])
    run_chromium(page, f"--screenshot={png.resolve()}", width=width, height=height)
    if not png.is_file():
        raise BrowserError(f"Chromium wrote no screenshot to {png}")
    return png


def dump_dom(page: Path, *, width: int = 600, height: int = 1200) -> str:
    """The DOM after scripts ran (the page's own probes included), as HTML."""
    return run_chromium(page, "--dump-dom", "--virtual-time-budget=3000", width=width, height=height)
