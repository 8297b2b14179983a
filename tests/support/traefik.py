"""Traefik v3 as the test world's Gateway API data plane: its `kubernetesGateway` provider.

Traefik is built from the Go module proxy by `hack/build-cluster.sh traefik` (cached per version
under ~/.cache/modelrollout/traefik/<version>/bin). It runs inside the test's network namespace
(tests/support/netns.py), where the model servers listen on the namespace's addresses, which the
Services' EndpointSlices name. Inside, it reaches the API server through a relay on the
namespace's 127.0.0.1 (the plane listens on the host's loopback only; the API server's
certificate is for 127.0.0.1, so TLS is verified as usual); the load on the host reaches
Traefik's entry point through `NetNS.expose()`.

What Traefik needs from the API server (Gateway API v1.4 standard channel CRDs installed):
- a GatewayClass whose `controllerName` is `traefik.io/gateway-controller`;
- a Gateway of that class whose HTTP listener's `port` is the port of one of Traefik's entry
  points (here `web`, 8000 by default): Traefik maps listeners to entry points by port;
- HTTPRoutes with that Gateway as parentRef, and for each backendRef a Service whose port has a
  `name` (Traefik matches the EndpointSlice port by the Service port's name) and EndpointSlices
  (label `kubernetes.io/service-name`) whose endpoints have `conditions.ready: true`; Traefik
  balances a rule's backendRefs by their weights (weighted round robin), then each Service's
  ready endpoints.
Traefik writes the status of the GatewayClass, Gateway and HTTPRoute (Accepted, ResolvedRefs).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from tests.support.controlplane import CACHE, REPO, ControlPlane, stop_process
from tests.support.netns import NetNS, Relay

TRAEFIK_VERSION = os.environ.get("TRAEFIK_VERSION", "v3.6.12")
CONTROLLER_NAME = "traefik.io/gateway-controller"
GATEWAY_GROUP = "gateway.networking.k8s.io"


def bin_dir() -> Path:
    return CACHE / "traefik" / TRAEFIK_VERSION / "bin"


def ensure_binary() -> Path:
    """Build Traefik if this machine has none yet (a one-time cost, about 9 min on 2 cores)."""
    binary = bin_dir() / "traefik"
    if not binary.is_file():
        subprocess.run(
            ["bash", str(REPO / "hack" / "build-cluster.sh"), "traefik"],
            check=True,
            env={**os.environ, "TRAEFIK_VERSION": TRAEFIK_VERSION},
            stdout=subprocess.DEVNULL,
        )
    return binary


def static_config(
    *,
    api_url: str,
    token: str,
    ca_file: Path,
    entry_points: dict[str, int],
    ping_port: int,
    namespaces: list[str] | None = None,
    access_log: Path | None = None,
) -> dict[str, Any]:
    """Traefik's static configuration: HTTP entry points (name -> port; a Gateway listener is
    served by the entry point with its port), ping and the API, the Gateway API provider."""
    if "traefik" in entry_points:
        raise ValueError("entry point 'traefik' is Traefik's own (ping, API)")
    provider: dict[str, Any] = {
        "endpoint": api_url,
        "token": token,
        "certAuthFilePath": str(ca_file),
        # No throttle of the provider's own refreshes (its default, spelled out).
        "throttleDuration": "0s",
    }
    if namespaces:
        provider["namespaces"] = namespaces
    config: dict[str, Any] = {
        # No phoning home: Traefik checks for a new version over the Internet by default.
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            **{name: {"address": f":{port}"} for name, port in entry_points.items()},
            "traefik": {"address": f"127.0.0.1:{ping_port}"},
        },
        "ping": {"entryPoint": "traefik"},
        # Traefik's API on the `traefik` entry point (the namespace's loopback only): tests read
        # the weights Traefik has applied from /api/http/services (WeightTimeline).
        "api": {"insecure": True, "dashboard": False},
        # Traefik applies a provider's new configuration at most once per 2 s by default
        # (providersThrottleDuration): a weight written by the controller would reach the data
        # plane up to 2 s late, and "0 requests after 0%" would need a grace period. 0: at once.
        "providers": {"providersThrottleDuration": "0s", "kubernetesGateway": provider},
        "log": {"level": "INFO"},
    }
    if access_log is not None:
        config["accessLog"] = {"filePath": str(access_log), "format": "json"}
    return config


@dataclass
class Traefik:
    """A Traefik process inside `ns`, watching the plane's Gateway API objects."""

    ns: NetNS
    plane: ControlPlane
    workdir: Path
    # HTTP entry points, name -> port inside the namespace: by default one, `web` on 8000. The e2e
    # suite gives each scenario its own (and its Gateway a listener on that port).
    entry_points: dict[str, int] = field(default_factory=lambda: {"web": 8000})
    ping_port: int = 8082
    namespaces: list[str] | None = None
    access_log: bool = True
    proc: subprocess.Popen[bytes] | None = None
    api_relay: Relay | None = None
    entry: Relay | None = None  # the first entry point's relay
    entries: dict[str, Relay] = field(default_factory=dict)  # entry point name -> its relay on the host
    _extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The first entry point, as the host's load generator reaches it."""
        assert self.entry is not None, "start() first"
        return f"http://127.0.0.1:{self.entry.port}"

    def url_of(self, entry_point: str) -> str:
        """An entry point, as the host reaches it (a relay on the host's 127.0.0.1)."""
        return f"http://127.0.0.1:{self.entries[entry_point].port}"

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    @property
    def log_file(self) -> Path:
        return self.workdir / "traefik.log"

    @property
    def access_log_file(self) -> Path:
        return self.workdir / "traefik-access.log"

    def start(self, *, timeout: float = 60.0) -> Traefik:
        binary = ensure_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_relay = self.ns.import_port(self.plane.apiserver_port)
        config = static_config(
            api_url=f"https://127.0.0.1:{self.api_relay.port}",
            token=self.plane.token,
            ca_file=self.plane.ca_file,
            entry_points=self.entry_points,
            ping_port=self.ping_port,
            namespaces=self.namespaces,
            access_log=self.access_log_file if self.access_log else None,
        )
        path = self.workdir / "traefik.yaml"
        # It holds the admin token: readable by us only from the moment it exists.
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(yaml.safe_dump(config))
        log = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self.proc = subprocess.Popen(
                self.ns.command([str(binary), f"--configFile={path}", *self._extra]),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(log)
        self._wait_ping(timeout)
        self.entries = {name: self.ns.expose("127.0.0.1", port) for name, port in self.entry_points.items()}
        self.entry = next(iter(self.entries.values()))
        return self

    def _wait_ping(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "not started"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"traefik exited with {self.proc.returncode}:\n{self.log_file.read_text()[-3000:]}")
            try:
                status = self.get_inside("127.0.0.1", self.ping_port, "/ping")[0]
                if status == 200:
                    return
                last = f"ping answered {status}"
            except OSError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"traefik not ready after {timeout}s: {last}")

    def get_inside(self, address: str, port: int, path: str) -> tuple[int, bytes]:
        """GET http://address:port/path from inside the namespace (Traefik's own endpoints)."""
        conn = http.client.HTTPConnection(address, port, timeout=5)
        conn.sock = self.ns.connect(address, port, timeout=5)
        conn.sock.settimeout(5)  # the connection's timeout applies only to sockets it opens itself
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        for relay in (*self.entries.values(), self.api_relay):
            if relay is not None:
                relay.stop()


