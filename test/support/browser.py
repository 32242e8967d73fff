"""A real browser for tests: Debian's headless Chromium, driven through chromedriver's W3C WebDriver API.

script/bootstrap installs chromium and chromium-driver on the machine (never while test hosts are up).
The browser runs on the machine and reaches test hosts over the bridge; every other address goes to a
proxy that is not there, so a page (or Chromium's own background calls) never reaches the internet.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
NO_PROXY_THERE = "http://127.0.0.1:9"  # discard's port: nothing listens, a request fails at once
WINDOW = (1000, 700)


class BrowserError(RuntimeError):
    """The browser or chromedriver refused a command; the message holds WebDriver's answer."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Browser:
    """One headless Chromium session. Use as a context manager; ``reachable`` are the hosts it may load."""

    def __init__(self, reachable: list[str]) -> None:
        if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
            raise BrowserError("no chromium and chromium-driver on this machine: run script/bootstrap test")
        self.reachable = reachable
        self.port = _free_port()
        self.profile = Path(tempfile.mkdtemp(prefix="sentry-browser-"))
        self.driver: subprocess.Popen | None = None
        self.session = ""

    def __enter__(self) -> Browser:
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status")["ready"]:
                    break
            except (OSError, BrowserError):
                pass
            if time.monotonic() > deadline:
                raise BrowserError(f"chromedriver did not answer on port {self.port} within 30 s")
            time.sleep(0.2)
        arguments = [
            "--headless=new",
            "--no-sandbox",  # root, as tests run
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--user-data-dir={self.profile}",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            f"--proxy-server={NO_PROXY_THERE}",
            f"--proxy-bypass-list={';'.join(self.reachable)}",
        ]
        capabilities = {"browserName": "chrome", "goog:chromeOptions": {"binary": CHROMIUM, "args": arguments}}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self.session:
                self._call("DELETE", f"/session/{self.session}")
        finally:
            if self.driver:
                self.driver.terminate()
                self.driver.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        url = f"http://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 (chromedriver, over http)
                return json.load(answer)["value"]
        except urllib.error.HTTPError as refused:
            value = json.load(refused).get("value", {})
            raise BrowserError(f"{method} {path}: {value.get('error')}: {value.get('message', '')[:500]}") from None

    def _session(self, method: str, path: str, body: dict | None = None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str) -> None:
        """Load ``url`` and wait for the page (and the redirects before it)."""
        self._session("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return self._session("GET", "/url")

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        """Wait for ``condition`` (a click that submits a form returns before the next page shows).

        While the next page replaces the old one, what the condition reads may be refused: an
        element found on the old page is stale, or gone from the document, or not there yet
        (chromedriver words these several ways). Such a refusal counts as not yet; the last one
        is told if the wait runs out.
        """
        deadline = time.monotonic() + timeout
        refused: BrowserError | None = None
        while True:
            try:
                if condition():
                    return
            except BrowserError as exc:
                refused = exc
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"not after {timeout} s: {what} (the browser shows {self.url}; last refusal: {refused})"
                )
            time.sleep(0.1)

    def wait_for_url(self, url: str, timeout: float = 30) -> None:
        self.wait_until(lambda: self.url == url, f"the browser at {url}", timeout)

    @property
    def title(self) -> str:
        return self._session("GET", "/title")

    def _element(self, css: str) -> str:
        found = self._session("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def text(self, css: str) -> str:
        """The rendered text of the first element ``css`` selects."""
        return self._session("GET", f"/element/{self._element(css)}/text")

    def type(self, css: str, text: str) -> None:
        self._session("POST", f"/element/{self._element(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._session("POST", f"/element/{self._element(css)}/click", {})

    def screenshot(self, path: Path) -> Path:
        """The window as a PNG file."""
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))
        return path


def png_colours(path: Path) -> Counter:
    """How many pixels of each (r, g, b) colour a PNG file (8-bit RGB or RGBA, not interlaced) holds."""
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is no PNG file")
    position, chunks, header = 8, [], b""
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or colour_type not in (2, 6) or interlace:
        raise ValueError(f"{path}: only 8-bit RGB(A) PNG without interlacing is read here")
    channels = 3 if colour_type == 2 else 4
    stride = width * channels
    raw = zlib.decompress(b"".join(chunks))
    previous = bytearray(stride)
    colours: Counter = Counter()
    for row in range(height):
        start = row * (stride + 1)
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], line, previous, channels)
        colours.update(zip(line[0::channels], line[1::channels], line[2::channels], strict=True))
        previous = line
    return colours


def _unfilter(kind: int, line: bytearray, previous: bytearray, step: int) -> None:
    """Undo one PNG row filter in place (PNG specification, section 9)."""
    if kind == 0:
        return
    for i in range(len(line)):
        left = line[i - step] if i >= step else 0
        up = previous[i]
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + up) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            upper_left = previous[i - step] if i >= step else 0
            estimate = left + up - upper_left
            near = min((abs(estimate - left), 0), (abs(estimate - up), 1), (abs(estimate - upper_left), 2))[1]
            line[i] = (line[i] + (left, up, upper_left)[near]) & 0xFF
        else:
            raise ValueError(f"unknown PNG filter {kind}")
