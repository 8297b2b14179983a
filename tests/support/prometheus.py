"""A real Prometheus (Debian's package) scraping a real test exporter, both on loopback.

Provider and engine tests must meet Prometheus' real answers (extrapolated increases, NaN from
0/0, stale series, error JSON), not our idea of them, so nothing here fakes Prometheus:

- `Exporter` is an HTTP /metrics endpoint playing the model servers; the test sets its
  counters, gauges and histograms (per model, per variant) and Prometheus scrapes it.
- `ModelTraffic` is a background load that keeps adding requests to models at set rates.
- `PrometheusServer` runs /usr/bin/prometheus on a free port with a data directory named
  `modelrollout-prom-*` (CI fails if such a process outlives the tests); it can be stopped and
  started again on the same port and data, as tests of an outage need.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.support.controlplane import free_port, stop_process

# Bucket bounds of the conventional histograms (controller/metrics/builtins.py).
BUCKETS = (0.25, 0.5, 0.75, 1.0)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0)

REQUESTS = "model_requests_total"
LATENCY = "model_request_duration_seconds"
PREDICTION = "model_prediction"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelKey = tuple[tuple[str, str], ...]


def _key(labels: Mapping[str, str], *, histogram: bool = False) -> LabelKey:
    for name in labels:
        if not _LABEL.match(name) or (histogram and name == "le"):
            raise ValueError(f"invalid label name {name!r}")
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def format_value(value: float) -> str:
    """A sample value in the text exposition format (NaN, +Inf, -Inf are spelled out)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels_text(labels: Iterable[tuple[str, str]]) -> str:
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    body = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
    return "{" + body + "}" if body else ""


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    cumulative: list[float]  # one per bound, then +Inf
    total: float = 0.0


@dataclass
class _Family:
    kind: str  # counter | gauge | histogram
    samples: dict[LabelKey, float] = field(default_factory=dict)
    histograms: dict[LabelKey, _Histogram] = field(default_factory=dict)


