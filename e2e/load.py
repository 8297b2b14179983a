"""A steady load: real HTTP requests through the gateway at a fixed rate, from several threads.

Each request is one row of the breast cancer dataset (all 569 rows, drawn at random), sent as
`POST /predict` with an `id` ("<row>:<sequence>", the entity a label later arrives for:
e2e/labeller.py); for an LLM (`chat=True`) it is a streamed chat completion, `POST
/v1/chat/completions` with `"stream": true`, read to its end. Requests are paced on a shared
schedule (request k is due at start + k/rate), so the rate holds whatever each answer's latency.
With `segments`, each request carries a region (`X-Region`), drawn at random in the given shares.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Mapping

from e2e.models import SEGMENT_HEADER, dataset

CHAT_PATH = "/v1/chat/completions"
PROMPTS = (
    "Summarise this support ticket in one sentence.",
    "Translate the following product description into French.",
    "Write a SQL query that counts orders per customer for last month.",
    "Explain the difference between a mutex and a semaphore to a new engineer.",
)


def chat_requests() -> list[bytes]:
    return [
        json.dumps(
            {"model": "chat", "messages": [{"role": "user", "content": p}], "stream": True, "max_tokens": 24}
        ).encode()
        for p in PROMPTS
    ]


class Load:
    def __init__(
        self,
        url: str,
        *,
        rate: float,
        threads: int = 4,
        seed: int | None = None,
        chat: bool = False,
        segments: Mapping[str, float] | None = None,
    ) -> None:
        """`segments`: region -> share of the requests, sent as the `X-Region` header (none: no header)."""
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.rate = host, int(port), rate
        self.path = CHAT_PATH if chat else "/predict"
        self._chat = chat
        self._rows = chat_requests() if chat else [json.dumps(row.tolist()).encode() for row in dataset().features]
        self._random = random.Random(seed)
        self._regions, self._shares = list(segments or {}), list((segments or {}).values())
        self._lock = threading.Lock()
        self._next = 0
        self._start = time.monotonic()
        self._stop = threading.Event()
        self.codes: dict[int, int] = {}
        self.backends: dict[str, int] = {}
        self._threads = [threading.Thread(target=self._run, name=f"load-{i}", daemon=True) for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _due(self) -> tuple[float, bytes, dict[str, str]]:
        with self._lock:
            due = self._start + self._next / self.rate
            self._next += 1
            headers = {"Content-Type": "application/json"}
            if self._regions:
                headers[SEGMENT_HEADER] = self._random.choices(self._regions, self._shares)[0]
            row = self._random.randrange(len(self._rows))
            if self._chat:
                return due, self._rows[row], headers
            return due, b'{"features": %s, "id": "%d:%d"}' % (self._rows[row], row, self._next), headers

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            due, body, headers = self._due()
            if self._stop.wait(max(0.0, due - time.monotonic())):
                break
            conn = conn or http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                code, backend = response.status, response.getheader("X-Backend", "")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None
                code, backend = 0, ""
            with self._lock:
                self.codes[code] = self.codes.get(code, 0) + 1
                if backend:
                    self.backends[backend] = self.backends.get(backend, 0) + 1
        if conn is not None:
            conn.close()

    @property
    def sent(self) -> int:
        with self._lock:
            return sum(self.codes.values())

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
