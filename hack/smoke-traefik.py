"""Smoke check by hand (not a test): does Traefik's kubernetesGateway provider route by an
HTTPRoute's weights against the local plane, with backends inside a network namespace?

    sudo? no: run as root from the repository root:
    .venv/bin/python hack/smoke-traefik.py [--requests 1000] [--keep]

Starts a local plane (etcd + kube-apiserver), installs the Gateway API v1.4.1 standard CRDs,
creates a network namespace with two addresses, two HTTP backends listening on them (sockets of
this process, created inside the namespace), Services + EndpointSlices pointing at them, a
GatewayClass/Gateway/HTTPRoute, starts Traefik inside the namespace, and sends requests through
its entry point (host 127.0.0.1 -> relay -> namespace). Prints what it saw; cleans up everything.
All traffic is on loopback or inside the namespace.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client, config

from tests.support.controlplane import running_control_plane
from tests.support.gatewayapi import install_gateway_api_crds, make_httproute
from tests.support.netns import network_namespace
from tests.support.traefik import Traefik, gateway, gateway_class, service_with_endpoints

G, V = "gateway.networking.k8s.io", "v1"
NS = "default"
NODELAY = True


def backend(ns: Any, address: str, name: str, hits: dict[str, int]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body are two writes: without TCP_NODELAY the second waits for Traefik's
        # delayed ACK (40 ms per request; the first run here: 1000 requests in 47 s).
        disable_nagle_algorithm = NODELAY

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            hits[name] = hits.get(name, 0) + 1
            body = json.dumps({"model": name, "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((address, 8080), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = ns.listen(address, 8080)
    server.server_address = server.socket.getsockname()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def send(url_port: int, n: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=10)
    for _ in range(n):
        conn.request("POST", "/predict", body=b"{}", headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        key = json.loads(data)["model"] if response.status == 200 else f"HTTP {response.status}"
        seen[key] = seen.get(key, 0) + 1
    conn.close()
    return seen


def within(count: int, n: int, p: float, z: float = 4.0) -> bool:
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= z * sd


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the plane's directory")
    parser.add_argument("--nagle", action="store_true", help="backends without TCP_NODELAY (to compare)")
    args = parser.parse_args()
    global NODELAY
    NODELAY = not args.nagle
    ok = True
    with running_control_plane(keep=args.keep) as plane, network_namespace() as ns:
        print(f"plane {plane.url} up in {plane.start_seconds:.1f}s, workdir {plane.workdir}")
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        began = time.monotonic()
        names = install_gateway_api_crds(api)
        print(f"Gateway API CRDs: {len(names)} established in {time.monotonic() - began:.1f}s: {names}")
        a, b = ns.add_address(), ns.add_address()
        print(f"namespace {ns.name}: model-a at {a}:8080, model-b at {b}:8080")
        hits: dict[str, int] = {}
        servers = [backend(ns, a, "model-a", hits), backend(ns, b, "model-b", hits)]
        core, disc, custom = client.CoreV1Api(api), client.DiscoveryV1Api(api), client.CustomObjectsApi(api)
        for name, address in (("model-a", a), ("model-b", b)):
            svc, eps = service_with_endpoints(name, [address])
            core.create_namespaced_service(NS, svc)
            disc.create_namespaced_endpoint_slice(NS, eps)
        custom.create_cluster_custom_object(G, V, "gatewayclasses", gateway_class())
        custom.create_namespaced_custom_object(G, V, NS, "gateways", gateway())
        custom.create_namespaced_custom_object(
            G, V, NS, "httproutes", make_httproute("models", [("model-a", 80), ("model-b", 20)])
        )

        workdir = Path(tempfile.mkdtemp(prefix="modelrollout-traefik-"))
        traefik = Traefik(ns=ns, plane=plane, workdir=workdir)
        began = time.monotonic()
        try:
            traefik.start()
            print(
                f"traefik up (ping 200) in {time.monotonic() - began:.1f}s; entry {traefik.url}; log {traefik.log_file}"
            )
            # Status written by Traefik.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                route = custom.get_namespaced_custom_object(G, V, NS, "httproutes", "models")
                parents = (route.get("status") or {}).get("parents") or []
                conds = {c["type"]: c["status"] for p in parents for c in p.get("conditions", [])}
                if conds.get("Accepted") == "True" and conds.get("ResolvedRefs") == "True":
                    break
                time.sleep(0.5)
            gc = custom.get_cluster_custom_object(G, V, "gatewayclasses", "traefik")
            gw = custom.get_namespaced_custom_object(G, V, NS, "gateways", "models-gateway")
            print(
                "GatewayClass conditions:",
                [(c["type"], c["status"], c["reason"]) for c in gc.get("status", {}).get("conditions", [])],
            )
            print(
                "Gateway conditions:",
                [(c["type"], c["status"], c["reason"]) for c in gw.get("status", {}).get("conditions", [])],
            )
            print(
                "HTTPRoute parent conditions:",
                [(c["type"], c["status"], c["reason"]) for p in parents for c in p.get("conditions", [])],
            )
            port = traefik.entry.port  # type: ignore[union-attr]
            # Until the first request is routed (the route may be applied a moment after the status).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and set(send(port, 1)) - {"model-a", "model-b"}:
                time.sleep(0.3)
            for weights in ((80, 20), (0, 100), (50, 50), (100, 0)):
                route = custom.get_namespaced_custom_object(G, V, NS, "httproutes", "models")
                route["spec"]["rules"][0]["backendRefs"][0]["weight"] = weights[0]
                route["spec"]["rules"][0]["backendRefs"][1]["weight"] = weights[1]
                written = time.monotonic()
                custom.replace_namespaced_custom_object(G, V, NS, "httproutes", "models", route)
                # How long until the data plane follows: poll single requests until one backend's
                # share is compatible (for 0/100: until the first request hits only the 100 side).
                if 0 in weights:
                    only = "model-a" if weights[1] == 0 else "model-b"
                    streak = 0
                    while streak < 20 and time.monotonic() - written < 30:
                        streak = streak + 1 if send(port, 1).get(only) else 0
                    print(
                        f"weights {weights}: 20 requests in a row to {only} {time.monotonic() - written:.2f}s after the write"
                    )
                else:
                    time.sleep(1.0)
                began = time.monotonic()
                seen = send(port, args.requests)
                took = time.monotonic() - began
                n = args.requests
                pa = weights[0] / sum(weights)
                good = (
                    within(seen.get("model-a", 0), n, pa)
                    and sum(seen.values()) == n
                    and set(seen) <= {"model-a", "model-b"}
                )
                if pa in (0.0, 1.0):
                    good = good and seen.get("model-a" if pa == 0 else "model-b", 0) == 0
                ok &= good
                print(
                    f"weights {weights}: {n} requests in {took:.1f}s -> {seen} {'OK' if good else 'OUTSIDE TOLERANCE'}"
                )
            print("backend hit counters:", hits)
        finally:
            traefik.stop()
            for s in servers:
                s.shutdown()
                s.server_close()
            print("traefik log (last 40 lines):")
            print("\n".join(traefik.log_file.read_text().splitlines()[-40:]) if traefik.log_file.exists() else "(none)")
            print(f"traefik workdir kept: {workdir}")
    print("namespace deleted; plane stopped")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
