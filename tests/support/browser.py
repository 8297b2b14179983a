"""Debian's Chromium, headless, driven through Debian's chromedriver by the W3C WebDriver protocol.

The dashboard test needs a handful of WebDriver commands (open a page, run a script, click,
accept a confirm(), take a screenshot); they are plain HTTP+JSON, so this client speaks them with
httpx. Selenium would add about 40 MB to the test environment for the same few calls, and
Playwright needs a browser download of its own. Nothing here skips: without chromium and
chromium-driver the test fails with the command that installs them (`make browser`).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.controlplane import free_port

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


class WebDriverError(RuntimeError):
    pass


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(f"{names[0]} is not installed: run `make browser` (Debian's chromium and chromium-driver)")


class Browser:
    """One headless Chromium session; `close()` ends it and its driver."""

    def __init__(self, *, width: int = 1400, height: int = 1000) -> None:
        chromium = _binary("chromium", "chromium-browser")
        driver = _binary("chromedriver")
        self.port = free_port()
        self.profile = Path(tempfile.mkdtemp(prefix="modelrollout-chromium-"))
        self.log = self.profile / "chromedriver.log"
        self.proc = subprocess.Popen(
            [driver, f"--port={self.port}", f"--log-path={self.log}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        try:
            self._wait_ready()
            args = [
                "--headless=new",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={self.profile / 'profile'}",
                f"--window-size={width},{height}",
            ]
            caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
            self.session = f"/session/{value['sessionId']}"
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromedriver exited {self.proc.returncode}")
            try:
                if self.http.get("/status").json()["value"]["ready"]:
                    return
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError("chromedriver did not start")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        reply = self.http.request(method, path, json=body if body is not None else ({} if method == "POST" else None))
        value = reply.json().get("value")
        if reply.status_code >= 400:
            raise WebDriverError(f"{method} {path}: {value}")
        return value

    # -- the commands the tests use --------------------------------------------------------------

    def open(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run `script` (a function body: `return ...`) in the page."""
        return self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": list(args)})

    def wait(self, script: str, *args: Any, timeout: float = 30, what: str = "") -> Any:
        """Until `script` returns something truthy (checked every 0.1 s); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.run(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never showed {what or script}")
            time.sleep(0.1)

    def click(self, css: str) -> None:
        element = self._call("POST", f"{self.session}/element", {"using": "css selector", "value": css})
        self._call("POST", f"{self.session}/element/{element[ELEMENT]}/click")

    def alert_text(self) -> str:
        return str(self._call("GET", f"{self.session}/alert/text"))

    def accept_alert(self) -> None:
        self._call("POST", f"{self.session}/alert/accept")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", f"{self.session}/screenshot")))

    def close(self) -> None:
        try:
            if hasattr(self, "session"):
                self._call("DELETE", self.session)
        except (httpx.HTTPError, WebDriverError):
            pass
        finally:
            self.http.close()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)
