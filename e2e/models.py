"""Model servers: real HTTP servers on loopback serving a scikit-learn classifier.

Each server trains a small classifier at start-up on scikit-learn's bundled Wisconsin breast
cancer dataset (`load_breast_cancer`: 569 rows, 30 features; shipped inside the library, so
nothing is downloaded) and answers `POST /predict {"features": [30 numbers]}` with
`{"model": ..., "score": P(malignant)}`. It exports, at `GET /metrics`, the conventional metrics
the controller's builtin guardrails read (controller/metrics/builtins.py, docs/metrics.md),
each labelled `model="<its name>"`:

- `model_requests_total{model, code, region}`: requests by HTTP status code and by the region the
  request's `X-Region` header names (the segment label of per-segment guardrails; empty, i.e.
  absent in Prometheus, when the request has none);
- `model_request_duration_seconds{model}`: a histogram of the time to answer;
- `model_prediction{model}`: a histogram of the scores it returned;
- `model_feedback_total{model, outcome}`: labelled predictions, `correct` or `incorrect`, counted
  when `POST /feedback {"id": ..., "label": 0|1}` brings the ground truth of one of its own
  predictions (the request's `id`, kept in a bounded log; `GET /predictions?after=N` lists the
  log, as a prediction log a labelling pipeline reads: e2e/labeller.py, docs/labels.md).

A `Variant` says how the server behaves: which model it serves, and what goes wrong with it.

Each server is its own process (`python -m e2e.models --name N --variant V`, on a free port it
writes to `--port-file`), as a model server is its own pod: one model's work never slows
another's answers. `ModelServer`
starts one and stops it (SIGTERM, then SIGKILL, always reaped); `GET /arrivals` tells the tests
when each request arrived (CLOCK_MONOTONIC, shared by every process on the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from controller.comparator.service import SHADOW_HEADER
from tests.support.controlplane import stop_process
from tests.support.netns import NetNS, Relay

# The port a model server listens on inside a network namespace (its pod's containerPort).
POD_PORT = 8080
LATENCY_BUCKETS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
PREDICTION_BUCKETS = (0.2, 0.4, 0.6, 0.8, 1.0)
# Every model "thinks" for 10-20 ms (as a real model behind a feature store would); the
# classifier itself answers in well under a millisecond.
BASE_LATENCY = (0.020, 0.030)


@dataclass(frozen=True)
class Variant:
    """How one model server behaves."""

    description: str
    training: str = "full"  # "small": the incumbent's (fewer rows); "full": the better model's
    error_rate: float = 0.0  # share of requests answered 500
    extra_latency: float = 0.0  # seconds added to every answer
    broken_features: bool = False  # the "worst_*" features arrive as zeros; answers stay 200
    region_error_rates: tuple[tuple[str, float], ...] = ()  # error_rate, overridden per region
    # Share of inputs (a fixed slice, by a hash of the features) on which the model is confidently
    # wrong: it answers 1 - score there, as a model trained with that slice's labels flipped would.
    wrong_slice: float = 0.0

    def errors_in(self, region: str) -> float:
        return dict(self.region_error_rates).get(region, self.error_rate)


VARIANTS: dict[str, Variant] = {
    "incumbent": Variant("in production: trained on 80 rows", training="small"),
    "better": Variant("retrained on all 398 training rows: more accurate, same score distribution"),
    "error-prone": Variant("the better model behind a flaky dependency: 15% of answers are HTTP 500", error_rate=0.15),
    "broken-pipeline": Variant(
        "the better model, but its feature pipeline drops the worst_* columns (filled with 0): "
        "HTTP 200, different predictions",
        broken_features=True,
    ),
    "slow": Variant("the better model on a slow runtime: +200 ms per answer", extra_latency=0.200),
    # Per-segment guardrails: better overall, three times worse in one region.
    "flaky": Variant("in production behind a flaky dependency: 10% of answers are HTTP 500", "small", error_rate=0.10),
    "worse-in-eu": Variant(
        "the better model with the dependency fixed but in eu: 2% of answers fail, 30% in region eu (3x the "
        "incumbent's there); over a quarter of the traffic from eu, 9% in all against the incumbent's 10%",
        error_rate=0.02,
        region_error_rates=(("eu", 0.30),),
    ),
    "mislabelled": Variant(
        "the better model trained with a slice of its labels flipped (stand-in: it answers 1 - score on a "
        "fixed 12% slice of inputs): same errors, latency and score distribution, lower accuracy",
        wrong_slice=0.12,
    ),
}
# The header that names a request's region, and the regions the servers export from the start.
SEGMENT_HEADER = "X-Region"
REGIONS = ("", "us", "eu")
# Predictions kept for feedback: a label for an older one is refused (404), never counted elsewhere.
PREDICTION_LOG = 50_000


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray
    target: np.ndarray
    train: np.ndarray  # row indices
    test: np.ndarray


@cache
def dataset() -> Dataset:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    features, target = load_breast_cancer(return_X_y=True)
    rows = np.arange(len(target))
    train, test = train_test_split(rows, test_size=0.3, random_state=0, stratify=target)
    return Dataset(features, target, train, test)


@cache
def trained(training: str) -> Any:
    """The fitted pipeline (scaler + logistic regression) of one training recipe; seconds at most."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = dataset()
    rows = data.train[:80] if training == "small" else data.train
    c = 0.3 if training == "small" else 0.1
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
    model.fit(data.features[rows], data.target[rows])
    return model