# -- the weights Traefik applied -------------------------------------------------------------------

_CHILD = re.compile(r"^(?P<rest>.+)-http-(?P<port>\d+)(@kubernetesgateway)?$")


def applied_weights(services: list[dict[str, Any]], namespace: str, route: str, rule: int = 0) -> dict[str, int] | None:
    """The weights of rule `rule` of HTTPRoute `namespace/route` in Traefik's runtime configuration
    (the JSON list of GET /api/http/services), by backendRef name; None when Traefik has no router
    for it (yet).

    Naming, from Traefik v3.6's gateway provider (httproute.go): the rule's weighted service is
    `httproute-<ns>-<route>-gw-<gw ns>-<gw>-ep-<entry point>-<rule>-<hash>-wrr@kubernetesgateway`,
    each child `<ns>-<backendRef name>-http-<port>` in backendRef order, with its weight (0 kept).
    A backendRef Traefik could not resolve stays a child with `status: 500`.
    """
    prefix = f"httproute-{namespace}-{route}-gw-"
    for service in services:
        name = service.get("name", "")
        if not (name.startswith(prefix) and name.endswith("-wrr@kubernetesgateway")):
            continue
        key = name[len(prefix) :]
        # <gw ns>-<gw>-ep-<entry point>-<rule>-<10 hex>-wrr@kubernetesgateway
        parts = key.rsplit("-", 3)
        if len(parts) != 4 or parts[1] != str(rule):
            continue
        weights: dict[str, int] = {}
        for child in (service.get("weighted") or {}).get("services") or []:
            match = _CHILD.match(child.get("name", ""))
            if match is None or not match.group("rest").startswith(f"{namespace}-"):
                continue
            weights[match.group("rest")[len(namespace) + 1 :]] = int(child.get("weight", 1))
        return weights
    return None


