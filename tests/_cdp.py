"""Driving headless Chromium through the DevTools protocol (for the `semphase serve` page test).

`--dump-dom` and `--screenshot` (tests/_chromium.py) cannot choose a file in a file input; the DevTools
protocol can (DOM.setFileInputFiles), so this starts Chromium with a debugging port and talks to one page
over a websocket (the `websockets` package): open a URL, evaluate JavaScript, give a file input its
files, take a screenshot.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from _chromium import chromium


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, width: int = 1280, height: int = 1000) -> None:
        self.size = (width, height)
        self._ids = itertools.count(1)

    def __enter__(self) -> Browser:
        from websockets.sync.client import connect

        self._profile = tempfile.TemporaryDirectory(prefix="semphase-cdp-", ignore_cleanup_errors=True)
        self.proc = subprocess.Popen(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                f"--window-size={self.size[0]},{self.size[1]}",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("chromium exited before its DevTools endpoint was up")
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            url = match.group(1) if match else None
        if url is None:
            raise RuntimeError("no DevTools endpoint from chromium")
        self._connection = connect(url, max_size=64 * 2**20)
        self.ws = self._connection.__enter__()
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)
        self.call("Runtime.enable", session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._connection.__exit__(None, None, None)
        finally:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self._profile.cleanup()

    def call(self, method: str, session: bool = False, **params) -> dict:
        """Send one command and wait for its answer (events in between are skipped)."""
        message = {"id": next(self._ids), "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        while True:
            answer = json.loads(self.ws.recv(timeout=120))
            if answer.get("id") == message["id"]:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(f"Boolean({expression})"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"not true after {timeout} s: {expression}")

    def set_files(self, selector: str, files: list[Path]) -> None:
        """Give the file input ``selector`` these files (as a person choosing them would)."""
        root = self.call("DOM.getDocument", session=True)["root"]["nodeId"]
        node = self.call("DOM.querySelector", session=True, nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", session=True, nodeId=node, files=[str(f) for f in files])

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def drag(self, points: list[tuple[float, float]], button: str = "left") -> None:
        """Press the mouse at the first point, move through the others, release at the last (viewport
        CSS pixels), as a hand on a mouse would."""
        (x, y), rest = points[0], points[1:]
        self.call("Input.dispatchMouseEvent", session=True, type="mouseMoved", x=x, y=y)
        self.call(
            "Input.dispatchMouseEvent", session=True, type="mousePressed", x=x, y=y, button=button,
            buttons=1, clickCount=1,
        )  # fmt: skip
        for x, y in rest:
            move = {"type": "mouseMoved", "x": x, "y": y, "button": button, "buttons": 1}
            self.call("Input.dispatchMouseEvent", session=True, **move)
        self.call(
            "Input.dispatchMouseEvent", session=True, type="mouseReleased", x=x, y=y, button=button,
            buttons=0, clickCount=1,
        )  # fmt: skip

    def press(self, key: str, ctrl: bool = False, shift: bool = False) -> None:
        """Press and release one key (``key`` as KeyboardEvent.key names it: "2", "z", "[")."""
        modifiers = (2 if ctrl else 0) | (8 if shift else 0)
        code = f"Key{key.upper()}" if key.isalpha() else (f"Digit{key}" if key.isdigit() else "")
        vk = ord(key.upper()) if key.isalnum() else 0
        for kind in ("keyDown", "keyUp"):
            self.call(
                "Input.dispatchKeyEvent", session=True, type=kind, key=key, code=code, modifiers=modifiers,
                windowsVirtualKeyCode=vk,
            )  # fmt: skip
