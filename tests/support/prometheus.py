"""A real Prometheus (Debian's package) scraping a real test exporter, both on loopback.

The exporter plays the model servers: per-model request counters by status code, a latency
histogram and a prediction histogram, all driven by the test (ModelTraffic adds requests).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.support.controlplane import free_port, stop_process

BUCKETS = (0.25, 0.5, 0.75, 1.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class ModelSeries:
    codes: dict[str, float] = field(default_factory=dict)
    latency: list[float] = field(default_factory=lambda: [0.0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    predictions: list[float] = field(default_factory=lambda: [0.0] * (len(BUCKETS) + 1))


class Exporter:
    """An HTTP /metrics endpoint whose numbers the test sets."""

    def __init__(self) -> None:
        self.models: dict[str, ModelSeries] = {}
        self.lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def record(
        self, model: str, *, ok: int = 0, errors: int = 0, latency: float = 0.05, prediction: float = 0.3
    ) -> None:
        """Add `ok` 200s and `errors` 500s for a model, each with this latency and prediction."""
        with self.lock:
            series = self.models.setdefault(model, ModelSeries())
            series.codes["200"] = series.codes.get("200", 0) + ok
            if errors:
                series.codes["500"] = series.codes.get("500", 0) + errors
            n = ok + errors
            for i, bound in enumerate((*LATENCY_BUCKETS, float("inf"))):
                if latency <= bound:
                    series.latency[i] += n
                    break
            series.latency_sum += latency * n
            for i, bound in enumerate((*BUCKETS, float("inf"))):
                if prediction <= bound:
                    series.predictions[i] += n
                    break

    def render(self) -> str:
        lines = ["# TYPE model_requests_total counter"]
        with self.lock:
            for model, s in sorted(self.models.items()):
                for code, value in sorted(s.codes.items()):
                    lines.append(f'model_requests_total{{model="{model}",code="{code}"}} {value}')
            lines.append("# TYPE model_request_duration_seconds histogram")
            for model, s in sorted(self.models.items()):
                _histogram(lines, "model_request_duration_seconds", model, LATENCY_BUCKETS, s.latency, s.latency_sum)
            lines.append("# TYPE model_prediction histogram")
            for model, s in sorted(self.models.items()):
                _histogram(lines, "model_prediction", model, BUCKETS, s.predictions, 0.0)
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _histogram(
    lines: list[str], name: str, model: str, bounds: tuple[float, ...], counts: list[float], total: float
) -> None:
    cumulative = 0.0
    for bound, count in zip((*[str(b) for b in bounds], "+Inf"), counts, strict=True):
        cumulative += count
        lines.append(f'{name}_bucket{{model="{model}",le="{bound}"}} {cumulative}')
    lines.append(f'{name}_sum{{model="{model}"}} {total}')
    lines.append(f'{name}_count{{model="{model}"}} {cumulative}')


class ModelTraffic:
    """A background 'load' that adds requests to models every `period` seconds, as set by the test."""

    def __init__(self, exporter: Exporter, *, period: float = 0.5) -> None:
        self.exporter = exporter
        self.period = period
        self.rates: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def set(self, model: str, *, ok: int, errors: int = 0, latency: float = 0.05, prediction: float = 0.3) -> None:
        self.rates[model] = {"ok": ok, "errors": errors, "latency": latency, "prediction": prediction}

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for model, rate in list(self.rates.items()):
                self.exporter.record(model, **rate)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class PrometheusServer:
    """Debian's prometheus on a free loopback port; stop() and start() keep port and data."""

    def __init__(self, targets: list[int]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run `make prometheus` (hack/install-prometheus.sh)")
        self.binary = binary
        self.workdir = Path(tempfile.mkdtemp(prefix="modelrollout-prom-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        targets_yaml = ", ".join(f"'127.0.0.1:{p}'" for p in targets)
        (self.workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: models\n    static_configs:\n      - targets: [{targets_yaml}]\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> PrometheusServer:
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("prometheus not ready")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def query(self, query: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=5).json()
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(
        self, query: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(query)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise TimeoutError(f"{query}: last result {result}")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
