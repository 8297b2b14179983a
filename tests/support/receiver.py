"""A webhook receiver on loopback for tests: a real HTTP server that records every request.

A stand-in for a CI system, a ticket tool or Slack: it answers each path with the code the test
sets (503 until told otherwise), optionally after a delay, and can be taken down (its socket
closed: connections are refused) and brought back on the same port.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def private_ca(workdir: Path) -> tuple[ssl.SSLContext, str]:
    """A CA of the test's own and a server certificate for 127.0.0.1 it signed, made with the
    openssl CLI: (the server's TLS context, the CA certificate in PEM)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
        "-subj", "/CN=modelrollout test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (workdir / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(workdir / "server.crt", workdir / "server.key")
    return context, (workdir / "ca.crt").read_text()


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    code: int

    def json(self) -> Any:
        return json.loads(self.body)

    def signed_with(self, key: bytes) -> bool:
        """The receiver's side of docs/webhooks.md's signature check."""
        header = self.headers.get("x-modelrollout-signature", "")
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        expected = hmac.new(key, parts.get("t", "").encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return "v1" in parts and hmac.compare_digest(parts["v1"], expected)


class Receiver:
    def __init__(self, port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.codes: dict[str, int] = {}
        self.default = 503
        self.delay = 0.0
        self.received: list[Received] = []
        self.in_flight = 0
        self.started = 0  # requests it began answering
        self.max_in_flight = 0  # the most requests it was answering at once
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = port
        self.up()

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, code: int) -> None:
        with self._lock:
            self.codes[path] = code

    def requests(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path is None or r.path == path]

    def wait(self, predicate: Any, *, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests()
            if predicate(got):
                return got
            time.sleep(0.1)
        raise AssertionError(f"timed out; received {[(r.path, r.code) for r in self.requests()]}")

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.started += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.in_flight -= 1
                with receiver._lock:
                    code = receiver.codes.get(self.path, receiver.default)
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.received.append(Received(self.path, headers, body, code))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return  # a client that hung up (e.g. a controller killed mid-request) is no error here

        self._server = Server(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.down()