class Exporter:
    """An HTTP /metrics endpoint on 127.0.0.1 whose numbers the test sets; thread-safe.

    Prometheus may scrape between two calls: use `with exporter.atomically():` when several
    series must change in the same scrape (e.g. a model's 200s and 500s start together).
    """

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._lock = threading.RLock()
        self._scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        # Port 0: the kernel picks a free port atomically (no race with other tests).
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="exporter", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def scrapes(self) -> int:
        """How many times /metrics has been served."""
        with self._lock:
            return self._scrapes

    @contextlib.contextmanager
    def atomically(self) -> Iterator[None]:
        """Changes made inside appear together in one scrape."""
        with self._lock:
            yield

    # -- setting values -----------------------------------------------------------------------

    def set_counter(self, name: str, labels: Mapping[str, str], value: float) -> None:
        if value < 0:
            raise ValueError("a counter is never negative")
        with self._lock:
            self._family(name, "counter").samples[_key(labels)] = float(value)

    def inc_counter(self, name: str, labels: Mapping[str, str], by: float = 1.0) -> float:
        if by < 0:
            raise ValueError("a counter only goes up")
        with self._lock:
            samples = self._family(name, "counter").samples
            key = _key(labels)
            samples[key] = samples.get(key, 0.0) + by
            return samples[key]

    def set_gauge(self, name: str, labels: Mapping[str, str], value: float) -> None:
        with self._lock:
            self._family(name, "gauge").samples[_key(labels)] = float(value)

    def set_histogram(
        self, name: str, labels: Mapping[str, str], buckets: Mapping[float, float], *, total: float = 0.0
    ) -> None:
        """Set a histogram from cumulative counts by upper bound (`le`); `math.inf` is the count.

        `name` is the family name: `model_prediction` exports `model_prediction_bucket`,
        `_sum` and `_count`.
        """
        if math.inf not in buckets:
            raise ValueError("a histogram needs the +Inf bucket (math.inf): the count of observations")
        bounds = tuple(sorted(b for b in buckets if not math.isinf(b)))
        cumulative = [float(buckets[b]) for b in (*bounds, math.inf)]
        if any(a > b for a, b in itertools.pairwise(cumulative)):
            raise ValueError(f"histogram buckets must be cumulative (non-decreasing): {cumulative}")
        with self._lock:
            histograms = self._family(name, "histogram").histograms
            histograms[_key(labels, histogram=True)] = _Histogram(bounds, cumulative, float(total))

    def observe(
        self,
        name: str,
        labels: Mapping[str, str],
        value: float,
        *,
        count: float = 1,
        bounds: tuple[float, ...] = BUCKETS,
    ) -> None:
        """Add `count` observations of `value` to a histogram (created with `bounds` if new)."""
        with self._lock:
            family = self._family(name, "histogram")
            key = _key(labels, histogram=True)
            histogram = family.histograms.get(key)
            if histogram is None:
                histogram = family.histograms[key] = _Histogram(tuple(bounds), [0.0] * (len(bounds) + 1))
            for i, bound in enumerate((*histogram.bounds, math.inf)):
                if value <= bound:
                    histogram.cumulative[i] += count
            histogram.total += value * count

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Forget one series (or a whole family): Prometheus marks it stale at the next scrape."""
        with self._lock:
            if labels is None:
                self._families.pop(name, None)
                return
            family = self._families.get(name)
            if family is not None:
                family.samples.pop(_key(labels), None)
                family.histograms.pop(_key(labels), None)

    def record(
        self, model: str, *, ok: int = 0, errors: int = 0, latency: float = 0.05, prediction: float = 0.3
    ) -> None:
        """Add `ok` 200s and `errors` 500s for a model, each with this latency and prediction.

        A model that never failed has no code="500" series, as with a real server.
        """
        with self._lock:
            self.inc_counter(REQUESTS, {"model": model, "code": "200"}, ok)
            if errors:
                self.inc_counter(REQUESTS, {"model": model, "code": "500"}, errors)
            n = ok + errors
            self.observe(LATENCY, {"model": model}, latency, count=n, bounds=LATENCY_BUCKETS)
            self.observe(PREDICTION, {"model": model}, prediction, count=n, bounds=BUCKETS)

    def _family(self, name: str, kind: str) -> _Family:
        if not _NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        family = self._families.setdefault(name, _Family(kind))
        if family.kind != kind:
            raise ValueError(f"{name} is a {family.kind}, not a {kind}")
        return family

    # -- exposition ---------------------------------------------------------------------------

    def render(self) -> str:
        """The text exposition format (0.0.4): each family's samples together, after its TYPE."""
        lines: list[str] = []
        with self._lock:
            self._scrapes += 1
            for name, family in sorted(self._families.items()):
                lines.append(f"# TYPE {name} {family.kind}")
                for key, value in sorted(family.samples.items()):
                    lines.append(f"{name}{_labels_text(key)} {format_value(value)}")
                for key, histogram in sorted(family.histograms.items()):
                    for bound, count in zip((*histogram.bounds, math.inf), histogram.cumulative, strict=True):
                        labels = (*key, ("le", format_value(bound)))
                        lines.append(f"{name}_bucket{_labels_text(labels)} {format_value(count)}")
                    lines.append(f"{name}_sum{_labels_text(key)} {format_value(histogram.total)}")
                    lines.append(f"{name}_count{_labels_text(key)} {format_value(histogram.cumulative[-1])}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class ModelTraffic:
    """A background 'load' that adds requests to models every `period` seconds, as set by the test."""

    def __init__(self, exporter: Exporter, *, period: float = 0.5) -> None:
        self.exporter = exporter
        self.period = period
        self.rates: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-traffic", daemon=True)
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


class PrometheusQueryError(RuntimeError):
    """Prometheus refused a query the test sent (a bug in the test, not a condition to wait for)."""


class PrometheusServer:
    """Debian's prometheus on a free loopback port; `stop()` and `start()` keep port and data."""

    def __init__(self, targets: Iterable[int] = (), *, scrape_interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            # Never a skip: a test that cannot meet the real Prometheus has not run.
            raise RuntimeError("prometheus is not installed: run `make prometheus` (hack/install-prometheus.sh)")
        self.binary = binary
        self.workdir = Path(tempfile.mkdtemp(prefix="modelrollout-prom-"))
        self.data_dir = self.workdir / "data"
        self.config_file = self.workdir / "prometheus.yml"
        self.log_file = self.workdir / "prometheus.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []  # every process ever started, for the session's leak check
        self._stopper: Callable[[], object] | None = None
        # Even if a test forgets close() (or the interpreter exits early), remove the data.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)
        targets_yaml = ", ".join(f"'127.0.0.1:{p}'" for p in targets)
        self.config_file.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  scrape_timeout: {scrape_interval}\n"
            "  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: models\n"
            "    static_configs:\n"
            f"      - targets: [{targets_yaml}]\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self, timeout: float = 60) -> PrometheusServer:
        """Start (or restart, on the same port and data directory) and wait for /-/ready."""
        if self.running:
            return self
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                # Own session: a Ctrl-C in the terminal reaches pytest, which stops it in order.
                start_new_session=True,
            )
        self.pids.append(self.proc.pid)
        # At interpreter exit the process is stopped even if nobody called stop().
        self._stopper = weakref.finalize(self, stop_process, self.proc)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                response = httpx.get(f"{self.url}/-/ready", timeout=1)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready after {timeout}s ({last}):\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; always reaped. The port and data stay for `start()`."""
        if self._stopper is not None:
            self._stopper()  # runs stop_process once, then detaches
            self._stopper = None
        elif self.proc is not None:
            stop_process(self.proc)

    def close(self) -> None:
        self.stop()
        self._cleanup()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    # -- asking it directly (the tests' own view, independent of the provider under test) -----

    def query(self, query: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's series; a scalar result comes back as one series without labels."""
        params = {"query": query} if at is None else {"query": query, "time": f"{at:.3f}"}
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=5).json()
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{query}: {body.get('errorType')}: {body.get('error')}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(
        self, query: str, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
    ) -> list[dict[str, Any]]:
        """Poll `query` until `predicate(result)` holds; connection errors (a restart) are waited out."""
        deadline = time.monotonic() + timeout
        last: object = "no answer yet"
        while time.monotonic() < deadline:
            try:
                result = self.query(query)
            except (httpx.HTTPError, ValueError) as exc:
                last = repr(exc)
            else:
                if predicate(result):
                    return result
                last = result
            time.sleep(0.25)
        raise TimeoutError(f"{query}: not as expected after {timeout}s; last answer {last}")


def values(result: list[dict[str, Any]], label: str | None = None) -> dict[str, float]:
    """A query result as {label value: float}; without a label, {"": value} of the one series."""
    return {(s["metric"].get(label, "") if label else ""): float(s["value"][1]) for s in result}