def accuracy(variant: Variant) -> float:
    """Held-out accuracy of what the variant serves (its broken pipeline and wrong slice included)."""
    data = dataset()
    features = data.features[data.test]
    served = _break(features) if variant.broken_features else features
    predicted = trained(variant.training).predict(served)
    wrong = np.array([_in_slice(row, variant.wrong_slice) for row in features])
    predicted = np.where(wrong, 1 - predicted, predicted)
    return float((predicted == data.target[data.test]).mean())


def _in_slice(features: np.ndarray, share: float) -> bool:
    """A fixed slice of inputs: the same rows whichever process asks."""
    return share > 0 and zlib.crc32(np.asarray(features, dtype=float).reshape(-1).tobytes()) % 1000 < share * 1000


def _break(features: np.ndarray) -> np.ndarray:
    broken = np.array(features, dtype=float, copy=True)
    broken[..., 20:30] = 0.0
    return broken


ANSWERED_CODES = ("200", "400", "500")


class Server:
    """The model server itself (runs in its own process: see `main`)."""

    def __init__(
        self, name: str, variant: str, *, host: str = "127.0.0.1", port: int = 0, seed: int | None = None
    ) -> None:
        self.name = name
        self.variant_name = variant
        self.variant = VARIANTS[variant]
        self.model = trained(self.variant.training)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.arrivals: list[float] = []  # time.monotonic() of every /predict received for a user
        self.shadow_arrivals: list[float] = []  # ... and of every one the shadow comparator made
        self.codes: dict[int, int] = {}
        registry = CollectorRegistry()
        self._requests = Counter(
            "model_requests", "Requests by HTTP status code and region.", ["model", "code", "region"], registry=registry
        )
        self._latency = Histogram(
            "model_request_duration_seconds",
            "Time to answer a request.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._prediction = Histogram(
            "model_prediction", "Predicted score.", ["model"], buckets=PREDICTION_BUCKETS, registry=registry
        )
        self._feedback = Counter(
            "model_feedback", "Labelled predictions by outcome.", ["model", "outcome"], registry=registry
        )
        # Prediction log: request id -> (sequence number, predicted class), oldest first.
        self.predictions: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._sequence = 0
        # Every code this server answers, exported at 0 from the start: increase() does not count the
        # first increment of a series that appears mid-window, so a 500 series born with the first
        # error would hide that error (docs/metrics.md, "Initialise counters at 0").
        for code in ANSWERED_CODES:
            for region in REGIONS:
                self._requests.labels(model=name, code=code, region=region)
        self._latency.labels(model=name)
        self._prediction.labels(model=name)
        for outcome in ("correct", "incorrect"):
            self._feedback.labels(model=name, outcome=outcome)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: with Nagle's algorithm the body waits for the
            # client's delayed ACK, 40 ms a request behind Traefik (docs/development.md).
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/arrivals":
                    self._send(200, json.dumps(server.snapshot()).encode(), "application/json")
                elif path == "/predictions":
                    after = int(self.path.partition("after=")[2] or 0)
                    self._send(200, json.dumps(server.logged(after)).encode(), "application/json")
                elif path == "/healthz" or path.endswith("/healthz"):
                    # Also under a route's prefix (GET /predict/healthz): the harness asks through
                    # a gateway whether the route is live, without a request that counts.
                    self._send(200, f"ok {server.name}\n".encode(), "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                if path == "/feedback":
                    code, answer = server.feedback(body)
                elif path == "/predict":
                    shadow = self.headers.get(SHADOW_HEADER) is not None
                    code, answer = server.predict(body, self.headers.get(SEGMENT_HEADER) or "", shadow=shadow)
                else:
                    self._send(404, b"not found\n", "text/plain")
                    return
                self._send(code, json.dumps(answer).encode(), "application/json")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.http = ThreadingHTTPServer((host, port), Handler)
        self.http.daemon_threads = True

    def predict(self, body: bytes, region: str = "", *, shadow: bool = False) -> tuple[int, dict[str, Any]]:
        """One prediction; `shadow`: asked by the comparator (docs/shadow.md), not for a user: counted
        in `shadow_arrivals`, not `arrivals`, and kept out of the prediction log labels are for."""
        began = time.perf_counter()
        region = region if region in REGIONS else ""
        with self._lock:
            (self.shadow_arrivals if shadow else self.arrivals).append(time.monotonic())
            think = self._random.uniform(*BASE_LATENCY) + self.variant.extra_latency
            fail = self._random.random() < self.variant.errors_in(region)
        try:
            request = json.loads(body)
            features = np.asarray(request["features"], dtype=float).reshape(1, -1)
            request_id = str(request.get("id", ""))[:128]
        except (ValueError, KeyError, TypeError) as exc:
            return self._answer(400, {"error": f"bad request: {exc}"}, began, region)
        time.sleep(think)
        if fail:
            return self._answer(500, {"error": "upstream feature store timed out"}, began, region)
        if self.variant.broken_features:
            features = _break(features)
        # target 0 is "malignant" in load_breast_cancer: the score is P(malignant).
        score = float(self.model.predict_proba(features)[0, 0])
        if _in_slice(features, self.variant.wrong_slice):
            score = 1.0 - score
        self._prediction.labels(model=self.name).observe(score)
        if request_id and not shadow:
            self._log(request_id, 0 if score >= 0.5 else 1)
        return self._answer(200, {"model": self.name, "score": score, "id": request_id}, began, region)

    def _log(self, request_id: str, predicted: int) -> None:
        with self._lock:
            self._sequence += 1
            self.predictions[request_id] = (self._sequence, predicted)
            while len(self.predictions) > PREDICTION_LOG:
                self.predictions.popitem(last=False)

    def logged(self, after: int, limit: int = 2000) -> list[list[Any]]:
        """[sequence, request id] of the predictions logged after sequence `after`, oldest first."""
        newer: list[list[Any]] = []
        with self._lock:
            for rid, (seq, _) in reversed(self.predictions.items()):
                if seq <= after:
                    break
                newer.append([seq, rid])
        return newer[::-1][:limit]

    def feedback(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """The ground truth of one of this model's predictions: counted for this model only."""
        try:
            request = json.loads(body)
            request_id, label = str(request["id"]), int(request["label"])
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": f"bad feedback: {exc}"}
        with self._lock:
            logged = self.predictions.get(request_id)
        if logged is None:
            return 404, {"error": f"{self.name} made no prediction {request_id!r} (or it left the log)"}
        outcome = "correct" if logged[1] == label else "incorrect"
        self._feedback.labels(model=self.name, outcome=outcome).inc()
        return 200, {"model": self.name, "id": request_id, "outcome": outcome}

    def _answer(self, code: int, answer: dict[str, Any], began: float, region: str) -> tuple[int, dict[str, Any]]:
        self._latency.labels(model=self.name).observe(time.perf_counter() - began)
        self._requests.labels(model=self.name, code=str(code), region=region).inc()
        with self._lock:
            self.codes[code] = self.codes.get(code, 0) + 1
        return code, answer

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "arrivals": list(self.arrivals),
                "shadow_arrivals": list(self.shadow_arrivals),
                "codes": {str(k): v for k, v in self.codes.items()},
            }


class ModelServer:
    """A model server process (one name, one variant), seen from the harness.

    On 127.0.0.1 by default. With `netns` and `address` (a pod's IP the harness added to the
    network namespace, tests/support/netns.py) it runs inside the namespace and listens on
    `address`:POD_PORT, where a real gateway finds it through the Service's EndpointSlices; the
    harness, Prometheus and the labeller reach it through a relay on the host's 127.0.0.1 (`url`,
    `port`), never at `address` (which the host does not route to)."""

    module = "e2e.models"  # what `python -m` runs (e2e/llm.py's stand-in LLM server is another)
    variants: dict[str, Any] = VARIANTS

    def __init__(
        self,
        name: str,
        variant: str,
        *,
        seed: int = 0,
        log_dir: Path | None = None,
        netns: NetNS | None = None,
        address: str | None = None,
    ) -> None:
        self.name = name
        self.variant_name = variant
        self.variant = self.variants[variant]
        self.port = 0  # known once ready: the server binds port 0 (no race) and writes it to a file
        self.address = address  # inside `netns`, or None: 127.0.0.1
        self._relay: Relay | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix="modelrollout-model-"))
        self._port_file = self._workdir / "port"
        argv = [sys.executable, "-m", self.module, "--name", name, "--variant", variant]
        argv += ["--seed", str(seed), "--port-file", str(self._port_file)]
        if netns is not None:
            assert address is not None, "a server inside a namespace listens on one of its addresses"
            argv = netns.command([*argv, "--host", address, "--port", str(POD_PORT)])
            # The relay connects (from inside) only when the host opens a connection to it.
            self._relay = netns.expose(address, POD_PORT)
            self.port = self._relay.port
        log_path = (log_dir or self._workdir) / f"model-{name}.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=Path(__file__).resolve().parents[1],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Own session: Ctrl-C reaches the harness, which stops the servers in order.
                start_new_session=True,
            )
        self.log_path = log_path
        self._stopper = weakref.finalize(self, stop_process, self.proc)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)
        self._final: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"model server {self.name} exited with {self.proc.returncode}:\n{log}")
            if not self.port and self._port_file.exists():
                self.port = int(self._port_file.read_text())
            if self.port:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"model server {self.name} not ready after {timeout}s")

    def snapshot(self) -> dict[str, Any]:
        if self._final is not None:
            return self._final
        return dict(httpx.get(f"{self.url}/arrivals", timeout=10).json())

    @property
    def codes(self) -> dict[int, int]:
        return {int(k): v for k, v in self.snapshot()["codes"].items()}

    def served(self) -> int:
        """Users' requests received on /predict so far (the comparator's calls are not users')."""
        return len(self.snapshot()["arrivals"])

    def shadow_served(self) -> int:
        """The shadow comparator's calls on /predict so far."""
        return len(self.snapshot().get("shadow_arrivals", []))

    def arrivals_between(self, start: float, end: float, arrivals: list[float] | None = None) -> int:
        times = arrivals if arrivals is not None else self.snapshot()["arrivals"]
        return sum(1 for t in times if start <= t < end)

    def close(self) -> None:
        if self.proc.poll() is None and self._final is None:
            with contextlib.suppress(httpx.HTTPError):
                self._final = self.snapshot()  # counts stay readable after the process is gone
        self._stopper()
        self._cleanup()
        if self._relay is not None:
            self._relay.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one scikit-learn model server (on 127.0.0.1 by default)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--variant", required=True, choices=sorted(VARIANTS))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (a pod's IP in a namespace)")
    parser.add_argument("--port", type=int, default=0, help="default 0: any free port")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    server = Server(args.name, args.variant, host=args.host, port=args.port, seed=args.seed)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.http.shutdown).start())
    port = server.http.server_address[1]
    if args.port_file:
        staging = args.port_file.with_suffix(".tmp")
        staging.write_text(str(port))
        staging.rename(args.port_file)  # whole, never half written
    print(f"{args.name} ({args.variant}) on {args.host}:{port}", flush=True)
    server.http.serve_forever()
    server.http.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
