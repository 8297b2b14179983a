"""A loopback HTTP proxy in front of a real Prometheus that misbehaves on purpose.

The answers are always the real Prometheus' answers; only their timing or freshness is off:

- `delay`: every request waits this many seconds before it is forwarded (a slow or overloaded
  Prometheus, slower than the provider's query timeout);
- `replay`: the first answer to each query is kept and served again for every later request of
  that query, whatever `time` is asked for (a caching front-end or a lagging replica serving
  stale results: the samples carry the old evaluation time).

It counts requests (`hits`), so a test can also prove that something was never fetched.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx


class FaultProxy:
    def __init__(self, upstream: str, *, delay: float = 0.0, replay: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.replay = replay
        self.hits = 0
        self._cache: dict[str, tuple[int, bytes, str]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, body, content_type = proxy._answer(self.path)
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (its timeout): that is the point of `delay`

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answer(self, path: str) -> tuple[int, bytes, str]:
        with self._lock:
            self.hits += 1
        if self.delay:
            self._closing.wait(self.delay)
        parts = urlsplit(path)
        key = parts.path + "?" + urlencode(sorted((k, v) for k, v in parse_qsl(parts.query) if k != "time"))
        if self.replay:
            with self._lock:
                cached = self._cache.get(key)
            if cached is not None:
                return cached
        try:
            response = httpx.get(self.upstream + path, timeout=30)
        except httpx.HTTPError as exc:
            return 502, f"upstream: {exc}".encode(), "text/plain"
        answer = (response.status_code, response.content, response.headers.get("content-type", "application/json"))
        if self.replay and response.status_code == 200 and _has_samples(response.content):
            # Only an answer with data is kept: replaying "no series" would be an empty answer,
            # not a stale one.
            with self._lock:
                self._cache.setdefault(key, answer)
        return answer

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _has_samples(body: bytes) -> bool:
    try:
        result = json.loads(body)["data"]["result"]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(result)


class CountingListener:
    """A loopback HTTP server that answers nothing useful and counts who called it: a test of
    an address that must never be fetched points the rollout here and expects zero hits."""

    def __init__(self) -> None:
        self.hits = 0
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.hits += 1
                self.send_error(500)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="listener", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def wait_until(predicate: object, timeout: float, interval: float = 0.2) -> bool:
    """Poll a zero-argument callable until it is truthy; False on timeout."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
