"""A minimal headless-Chromium driver for the browser tests: the DevTools protocol over ``--remote-debugging-pipe``.

No driver package is needed: Chromium reads JSON commands (NUL-terminated) on fd 3 and answers on fd 4.
:func:`open_page` loads a ``file://`` page, waits for its load event, and returns a :class:`Page` that evaluates
JavaScript, takes screenshots and holds the console errors and exceptions seen so far.
"""
from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> Optional[str]:
    for name in [os.environ.get("MUBENCH_CHROMIUM", "")] + list(CANDIDATES):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class Page:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int, timeout: float) -> None:
        self.proc, self._w, self._r, self.timeout = proc, write_fd, read_fd, timeout
        self._buf, self._id, self.session = b"", 0, None
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: Optional[dict] = None, session: bool = True) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str) -> dict[str, Any]:
        for e in self.events:
            if e.get("method") == event:
                return e
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read_message(deadline)
            self.events.append(msg)
            if msg.get("method") == event:
                return msg

    def evaluate(self, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"evaluate failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params)["data"]))
        return path

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                out.append("exception: " + str(p["exceptionDetails"].get("exception", {}).get("description")
                                               or p["exceptionDetails"].get("text")))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out


@contextmanager
def open_page(url: str, width: int = 1280, height: int = 900, timeout: float = 60.0) -> Iterator[Page]:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium executable")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def fds() -> None:  # the child's fd 3 reads our commands, fd 4 carries its answers
        r, w = os.dup(to_child_r), os.dup(from_child_w)  # above 4, so the dup2s below cannot clobber them
        os.dup2(r, 3)
        os.dup2(w, 4)

    with tempfile.TemporaryDirectory(prefix="mubench-chromium-") as profile:
        proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                 "--no-first-run", "--hide-scrollbars", "--remote-debugging-pipe",
                                 f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=fds, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        page = Page(proc, to_child_w, from_child_r, timeout)
        try:
            target = page.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            page.session = page.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                     session=False)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                page.send(f"{domain}.enable")
            page.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                             "deviceScaleFactor": 1, "mobile": False})
            page.send("Page.navigate", {"url": url})
            page.wait_for("Page.loadEventFired")
            yield page
        finally:
            try:
                page.send("Browser.close", session=False)
            except (RuntimeError, TimeoutError, OSError):
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_child_w)
            os.close(from_child_r)
