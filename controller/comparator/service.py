"""The comparator: turns mirrored requests into agreement counts, and never answers a user.

One comparator serves one rollout (docs/shadow.md). The router mirrors a share of the live
requests to it; for each, it sends the same request to the incumbent and to the candidate of the
rollout's shadow of record (read from the rollout with read-only RBAC, `RolloutPairs`), compares
the two predictions by the rollout's `spec.shadow.comparison` (compare.py), and counts the
outcome in Prometheus counters per rollout and model pair. On a sample of the requests
(`spec.shadow.noiseFloor.sample`) it asks the incumbent a second time and counts the incumbent
against itself (variant `incumbent`): the noise floor a sequential ShadowDisagreement judges the
candidate against. The mirror sender (the gateway, which discards the answer) gets 204 with no
body: a model's answer never leaves the comparator.

It protects the incumbent, which serves real users: a token bucket caps the extra requests per
second sent to it (`maxIncumbentRPS`), at most `maxConcurrency` comparisons are in flight, and a
model call that takes longer than `timeout` is that model's error. A request beyond either cap
is dropped at once and counted, never queued: a queue would turn a burst into a late, unbounded
load on the incumbent. Outside the shadow phase (no pair of record) requests are dropped too.

The request is a stranger's: its path only ever becomes the path of a URL built on the model's
base URL (never text appended to it, so `@host` or `\\host` cannot change where the call goes),
and the model's address goes through the controller's own address policy (metrics/address.py:
no link-local, no API server, no loopback unless allowed), the call then pinned to the address
checked. A request refused, or one whose handling fails in any unforeseen way, is dropped with
its reason: counted, never compared, never an exception out of the server.

Every request received is written to the request log, when one is given, with its outcome: the
end-to-end suite checks the counters against it (nothing lost, nothing counted twice).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram

from controller.api.duration import parse_duration
from controller.api.models import MAX_SHADOW_CONCURRENCY, Comparison, ModelRef, ModelRollout, ShadowState
from controller.comparator.compare import compare
from controller.core.shadow import definition
from controller.metrics.address import AddressPolicy

# Candidate minus incumbent latency, seconds: both signs matter.
LATENCY_BUCKETS = (-5.0, -1.0, -0.5, -0.25, -0.1, -0.05, -0.01, 0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# Headers passed on to the models: what a prediction can depend on, nothing hop-by-hop.
FORWARDED = ("content-type", "accept", "authorization")
# Sent with every call the comparator makes: a model server may keep shadow calls out of what it
# logs as served (its prediction log, business events); the e2e model servers count them apart.
SHADOW_HEADER = "X-Modelrollout-Shadow"
# Why a mirrored request was not compared (the values of modelrollout_shadow_dropped_total's reason).
DROP_REASONS = ("not_shadowing", "bad_request", "address_refused", "concurrency", "incumbent_rate", "error")
# How long a model address, once checked (and resolved), is called without checking it again.
ADDRESS_TTL = 30.0
# A mirrored request's body, and a model's answer, beyond which nothing is read: a mirrored
# request over it is refused (413), an answer over it is that model's error.
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_ANSWER_BYTES = 8 * 1024 * 1024


def path_refusal(path: str) -> str | None:
    """Why a mirrored request's path (with its query) may not be passed on, or None. It must be an
    origin-form path ("/..."): nothing that could read as an authority (`//host`, `@host` before the
    query, a backslash), no fragment, no whitespace or control characters, ASCII only."""
    if not path.startswith("/") or path.startswith("//"):
        return "the path does not start with a single '/'"
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in path):
        return "the path holds whitespace, control or non-ASCII characters"
    if "\\" in path or "#" in path or "@" in path.split("?", 1)[0]:
        return "the path holds '\\', '#' or '@'"
    return None


@dataclass(frozen=True)
class ModelAddress:
    """Where to call a model: its base URL with the checked address in place of its host, the Host
    header (and TLS server name) of the name it was given."""

    url: httpx.URL
    host: str
    server_name: str

    def for_path(self, path: str) -> httpx.URL:
        """The URL of `path` (checked by path_refusal) on this model: the host never changes."""
        return self.url.copy_with(raw_path=self.url.raw_path.rstrip(b"/") + path.encode("ascii"))


class ModelAddresses:
    """Model base URLs through the address policy, each check kept `ttl` seconds; a refusal says why."""

    def __init__(self, policy: AddressPolicy, *, ttl: float = ADDRESS_TTL, clock: Callable[[], float] = time.monotonic):
        self.policy, self.ttl, self._clock = policy, ttl, clock
        self._lock = threading.Lock()
        self._checked: dict[str, tuple[float, ModelAddress | str]] = {}

    def __call__(self, base: str) -> ModelAddress | str:
        now = self._clock()
        with self._lock:
            cached = self._checked.get(base)
            if cached is not None and now < cached[0]:
                return cached[1]
        found = self._check(base)
        with self._lock:
            self._checked[base] = (now + self.ttl, found)
        return found

    def _check(self, base: str) -> ModelAddress | str:
        refused, ips = self.policy.check(base, what="model url")
        if refused:
            return refused
        try:
            url = httpx.URL(base)
        except httpx.InvalidURL as exc:
            return f"model url {base!r}: {exc}"
        if url.scheme not in ("http", "https") or not url.host:
            return f"model url {base!r}: not an http(s) URL"
        if not ips:
            return f"model url {base!r}: the host does not resolve"
        host = url.netloc.decode("ascii")
        return ModelAddress(url=url.copy_with(host=ips[0]), host=host, server_name=url.host)


class _Dropped(Exception):
    """A request not compared, for `reason` (one of DROP_REASONS)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class Pair:
    """What the comparator compares now: the rollout's shadow of record and its settings."""

    namespace: str
    rollout: str
    incumbent: ModelRef
    candidate: ModelRef
    comparison: Comparison
    noise_sample: float | None
    max_incumbent_rps: int
    max_concurrency: int
    timeout: float


