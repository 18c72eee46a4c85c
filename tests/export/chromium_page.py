"""Drive headless Chromium over the DevTools protocol (``--remote-debugging-pipe``, standard
library only) to load the FiftyOne App as a returning user sees it and capture its DOM and a
screenshot.

A plain ``chromium --screenshot`` run starts from an empty profile, so the App shows its
first-run "Explore Enterprise" popover over the grid. Here every page gets
``localStorage["fiftyone-enterprise-tooltip-seen"] = "true"`` before its own scripts run (what the
App stores when that popover is dismissed), and the capture waits until the grid tiles have
their canvases instead of relying on a virtual time budget.

The protocol: JSON messages separated by NUL bytes, commands on the browser's fd 3, replies and
events on its fd 4.
"""

from __future__ import annotations

import base64
import json
import fcntl
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path

from export_support import CHROMIUM_FLAGS, PageCapture, chromium_path

# What the App writes to localStorage when its first-run Enterprise popover is dismissed.
SEEN_POPOVER = {"fiftyone-enterprise-tooltip-seen": "true"}
WIDTH, HEIGHT = 1400, 900
_BROWSER_FLAGS = tuple(f for f in CHROMIUM_FLAGS if not f.startswith(("--virtual-time-budget", "--window-size")))


class DevToolsPipe:
    """One headless Chromium with a fresh profile, spoken to over its DevTools pipe."""

    def __init__(self, profile: str) -> None:
        # our ends stay here; bash moves the browser's ends to fds 3 and 4 and execs the browser.
        # Those ends are copied above 10 first, so that neither is 3 or 4 itself.
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        commands = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        replies = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        cmd = [chromium_path(), *_BROWSER_FLAGS, f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={profile}",
               "--remote-debugging-pipe", "about:blank"]
        script = f'exec "$@" 3<&{commands} 4>&{replies} {commands}<&- {replies}>&-'
        self.stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(["bash", "-c", script, "chromium", *cmd], pass_fds=(commands, replies),
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr)
        finally:
            os.close(commands)
            os.close(replies)
        self._buffer = b""
        self._next_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        """Run one command and return its result (events that arrive meanwhile are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed its pipe; stderr:\n{self.stderr_text()[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self.log = self.stderr_text()
        self.stderr.close()


def _evaluate(browser: DevToolsPipe, session: str, expression: str):
    result = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
    return result.get("result", {}).get("value")


TILES = "document.querySelectorAll('[data-cy=\"looker\"]').length"
CANVASES = "document.querySelectorAll('[data-cy=\"looker\"] canvas').length"


def capture_app(url: str, screenshot: Path, min_tiles: int, timeout: float = 120, settle: float = 3.0) -> PageCapture:
    """Load ``url`` with the popover marked as seen, wait until at least ``min_tiles`` grid tiles
    have a canvas (or ``timeout`` passes), let them paint for ``settle`` seconds, then return the
    DOM and write a ``WIDTH x HEIGHT`` PNG to ``screenshot``."""
    screenshot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="wb-chromium-") as profile:
        browser = DevToolsPipe(profile)
        try:
            target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            browser.send("Emulation.setDeviceMetricsOverride",
                         {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, session)
            browser.send("Page.enable", session=session)
            seed = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in SEEN_POPOVER.items())
            browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": f"try {{ {seed} }} catch (e) {{}}"}, session)
            browser.send("Page.navigate", {"url": url}, session)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if (_evaluate(browser, session, CANVASES) or 0) >= min_tiles:
                    break
                time.sleep(0.5)
            time.sleep(settle)
            dom = _evaluate(browser, session, "document.documentElement.outerHTML") or ""
            png = browser.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
            screenshot.write_bytes(base64.b64decode(png))
        finally:
            browser.close()
        return PageCapture(dom, screenshot, browser.log)
