"""modelrollout-controller: the operator process."""

from __future__ import annotations

import argparse
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from kubernetes import client, config, watch

from controller import logging as logs
from controller.api import GROUP, PLURAL, VERSION

log = structlog.get_logger("controller")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modelrollout-controller", description="Progressive delivery of ML models.")
    parser.add_argument("--kubeconfig", help="path to a kubeconfig (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument("--namespace", action="append", default=[], help="watch only these namespaces (repeat)")
    parser.add_argument("--health-port", type=int, default=8080, help="port of /healthz, /readyz and /metrics")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path in ("/healthz", "/readyz")
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"ok\n" if ok else b"not found\n")

    def log_message(self, format: str, *args: object) -> None:
        return


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    if args.kubeconfig:
        config.load_kube_config(config_file=args.kubeconfig)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    server = ThreadingHTTPServer(("0.0.0.0", args.health_port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    api = client.CustomObjectsApi()
    log.info("started", port=server.server_address[1], namespaces=args.namespace or "all")
    while not stop.is_set():
        w = watch.Watch()
        for event in w.stream(api.list_cluster_custom_object, GROUP, VERSION, PLURAL, timeout_seconds=5):
            meta = event["object"]["metadata"]
            log.info("observed", event=event["type"], namespace=meta["namespace"], name=meta["name"])
            if stop.is_set():
                w.stop()
    server.shutdown()
    log.info("stopped")
    return 0
