"""Open a page in headless Chromium and report what a user's browser would: errors, images, a screenshot.

Why the DevTools protocol over a pipe, not `--enable-logging`: Chromium's stderr log shows messages a
script sends to the console, but not a resource that failed to load (a missing PNG), which is the error
a report is most likely to have. `--remote-debugging-pipe` speaks the DevTools protocol over file
descriptors 3 (commands in) and 4 (events out), NUL-separated JSON, so no websocket library or port is
needed. We collect `Runtime.consoleAPICalled` (errors and warnings), `Runtime.exceptionThrown` and
`Log.entryAdded` (the browser's own log: failed loads, blocked content), ask the page for every image's
natural size, and take a full-page screenshot.

Chromium comes from Debian (`chromium`). `find_chromium` installs it with apt-get when it is missing and
we are root (what CI's set-up does); otherwise the caller skips with the reason.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
         "--remote-debugging-pipe"]
NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium(install: bool = True) -> tuple[str | None, str]:
    """(path to a Chromium binary or None, why none)."""
    for name in NAMES:
        if shutil.which(name):
            return shutil.which(name), ""
    if not install:
        return None, "chromium is not installed"
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, "chromium is not installed and apt-get as root is not available to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return None, f"`{' '.join(cmd)}` timed out"
        if done.returncode != 0:
            return None, f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"
    found = shutil.which("chromium")
    return (found, "") if found else (None, "apt-get installed chromium but no `chromium` is on PATH")


@dataclass
class PageReport:
    errors: list[str] = field(default_factory=list)  # console errors/warnings, exceptions, browser log errors
    images: list[dict] = field(default_factory=list)  # {"src", "complete", "width", "height"} per <img>
    screenshot: bytes = b""
    title: str = ""


class _Pipe:
    """The DevTools protocol over Chromium's fds 3 (we write) and 4 (we read)."""

    def __init__(self, binary: str, profile: str):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium expects its end of the command pipe on fd 3 and its event pipe on fd 4. In the child,
        # first copy both ends above 10 (either may already sit on 3 or 4), then put them in place. dup2'd
        # fds are inheritable; close_fds=False keeps them (every other fd Python made is close-on-exec).
        def remap():
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)
            os.close(high_r)
            os.close(high_w)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=remap, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._from_chrome, 65536)
            if not chunk:
                self.messages.put(None)
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                self.messages.put(json.loads(message))

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        request = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        os.write(self._to_chrome, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if message is None:
                raise RuntimeError(f"chromium closed the pipe during {method}")
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if message is None:
                raise RuntimeError(f"chromium closed the pipe waiting for {method}")
            self.events.append(message)
            if message.get("method") == method:
                return message

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)


IMAGES_JS = ("JSON.stringify(Array.from(document.images).map(i => ({src: i.getAttribute('src'), "
             "complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})))")


def errors_in(events: list[dict]) -> list[str]:
    out = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            out.append("console." + params["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                      for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:300])
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in ("error", "warning"):
            entry = params["entry"]
            out.append(f"log.{entry['level']}: {entry.get('text')} {entry.get('url', '')}".strip())
    return out


def open_page(binary: str, page: Path, width: int = 1280, timeout: float = 60.0) -> PageReport:
    """Load `page` (a file), wait for its load event, and report errors, images and a screenshot."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        pipe = _Pipe(binary, profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            pipe.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired", timeout=timeout)
            time.sleep(0.3)  # late console messages after load
            evaluated = pipe.call("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True},
                                  session=session)
            title = pipe.call("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                              session=session)
            shot = pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                             session=session, timeout=timeout)
            return PageReport(errors=errors_in(pipe.events), images=json.loads(evaluated["result"]["value"]),
                              screenshot=base64.b64decode(shot["data"]), title=title["result"]["value"])
        finally:
            pipe.close()