class WeightTimeline:
    """Polls Traefik's API and records when the weights of routes' first rules changed: per route
    the same `timeline` [(time.monotonic(), {backend: weight})] as the stand-in gateway
    (e2e/gateway.py), so the e2e traffic-split check (harness.epochs) reads either. The time is
    when the poll's answer arrived (at most `interval` plus one answer late; the split check
    leaves 0.3 s at each edge). One poller for any number of routes (`timelines`), over one
    kept-alive connection from inside the namespace; `timeline` is the first route's."""

    def __init__(self, traefik: Traefik, namespace: str, routes: str | list[str], *, interval: float = 0.05) -> None:
        self.traefik, self.namespace, self.interval = traefik, namespace, interval
        self.routes = [routes] if isinstance(routes, str) else list(routes)
        self.timelines: dict[str, list[tuple[float, dict[str, int]]]] = {route: [] for route in self.routes}
        self.errors = 0
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name=f"weights-{self.routes[0]}", daemon=True)

    @property
    def timeline(self) -> list[tuple[float, dict[str, int]]]:
        return self.timelines[self.routes[0]]

    def start(self) -> WeightTimeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _services(self) -> list[dict[str, Any]] | None:
        """GET /api/http/services on Traefik's own entry point, reusing one connection."""
        port = self.traefik.ping_port
        for attempt in range(2):  # a kept-alive connection Traefik closed: reconnect once
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                self._conn.sock = self.traefik.ns.connect("127.0.0.1", port, timeout=5)
                self._conn.sock.settimeout(5)  # as in get_inside
            try:
                # All services on one page (the API pages by 100 by default).
                self._conn.request("GET", "/api/http/services?per_page=100000")
                response = self._conn.getresponse()
                body = response.read()
                if response.status != 200:
                    return None
                services: list[dict[str, Any]] = json.loads(body)
                return services
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        return None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    services = self._services()
                except (OSError, ValueError, http.client.HTTPException):
                    self.errors += 1
                    services = None
                seen = time.monotonic()
                for route, timeline in self.timelines.items():
                    weights = applied_weights(services, self.namespace, route) if services is not None else None
                    if weights is not None and (not timeline or timeline[-1][1] != weights):
                        timeline.append((seen, weights))
                self._stop.wait(self.interval)
        finally:
            if self._conn is not None:
                self._conn.close()


# -- objects ------------------------------------------------------------------------------------


def ensure_gateway_class(api: client.ApiClient, name: str = "traefik") -> None:
    """Create Traefik's GatewayClass, unless a test or stack on this plane already did."""
    try:
        client.CustomObjectsApi(api).create_cluster_custom_object(
            GATEWAY_GROUP, "v1", "gatewayclasses", gateway_class(name)
        )
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def set_route_weights(api: client.ApiClient, namespace: str, route: str, weights: list[int]) -> None:
    """Set the weights of an HTTPRoute's first rule's backendRefs, in order (by hand, as a test)."""
    custom = client.CustomObjectsApi(api)
    body = custom.get_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, "httproutes", route)
    for ref, weight in zip(body["spec"]["rules"][0]["backendRefs"], weights, strict=True):
        ref["weight"] = weight
    custom.replace_namespaced_custom_object(GATEWAY_GROUP, "v1", namespace, "httproutes", route, body)


def gateway_class(name: str = "traefik") -> dict[str, Any]:
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": CONTROLLER_NAME},
    }


def gateway(
    name: str = "models-gateway",
    *,
    class_name: str = "traefik",
    port: int = 8000,
    listeners: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A Gateway with HTTP listeners, name -> port (each port = a Traefik entry point's port; by
    default one, `web` on `port`), routes from its own namespace. A route picks its listener by
    `sectionName` in its parentRef."""
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": name},
        "spec": {
            "gatewayClassName": class_name,
            "listeners": [
                {"name": listener, "protocol": "HTTP", "port": listener_port}
                for listener, listener_port in (listeners or {"web": port}).items()
            ],
        },
    }


def service_with_endpoints(
    name: str, addresses: list[str], *, port: int = 8080, target_port: int = 8080
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A selector-less Service (port `port`, named "http") and its EndpointSlice: `addresses`
    (inside the test's namespace) on `target_port`, all ready. What the endpointslice controller
    would write for pods at those addresses."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": port, "targetPort": target_port, "protocol": "TCP"}]},
    }
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": target_port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }
    return service, slice_


# -- backends and load for tests -----------------------------------------------------------------


class InsideBackend:
    """An HTTP server of this process listening on `address`:`port` inside `ns` (e.g. a pod's IP
    that kwok gave and the test added to the namespace): answers every request with
    `{"model": name}` and counts them. Without Nagle: headers and body are two writes, and the
    second would wait for Traefik's delayed ACK (40 ms a request, docs/development.md)."""

    def __init__(self, ns: NetNS, address: str, name: str, *, port: int = 8080) -> None:
        self.name, self.address, self.port = name, address, port
        self.hits = 0
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with backend._lock:
                    backend.hits += 1
                body = json.dumps({"model": backend.name}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer((address, port), Handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.socket.close()
        self.server.socket = ns.listen(address, port)  # created inside the namespace
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"backend-{name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def send(port: int, n: int, path: str = "/predict") -> dict[str, int]:
    """`n` sequential POSTs to 127.0.0.1:`port` (an entry point's relay); answers counted by the
    model that answered, or "HTTP <status>" for an answer that is not 200."""
    seen: dict[str, int] = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(n):
            conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            key = json.loads(data)["model"] if response.status == 200 else f"HTTP {response.status}"
            seen[key] = seen.get(key, 0) + 1
    finally:
        conn.close()
    return seen
