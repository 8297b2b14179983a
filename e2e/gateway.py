"""A stand-in gateway: forwards HTTP requests by the weights of an HTTPRoute's backendRefs.

This is NOT a Gateway API implementation. A real gateway (Envoy Gateway, Istio, Traefik,
...) would run in the cluster; building one here is too heavy for the demo machine, so this
small proxy plays its part for the demo and the end-to-end suite, and only that part:

- it watches one HTTPRoute through the API server (a real watch, re-listed on errors);
- for each request whose path matches a rule's `PathPrefix` (the first rule that matches), it
  picks one of the rule's backendRefs at random in proportion to their `weight` (default 1),
  as the Gateway API specifies; a rule whose weights are all 0 answers 500;
- a backendRef names a Service (and its port); the gateway reads the Service from the API server
  and sends the request to 127.0.0.1:<the port's targetPort>, where the model server listens.
  A backendRef may also name an InferencePool (group inference.networking.k8s.io, the Gateway API
  Inference Extension): the gateway reads the pool and sends the request to
  127.0.0.1:<its first targetPort>, playing the endpoint picker too, with one endpoint per pool
  (a real one picks among the pool's pods by queue depth and KV cache);
  On this one-machine "cluster" loopback plays the pods' network: there is no kube-proxy or
  EndpointSlice controller on the local plane, and EndpointSlices may not point at loopback.
  A backendRef whose Service or port does not exist answers 500, as the Gateway API says;
- it records when it applied which weights (`timeline`), so tests can compare the requests each
  model server saw with the split that was in force, and how many requests it sent each backend
  under each of those weights (`generations()`: no clock involved);
- it passes the request's `X-Region` header (its segment) on to the model server;
- it honours a rule's `RequestMirror` filters (the shadow phase, docs/shadow.md): a copy of a
  matching request goes, with the filter's `percent` (or `fraction`) as its chance, to the
  filter's backendRef (a Service, resolved like the others: the comparator), in the background,
  and its answer is discarded, as the Gateway API says; `mirrored` counts the copies sent and
  `mirror_timeline` records when it applied which mirrors. Only the primary backend's answer
  ever reaches the client.

It lives in e2e/, outside the product package `controller/`.
"""

from __future__ import annotations

import contextlib
import http.client
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes import client, watch

from e2e.models import SEGMENT_HEADER

GROUP, VERSION, PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
POOL_GROUP, POOL_KIND = "inference.networking.k8s.io", "InferencePool"


