"""A real browser for the tests: headless Chromium in a host's namespace, driven over the
DevTools protocol on a pair of pipes (`--remote-debugging-pipe`), so that nothing but the
page it loads needs the network."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"


class BrowserError(Exception):
    """The browser said no, or went away."""


class Browser:
    """One headless Chromium with one tab."""

    def __init__(self, namespace: str, profile: Path, env: dict[str, str]) -> None:
        to_browser, self._in = os.pipe()   # we write commands; it reads fd 3
        self._out, from_browser = os.pipe()  # it writes answers on fd 4; we read

        def pipes() -> None:
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        profile.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, CHROMIUM, "--headless=new", "--no-sandbox",
             "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={profile}",
             "--window-size=1200,1800", "about:blank"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=pipes, pass_fds=(3, 4),
            start_new_session=True)
        os.close(to_browser)
        os.close(from_browser)
        self._next = 0
        self._buffer = b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]
        self.call("Page.enable", session=True)

    def close(self) -> None:
        """Quit the browser."""
        with contextlib.suppress(BrowserError):  # it may be gone already
            self.call("Browser.close")
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)
        for fd in (self._in, self._out):
            os.close(fd)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """One DevTools command, and its result."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._in, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer = self._read()
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return dict(answer.get("result", {}))
        raise BrowserError(f"{method}: no answer in 30 s")

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise BrowserError(f"the browser went away ({self._proc.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return dict(json.loads(message))

    def go(self, url: str) -> None:
        """Load `url` in the tab."""
        self.call("Page.navigate", session=True, url=url)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        found = self.call("Runtime.evaluate", session=True, expression=expression,
                          awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in found:
            raise BrowserError(f"{expression}: {found['exceptionDetails'].get('text')}")
        return found["result"].get("value")

    def text(self, selector: str) -> str:
        """The text of the first element matching `selector`, '' if none."""
        return str(self.js(f"(document.querySelector({json.dumps(selector)}) || {{}})"
                           ".innerText || ''"))

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page."""
        data = self.call("Page.captureScreenshot", session=True, format="png",
                         captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
