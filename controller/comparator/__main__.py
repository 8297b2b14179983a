"""modelrollout-comparator: settings and wiring of one rollout's comparator (service.py does the work)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from controller.comparator.service import Comparator, ModelUrls, RolloutPairs, serve
from controller.kube.config import api_client
from controller.kube.rollouts import Rollouts
from controller.metrics.address import AddressPolicy, api_server_urls


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="modelrollout-comparator", description="Compare mirrored requests' predictions.")
    p.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig path (default: in-cluster)")
    p.add_argument("--namespace", default=env("POD_NAMESPACE", "default"), help="the rollout's namespace")
    p.add_argument("--rollout", required=True, help="the ModelRollout whose shadow this comparator serves")
    p.add_argument("--host", default="0.0.0.0", help="address the mirror is sent to")
    p.add_argument("--port", type=int, default=8080, help="port the mirror is sent to (spec.shadow.comparator.port)")
    p.add_argument("--metrics-port", type=int, default=9090, help="port of /metrics")
    p.add_argument(
        "--model-url-template",
        default="http://{service}.{namespace}.svc.cluster.local:{port}",
        help="a model's base URL from its Service, port and namespace",
    )
    p.add_argument("--model-port", type=int, default=8080, help="a model's port when its backend names none")
    p.add_argument(
        "--model", action="append", default=[], metavar="NAME=URL", help="a model's base URL by name (repeatable)"
    )
    p.add_argument(
        "--allow-loopback-addresses",
        action="store_true",
        help="let model URLs be loopback (local development and tests only, as the controller's flag)",
    )
    p.add_argument("--refresh", type=float, default=2.0, help="seconds between reads of the rollout")
    p.add_argument("--request-log", type=Path, help="append one JSON line per mirrored request received")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    api = api_client(args.kubeconfig)
    rollouts = Rollouts(api)
    # The controller's own policy on addresses a rollout names (docs/operations.md): a model's
    # Service comes from the rollout, so its address is checked the same way.
    policy = AddressPolicy.for_api_server(
        api_server_urls(api.configuration.host), allow_loopback=args.allow_loopback_addresses
    )
    overrides = dict(item.split("=", 1) for item in args.model)
    registry = CollectorRegistry()
    comparator = Comparator(
        namespace=args.namespace,
        rollout=args.rollout,
        pairs=RolloutPairs(lambda: rollouts.get(args.namespace, args.rollout), refresh=args.refresh),
        urls=ModelUrls(args.model_url_template, port=args.model_port, overrides=overrides),
        policy=policy,
        registry=registry,
        request_log=args.request_log,
    )
    start_http_server(args.metrics_port, addr=args.host, registry=registry)
    server = serve(comparator, host=args.host, port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="comparator-http", daemon=True).start()

    def refresh() -> None:
        # Reads the rollout even when nothing is mirrored yet: its series start at 0 in time.
        while not stop.wait(args.refresh):
            comparator.refresh()

    comparator.refresh()
    threading.Thread(target=refresh, name="comparator-refresh", daemon=True).start()
    print(f"comparator for {args.namespace}/{args.rollout} on port {server.server_address[1]}", flush=True)
    stop.wait()
    server.shutdown()
    comparator.close()


if __name__ == "__main__":
    main()