class Gateway:
    def __init__(self, api: client.ApiClient, namespace: str, route: str, *, seed: int | None = None) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace, self.route = namespace, route
        self.ports: dict[tuple[str, int], int] = {}  # (Service, port) -> loopback port of its targetPort
        self.pools: set[str] = set()  # backendRefs naming an InferencePool, not a Service
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        # (prefixes, [(service, port, weight)], [(mirror service, port, percent)])
        self._rules: list[tuple[list[str], list[tuple[str, int, int]], list[tuple[str, int, float]]]] = []
        self.timeline: list[tuple[float, dict[str, int]]] = []  # (time.monotonic(), weights of the first rule)
        self.mirror_timeline: list[tuple[float, dict[str, float]]] = []  # ... and its mirrors' percent
        self.forwarded: dict[str, int] = {}
        # Requests sent to each backend under each entry of `timeline` (same index).
        self._forwarded_by_generation: list[dict[str, int]] = []
        self.mirrored: dict[str, int] = {}
        self._mirrors = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"gateway-mirror-{route}")
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._local = threading.local()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                code, headers, answer = gateway.forward(
                    "POST", self.path, body, self.headers.get("Content-Type"), self.headers.get(SEGMENT_HEADER)
                )
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._threads = [
            threading.Thread(target=self.server.serve_forever, name=f"gateway-{route}", daemon=True),
            threading.Thread(target=self._watch, name=f"gateway-watch-{route}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if not self._loaded.wait(30):
            raise RuntimeError(f"gateway: HTTPRoute {namespace}/{route} not readable")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the route ----------------------------------------------------------------------------

    def _apply(self, route: dict[str, Any]) -> None:
        rules: list[tuple[list[str], list[tuple[str, int, int]], list[tuple[str, int, float]]]] = []
        for rule in route.get("spec", {}).get("rules", []):
            prefixes = [
                m["path"]["value"]
                for m in rule.get("matches", [{"path": {"type": "PathPrefix", "value": "/"}}])
                if m.get("path", {}).get("type", "PathPrefix") == "PathPrefix"
            ]
            refs = [
                (ref["name"], int(ref.get("port", 0)), int(ref.get("weight", 1))) for ref in rule.get("backendRefs", [])
            ]
            mirrors = [_mirror(f) for f in rule.get("filters") or [] if f.get("type") == "RequestMirror"]
            rules.append((prefixes, refs, mirrors))
            for service, port, _ in mirrors:
                self._resolve(service, port)
            for ref in rule.get("backendRefs", []):
                if ref.get("kind") == POOL_KIND and ref.get("group") == POOL_GROUP:
                    self.pools.add(ref["name"])
                self._resolve(ref["name"], int(ref.get("port", 0)))
        with self._lock:
            self._rules = rules
            first = {name: weight for name, _, weight in rules[0][1]} if rules else {}
            if not self.timeline or self.timeline[-1][1] != first:
                self.timeline.append((time.monotonic(), first))
                self._forwarded_by_generation.append({})
            mirrors = {name: percent for name, _, percent in rules[0][2]} if rules else {}
            if not self.mirror_timeline or self.mirror_timeline[-1][1] != mirrors:
                self.mirror_timeline.append((time.monotonic(), mirrors))
        self._loaded.set()

    def _resolve(self, service: str, port: int) -> None:
        """Where (Service, port) sends requests: the port's targetPort on loopback, if it exists."""
        if service in self.pools:
            try:
                pool = self.custom.get_namespaced_custom_object(
                    POOL_GROUP, "v1", self.namespace, "inferencepools", service
                )
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
                return
            with self._lock:
                self.ports[(service, port)] = int(pool["spec"]["targetPorts"][0]["number"])
            return
        try:
            svc = self.core.read_namespaced_service(service, self.namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            return
        for spec in svc.spec.ports or []:
            if spec.port == port and isinstance(spec.target_port, int):
                with self._lock:
                    self.ports[(service, port)] = spec.target_port

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.route)
                self._apply(obj)
                stream = watch.Watch()
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    field_selector=f"metadata.name={self.route}",
                    resource_version=obj["metadata"]["resourceVersion"],
                    timeout_seconds=5,
                ):
                    if self._stop.is_set():
                        stream.stop()
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._apply(event["object"])
            except Exception:  # the API server restarting, a closed stream: list again
                if self._stop.wait(0.5):
                    return

    def weights(self) -> dict[str, int]:
        with self._lock:
            return {name: weight for name, _, weight in self._rules[0][1]} if self._rules else {}

    def _mirror_copies(self, path: str) -> list[tuple[str, int]]:
        """The mirrors of the rule this request matches that it is copied to (each by its chance)."""
        with self._lock:
            for prefixes, _, mirrors in self._rules:
                if any(path == p or path.startswith(p.rstrip("/") + "/") or p == "/" for p in prefixes):
                    return [(name, port) for name, port, percent in mirrors if self._random.uniform(0, 100) < percent]
        return []

    def _send_mirror(
        self, target: tuple[str, int], method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> None:
        """One mirrored copy: sent, its answer read and discarded (never the client's)."""
        with self._lock:
            port = self.ports.get(target)
            self.mirrored[target[0]] = self.mirrored.get(target[0], 0) + 1
        if port is None:
            return
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            conn.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass  # the mirror's backend down: nothing for the client to see
        finally:
            conn.close()

    # -- requests -----------------------------------------------------------------------------

    def generations(self) -> list[tuple[dict[str, int], dict[str, int]]]:
        """Each set of weights the gateway applied, in order, with the requests it sent each
        backend while they were in force."""
        with self._lock:
            return [(w, dict(sent)) for (_, w), sent in zip(self.timeline, self._forwarded_by_generation, strict=True)]

    def _pick(self, path: str) -> tuple[str, int, int] | None:
        """(Service, port) of the backendRef this request goes to, by weight, and the generation of
        the weights it was picked by; None: no backend."""
        with self._lock:
            generation = len(self.timeline) - 1
            for prefixes, refs, _ in self._rules:
                if any(path == p or path.startswith(p.rstrip("/") + "/") or p == "/" for p in prefixes):
                    total = sum(w for _, _, w in refs)
                    if total <= 0:
                        return None
                    point = self._random.uniform(0, total)
                    for name, port, weight in refs:
                        point -= weight
                        if point < 0 and weight > 0:
                            return name, port, generation
                    return next((name, port, generation) for name, port, weight in reversed(refs) if weight > 0)
        return None

    def forward(
        self, method: str, path: str, body: bytes, content_type: str | None, segment: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        copies = self._mirror_copies(path)
        if copies:
            mirrored = {"Content-Type": content_type or "application/json"}
            if segment is not None:
                mirrored[SEGMENT_HEADER] = segment
            for target in copies:
                with contextlib.suppress(RuntimeError):  # closing: no new copies
                    self._mirrors.submit(self._send_mirror, target, method, path, body, mirrored)
        chosen = self._pick(path)
        if chosen is None:
            return 500, {"Content-Type": "text/plain"}, b"no backend with a weight above 0\n"
        backend, generation = chosen[0], chosen[2]
        picked = (chosen[0], chosen[1])
        with self._lock:
            port = self.ports.get(picked)
        if port is None:  # a Service created after the route: look again
            with contextlib.suppress(client.ApiException):
                self._resolve(*picked)
            with self._lock:
                port = self.ports.get(picked)
        with self._lock:
            if port is not None:
                self.forwarded[backend] = self.forwarded.get(backend, 0) + 1
                sent = self._forwarded_by_generation[generation]
                sent[backend] = sent.get(backend, 0) + 1
        if port is None:  # a backendRef to a Service (or port) that does not exist: the Gateway API says 500
            return 500, {"Content-Type": "text/plain"}, f"backend {backend} not found\n".encode()
        conns: dict[int, http.client.HTTPConnection] = self._local.__dict__.setdefault("conns", {})
        for attempt in range(2):  # a kept-alive connection the server closed: reconnect once
            conn = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conns[port] = conn
            try:
                sent = {"Content-Type": content_type or "application/json"}
                if segment is not None:
                    sent[SEGMENT_HEADER] = segment
                conn.request(method, path, body=body, headers=sent)
                response = conn.getresponse()
                answer = response.read()
                headers = {"Content-Type": response.getheader("Content-Type", "application/json"), "X-Backend": backend}
                return response.status, headers, answer
            except (OSError, http.client.HTTPException):
                conn.close()
                conns.pop(port, None)
                if attempt:
                    return 502, {"Content-Type": "text/plain"}, f"backend {backend} unreachable\n".encode()
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._mirrors.shutdown(wait=True)
        for thread in self._threads:
            thread.join(timeout=10)
        with contextlib.suppress(Exception):
            for conn in self._local.__dict__.get("conns", {}).values():
                conn.close()


def _mirror(f: dict[str, Any]) -> tuple[str, int, float]:
    """A RequestMirror filter's (Service, port, percent): `percent`, else `fraction`, else 100."""
    mirror = f.get("requestMirror") or {}
    ref = mirror.get("backendRef") or {}
    percent: float = 100.0
    if isinstance(mirror.get("percent"), int):
        percent = float(mirror["percent"])
    elif isinstance(mirror.get("fraction"), dict):
        fraction = mirror["fraction"]
        percent = 100.0 * int(fraction.get("numerator", 0)) / int(fraction.get("denominator", 100) or 100)
    return str(ref.get("name", "")), int(ref.get("port", 0)), percent