def pair_of(rollout: ModelRollout) -> Pair | None:
    """The pair to compare, or None outside the shadow phase (nothing to compare: drop)."""
    spec, status = rollout.spec, rollout.status
    if (
        spec.shadow is None
        or status.shadow is None
        or status.shadow.state is not ShadowState.MIRRORING
        or status.incumbent is None
        or status.candidate is None
    ):
        return None
    if status.shadow.definition is not None and status.shadow.definition != definition(spec.shadow):
        # spec.shadow now defines comparisons otherwise: the controller restarts shadow under the
        # new definition; until then nothing is compared (no count mixes the two).
        return None
    shadow = spec.shadow
    return Pair(
        namespace=rollout.metadata.namespace,
        rollout=rollout.metadata.name,
        incumbent=status.incumbent,
        candidate=status.candidate,
        comparison=shadow.comparison,
        noise_sample=shadow.noise_floor.sample if shadow.noise_floor is not None else None,
        max_incumbent_rps=shadow.max_incumbent_rps,
        max_concurrency=shadow.max_concurrency,
        timeout=parse_duration(shadow.timeout).total_seconds(),
    )


class RolloutPairs:
    """The pair of the rollout of record, read at most every `refresh` seconds (a cache of the
    API server's answer; a failed read keeps no pair: never compare a pair that may be over)."""

    def __init__(
        self, read: Callable[[], dict[str, Any]], *, refresh: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read, self._refresh, self._clock = read, refresh, clock
        self._lock = threading.Lock()
        self._pair: Pair | None = None
        self._at = -float("inf")

    def __call__(self) -> Pair | None:
        with self._lock:
            now = self._clock()
            if now - self._at >= self._refresh:
                self._at = now
                try:
                    self._pair = pair_of(ModelRollout.model_validate(self._read()))
                except Exception:  # any failure to read means: no pair known
                    self._pair = None
            return self._pair


class TokenBucket:
    """At most `rate` takes per second on average, and a burst of one second's worth (at least
    two, the most one request takes)."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self._clock = rate, clock
        self.burst = max(rate, 2.0)
        self._tokens, self._at = self.burst, clock()
        self._lock = threading.Lock()

    def take(self, n: int = 1, *, need: int | None = None) -> float | None:
        """Take `n` tokens if `need` (default n) are there: the clock's time of the take, or None
        (the request log records that time, so a test can check the cap on the log alone)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= max(n, need or n):
                self._tokens -= n
                return now
            return None


def admit(bucket: TokenBucket, draw: random.Random, noise_sample: float | None) -> tuple[float, bool] | None:
    """Whether a request is compared, when (the bucket's time), and whether on the noise floor's
    sample too (a second incumbent call). The sample is drawn first and every request is admitted
    alike, only if the bucket could pay for the second call (whether or not it is drawn): so the
    noise floor's share of the compared requests is its sample at any load, as the sequential test
    (statistics.rate_ratio_test, with the share as its allocation) needs. A request the bucket
    cannot pay for is dropped, never queued."""
    noise = noise_sample is not None and draw.random() < noise_sample
    taken = bucket.take(2 if noise else 1, need=2 if noise_sample is not None else 1)
    return None if taken is None else (taken, noise)


class ModelUrls:
    """Where each model is served: `overrides` by model name, else `template` filled with the
    model's Service (backend.service or its name), port (backend.port or `port`) and namespace."""

    def __init__(self, template: str, *, port: int = 8080, overrides: dict[str, str] | None = None) -> None:
        self.template, self.port, self.overrides = template, port, dict(overrides or {})

    def __call__(self, model: ModelRef, namespace: str) -> str:
        if model.name in self.overrides:
            return self.overrides[model.name].rstrip("/")
        backend = model.backend
        service = (backend.service if backend is not None else None) or model.name
        port = (backend.port if backend is not None else None) or self.port
        return self.template.format(service=service, port=port, namespace=namespace).rstrip("/")


@dataclass(frozen=True)
class Answer:
    body: Any = None
    error: str | None = None
    seconds: float = 0.0


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        pair = ["namespace", "rollout", "model", "reference", "variant"]
        self.comparisons = Counter(
            "modelrollout_shadow_comparisons",
            "Mirrored requests by outcome: agree, disagree, candidate_error, incumbent_error. model is judged "
            "against reference; variant incumbent is the incumbent against itself (the noise floor).",
            [*pair, "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "modelrollout_shadow_latency_difference_seconds",
            "Candidate minus incumbent latency on the same mirrored request, when both answered.",
            ["namespace", "rollout", "model", "reference"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.received = Counter(
            "modelrollout_shadow_received", "Mirrored requests received.", ["namespace", "rollout"], registry=registry
        )
        self.dropped = Counter(
            "modelrollout_shadow_dropped",
            "Mirrored requests not compared, by reason: " + ", ".join(DROP_REASONS) + ".",
            ["namespace", "rollout", "reason"],
            registry=registry,
        )


class Comparator:
    """The comparison of one mirrored request at a time, thread-safe; the HTTP server calls `handle`."""

    def __init__(
        self,
        *,
        namespace: str,
        rollout: str,
        pairs: Callable[[], Pair | None],
        urls: ModelUrls,
        policy: AddressPolicy,
        registry: CollectorRegistry,
        request_log: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        seed: int | None = None,
    ) -> None:
        self.namespace, self.rollout, self.pairs, self.urls = namespace, rollout, pairs, urls
        self.addresses = ModelAddresses(policy)
        self.metrics = Metrics(registry)
        # Counted before any request, so increase() sees the first ones (a series born with its
        # first increment hides it from increase()).
        self.metrics.received.labels(namespace, rollout)
        for reason in DROP_REASONS:
            self.metrics.dropped.labels(namespace, rollout, reason)
        # Calls in flight are bounded by maxConcurrency (each comparison: the incumbent on the
        # server's thread, the candidate and the noise floor's second call on these), so neither
        # the pool's threads nor the client's connections may be the tighter bound: a call waiting
        # for either would time out as the model's error. Threads start only when needed.
        self._client = httpx.Client(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )
        self._calls = ThreadPoolExecutor(max_workers=2 * MAX_SHADOW_CONCURRENCY, thread_name_prefix="comparator-call")
        self._in_flight = 0
        self._lock = threading.Lock()
        self._bucket: TokenBucket | None = None
        self._random = random.Random(seed)
        self._log_lock = threading.Lock()
        self._log = request_log.open("a", encoding="utf-8") if request_log is not None else None
        self._seq = 0
        self._seen_pairs: set[tuple[str, str]] = set()

    def refresh(self) -> Pair | None:
        """Read the pair of record now (as often as the pairs' cache allows) and start its series
        at 0: called every --refresh seconds, so they exist (and are scraped at 0) once the rollout
        is in shadow, before its first mirrored request, whose count increase() would else miss."""
        pair = self.pairs()
        if pair is not None:
            self._initialise(pair)
        return pair

    def close(self) -> None:
        self._calls.shutdown(wait=True)
        self._client.close()
        if self._log is not None:
            self._log.close()

    # -- one request ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """Compare one mirrored request; return its log entry (also written to the request log).
        Never raises: whatever goes wrong drops the request with its reason."""
        with self._lock:
            self._seq += 1
            entry: dict[str, Any] = {"seq": self._seq, "method": method, "path": path}
        self.metrics.received.labels(self.namespace, self.rollout).inc()
        try:
            return self._handle(entry, method, path, headers, body)
        except _Dropped as dropped:
            return self._drop(entry, dropped.reason, dropped.message)
        except Exception as exc:  # a bug or an unforeseen failure: counted, never raised to the server
            return self._drop(entry, "error", f"{type(exc).__name__}: {exc}")

    def refuse(self, method: str, path: str, why: str) -> dict[str, Any]:
        """A mirrored request the server would not read (its body): received, dropped as bad_request."""
        with self._lock:
            self._seq += 1
            entry: dict[str, Any] = {"seq": self._seq, "method": method, "path": path}
        self.metrics.received.labels(self.namespace, self.rollout).inc()
        return self._drop(entry, "bad_request", why)

    def _handle(
        self, entry: dict[str, Any], method: str, path: str, headers: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        pair = self.pairs()
        if pair is None:
            raise _Dropped("not_shadowing", "no shadow of record")
        refused = path_refusal(path)
        if refused is not None:
            raise _Dropped("bad_request", refused)
        incumbent, candidate = self._address(pair.incumbent, pair), self._address(pair.candidate, pair)
        with self._slot(pair) as admitted:
            if not admitted:
                raise _Dropped("concurrency", f"{pair.max_concurrency} comparisons in flight")
            admitted_at = admit(self._bucket_for(pair), self._random, pair.noise_sample)
            if admitted_at is None:
                raise _Dropped("incumbent_rate", f"maxIncumbentRPS {pair.max_incumbent_rps} reached")
            taken, noise = admitted_at
            # When the incumbent's calls were let through (the bucket's clock, tokens): the log
            # alone shows the cap held (tests/support/comparator_log.py).
            entry["takes"] = [[taken, 2 if noise else 1]]
            self._initialise(pair)
            return self._compare(pair, entry, (incumbent, candidate), method, path, headers, body, noise=noise)

    def _address(self, model: ModelRef, pair: Pair) -> ModelAddress:
        found = self.addresses(self.urls(model, pair.namespace))
        if isinstance(found, str):
            raise _Dropped("address_refused", found)
        return found

    def _compare(
        self,
        pair: Pair,
        entry: dict[str, Any],
        where: tuple[ModelAddress, ModelAddress],
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        *,
        noise: bool,
    ) -> dict[str, Any]:
        forwarded = {k: v for k, v in headers.items() if k.lower() in FORWARDED}
        forwarded[SHADOW_HEADER] = pair.rollout

        def call(address: ModelAddress) -> Answer:
            return self._call(address, pair, method, path, forwarded, body)

        incumbent_at, candidate_at = where
        candidate = self._calls.submit(call, candidate_at)
        again = self._calls.submit(call, incumbent_at) if noise else None
        try:
            incumbent = call(incumbent_at)
        finally:
            # Every call ends before the slot is given back, whatever happened to the others.
            wait([f for f in (candidate, again) if f is not None])
        cand = candidate.result()
        second = again.result() if again is not None else None
        entry["model"], entry["reference"] = pair.candidate.name, pair.incumbent.name
        entry["outcome"], entry["why"] = self._count(pair, "candidate", pair.candidate, incumbent, cand)
        if incumbent.error is None and cand.error is None:
            labels = (pair.namespace, pair.rollout, pair.candidate.name, pair.incumbent.name)
            self.metrics.latency.labels(*labels).observe(cand.seconds - incumbent.seconds)
        if second is not None:
            entry["noise"], entry["noise_why"] = self._count(pair, "incumbent", pair.incumbent, incumbent, second)
        return self._write(entry)

    def _count(self, pair: Pair, variant: str, model: ModelRef, reference: Answer, judged: Answer) -> tuple[str, str]:
        if reference.error is not None:
            outcome, why = "incumbent_error", reference.error
        elif judged.error is not None:
            outcome, why = ("candidate_error" if variant == "candidate" else "incumbent_error"), judged.error
        else:
            agreement = compare(pair.comparison, reference.body, judged.body)
            outcome, why = ("agree" if agreement.agree else "disagree"), agreement.why
        self.metrics.comparisons.labels(
            pair.namespace, pair.rollout, model.name, pair.incumbent.name, variant, outcome
        ).inc()
        return outcome, why

    def _call(
        self, address: ModelAddress, pair: Pair, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> Answer:
        """One model's answer; a transport failure, non-2xx, non-JSON, an answer over
        MAX_ANSWER_BYTES or past `timeout` is its error. `timeout` bounds the whole call: httpx's
        bounds each phase (connect, each read), so a model trickling its answer is cut off at the
        first chunk past the deadline (it waits at most one more read timeout for it). Anything
        else raised (a bug, an invalid header) is not the model's: it drops the request."""
        url = address.for_path(path)
        extensions = {"sni_hostname": address.server_name} if url.scheme == "https" else None
        started = time.perf_counter()
        late = f"timeout after {pair.timeout:g}s"
        try:
            with self._client.stream(
                method,
                url,
                headers={**headers, "Host": address.host},
                content=body,
                timeout=pair.timeout,
                extensions=extensions,
            ) as response:
                if not 200 <= response.status_code < 300:
                    return Answer(error=f"HTTP {response.status_code}", seconds=time.perf_counter() - started)
                content, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        return Answer(error=f"answer over {MAX_ANSWER_BYTES} bytes")
                    if time.perf_counter() - started > pair.timeout:
                        return Answer(error=f"{late} (the answer still arriving)")
                    content.append(chunk)
        except httpx.TimeoutException:
            return Answer(error=late)
        except httpx.LocalProtocolError:
            raise  # what we would send is invalid (a header a stranger sent): not the model's error
        except httpx.HTTPError as exc:
            return Answer(error=f"{type(exc).__name__}: {exc}"[:200])
        seconds = time.perf_counter() - started
        if seconds > pair.timeout:
            return Answer(error=late, seconds=seconds)
        try:
            return Answer(body=json.loads(b"".join(content)), seconds=seconds)
        except ValueError:
            return Answer(error="answer is not JSON", seconds=seconds)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _bucket_for(self, pair: Pair) -> TokenBucket:
        """The incumbent's cap; a new cap (the spec changed) starts a new bucket."""
        with self._lock:
            if self._bucket is None or self._bucket.rate != pair.max_incumbent_rps:
                self._bucket = TokenBucket(pair.max_incumbent_rps)
            return self._bucket

    def _initialise(self, pair: Pair) -> None:
        """Every outcome series of a pair at 0 before its first increment (see __init__)."""
        key = (pair.incumbent.name, pair.candidate.name)
        with self._lock:
            if key in self._seen_pairs:
                return
            self._seen_pairs.add(key)
        for model, variant in ((pair.candidate, "candidate"), (pair.incumbent, "incumbent")):
            for outcome in ("agree", "disagree", "candidate_error", "incumbent_error"):
                self.metrics.comparisons.labels(
                    pair.namespace, pair.rollout, model.name, pair.incumbent.name, variant, outcome
                )

    def _slot(self, pair: Pair) -> _Slot:
        return _Slot(self, pair.max_concurrency)

    def _drop(self, entry: dict[str, Any], reason: str, why: str) -> dict[str, Any]:
        self.metrics.dropped.labels(self.namespace, self.rollout, reason).inc()
        entry["outcome"], entry["why"] = f"dropped:{reason}", why[:200]
        return self._write(entry)

    def _write(self, entry: dict[str, Any]) -> dict[str, Any]:
        if self._log is not None:
            with self._log_lock:
                self._log.write(json.dumps(entry, sort_keys=True) + "\n")
                self._log.flush()
        return entry


class _Slot:
    """One of `limit` comparisons in flight, taken without waiting (admitted False when full)."""

    def __init__(self, comparator: Comparator, limit: int) -> None:
        self.comparator, self.limit, self.admitted = comparator, limit, False

    def __enter__(self) -> bool:
        c = self.comparator
        with c._lock:
            if c._in_flight < self.limit:
                c._in_flight += 1
                self.admitted = True
        return self.admitted

    def __exit__(self, *_: object) -> None:
        if self.admitted:
            with self.comparator._lock:
                self.comparator._in_flight -= 1


def serve(comparator: Comparator, *, host: str, port: int) -> Server:
    """The HTTP server the mirror is sent to: every method, every path; 204, never a model's answer."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            refused = self._refusal()
            if refused is not None:
                # Counted and logged like any dropped request; the body is never read, so the
                # connection cannot be reused.
                code, why = refused
                comparator.refuse(self.command, self.path, why)
                self.send_response(code)
                self.send_header("content-length", "0")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                return
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            comparator.handle(self.command, self.path, dict(self.headers.items()), body)
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def _refusal(self) -> tuple[int, str] | None:
            """A body this server will not read: chunked (411: a mirror of a request with a body
            comes with its Content-Length), a length that is no number, or over MAX_REQUEST_BYTES."""
            if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                return 411, "chunked body: a Content-Length is needed"
            try:
                length = int(self.headers.get("content-length") or 0)
            except ValueError:
                return 400, "Content-Length is not a number"
            if length < 0:
                return 400, "Content-Length is negative"
            if length > MAX_REQUEST_BYTES:
                return 413, f"body of {length} bytes, over {MAX_REQUEST_BYTES}"
            return None

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Server((host, port), Handler)


class Server(ThreadingHTTPServer):
    """A threading HTTP server whose listen backlog holds a burst: socketserver's default of 5
    connections waiting to be accepted drops the rest of a burst's SYNs, which the kernel retries
    after 1, 3, 7, 15, 31 s; 80 mirrored requests at once on a busy machine then arrive up to a
    minute late (a late comparison times out as the model's error)."""

    request_queue_size = 4096  # Linux's default net.core.somaxconn, which caps what listen() takes
    daemon_threads = True


def iter_log(path: Path) -> Iterator[dict[str, Any]]:
    """The request log's entries (tests and the e2e suite read it)."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
