"""modelrollout-controller: the operator process (settings, logs, wiring; the work is elsewhere)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
from datetime import UTC, datetime, timedelta

import structlog

from controller import logging as logs
from controller.api.duration import parse_duration
from controller.api.models import MetricBackend, PrometheusSource
from controller.core.clock import SystemClock
from controller.kube.config import api_client
from controller.kube.events import EventRecorder
from controller.kube.lease import LeaderElector, LeaseConfig, ShardGuard
from controller.kube.objects import Objects
from controller.kube.rollouts import Rollouts
from controller.kube.secrets import Secrets
from controller.manager import Manager, ManagerSettings
from controller.metrics.address import AddressPolicy, api_server_urls
from controller.metrics.batch import QueryBatches
from controller.metrics.registry import MetricProviders
from controller.reconciler import Reconciler
from controller.sharding import Holder, lease_name
from controller.telemetry import Telemetry
from controller.webhooks.dispatcher import Webhooks
from controller.webhooks.sender import Sender

log = structlog.get_logger("controller")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="modelrollout-controller", description="Progressive delivery of ML models.")
    parser.add_argument("--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig path (default: in-cluster)")
    parser.add_argument("--namespace", action="append", default=[], help="watch only these namespaces (repeatable)")
    parser.add_argument("--workers", type=int, default=4, help="concurrent reconciles (default 4)")
    parser.add_argument("--health-port", type=int, default=8080, help="port of /healthz, /readyz, /metrics (0: any)")
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "info"))
    parser.add_argument(
        "--prometheus-url",
        default=env("MODELROLLOUT_PROMETHEUS_URL"),
        help="default Prometheus for rollouts that name none",
    )
    parser.add_argument("--metric-timeout", default="10s", help="default per-query timeout")
    parser.add_argument(
        "--metric-batch-period",
        type=float,
        default=10.0,
        help="seconds: builtins judged on the analysis window are asked once per period for every "
        "rollout, evaluated at the period's start (0: each rollout asks its own; default 10)",
    )
    parser.add_argument(
        "--allow-loopback-metrics",
        "--allow-loopback-addresses",
        dest="allow_loopback_metrics",
        action="store_true",
        default=env("MODELROLLOUT_ALLOW_LOOPBACK_METRICS", "") in ("1", "true"),
        help="let rollouts' addresses (spec.provider, spec.webhooks) be loopback (local testing only; never in a cluster)",
    )
    parser.add_argument("--webhook-workers", type=int, default=4, help="threads calling webhooks (default 4)")
    parser.add_argument("--watch-timeout", type=int, default=60, help="seconds before a watch is re-opened")
    parser.add_argument(
        "--resync-period",
        type=float,
        default=600.0,
        help="seconds between two reconciles of every cached rollout, from the cache (0: never; default 600)",
    )
    parser.add_argument(
        "--evidence-checkpoint",
        default=env("MODELROLLOUT_EVIDENCE_CHECKPOINT", "0s"),
        help="an analysis that changes no decision (only counts, messages, times) is written at most this "
        "often, e.g. 5m; decisions are always written at once (0s: every analysis; default 0s; docs/operations.md, Evidence checkpoints)",
    )
    parser.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lease-namespace", default=env("POD_NAMESPACE", "default"))
    parser.add_argument("--lease-name", default="modelrollout-controller")
    parser.add_argument(
        "--shards", type=int, default=1, help="controller shards: each owns the rollouts hashed to it (default 1)"
    )
    parser.add_argument("--shard", type=int, default=0, help="this process's shard, 0-based, below --shards")
    parser.add_argument("--identity", default=env("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}")
    args = parser.parse_args(argv)
    if args.shards < 1 or not 0 <= args.shard < args.shards:
        parser.error(
            f"--shard must be in [0, --shards) and --shards at least 1; got --shard {args.shard} --shards {args.shards}"
        )
    try:
        text = args.evidence_checkpoint.strip()
        args.evidence_checkpoint = parse_duration(text) if text not in ("", "0") else timedelta(0)
    except ValueError as exc:
        parser.error(f"--evidence-checkpoint: {exc}")
    if args.shards > 1 and not args.leader_elect:
        # Without Leases nothing keeps two shard counts from writing the same rollout.
        parser.error("--shards above 1 needs --leader-elect")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_level)
    api = api_client(args.kubeconfig)
    # The audit log then tells which replica wrote what.
    api.user_agent = f"modelrollout-controller/{args.identity}"
    telemetry = Telemetry()
    elector, guard = None, None
    if args.leader_elect:
        lease = LeaseConfig(namespace=args.lease_namespace, name=lease_name(args.lease_name, args.shards, args.shard))
        me = Holder(
            shards=args.shards, started=datetime.now(UTC).isoformat(timespec="microseconds"), identity=args.identity
        )
        guard = ShardGuard(api, lease, args.lease_name, me)
        elector = LeaderElector(api, lease, args.identity, annotations=guard.annotations())
    rollouts, objects = Rollouts(api), Objects(api)
    policy = AddressPolicy.for_api_server(
        api_server_urls(api.configuration.host), allow_loopback=args.allow_loopback_metrics
    )
    webhooks = Webhooks(
        sender=Sender(policy), secrets=Secrets(api), clock=SystemClock(), telemetry=telemetry,
        workers=args.webhook_workers,
    )  # fmt: skip
    reconciler = Reconciler(
        rollouts=rollouts,
        objects=objects,
        events=EventRecorder(api, host=args.identity),
        providers=MetricProviders(
            secrets=Secrets(api),
            default=_default_provider(args),
            address_policy=policy,
            batches=QueryBatches(period=args.metric_batch_period) if args.metric_batch_period > 0 else None,
        ),
        clock=SystemClock(),
        telemetry=telemetry,
        webhooks=webhooks,
        evidence_checkpoint=args.evidence_checkpoint,
    )
    manager = Manager(
        rollouts=rollouts,
        reconciler=reconciler,
        telemetry=telemetry,
        elector=elector,
        guard=guard,
        settings=ManagerSettings(
            namespaces=args.namespace,
            workers=args.workers,
            health_port=args.health_port,
            watch_timeout=args.watch_timeout,
            resync=args.resync_period,
            shards=args.shards,
            shard=args.shard,
        ),
    )
    # The routed objects are read from informers too, started on a router's first read.
    objects.cache(namespaces=args.namespace, watch_timeout=args.watch_timeout, stop=manager.stop)
    reconciler.may_write = manager.may_write
    webhooks.wake = manager.queue.add
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: manager.stop.set())
    log.info(
        f"starting: shard {args.shard} of {args.shards}",
        identity=args.identity,
        namespaces=args.namespace or "all",
        leader_elect=args.leader_elect,
        shard=args.shard,
        shards=args.shards,
        lease=elector.config.name if elector is not None else None,
        evidence_checkpoint=f"{args.evidence_checkpoint.total_seconds():g}s" if args.evidence_checkpoint else "0s",
    )
    code = manager.run()
    webhooks.close()
    log.info("stopped", exit_code=code)
    return code


def _default_provider(args: argparse.Namespace) -> MetricBackend | None:
    """For rollouts without spec.provider: the operator's own setting, so built unchecked."""
    url, timeout = args.prometheus_url, args.metric_timeout
    return MetricBackend(prometheus=PrometheusSource.model_construct(address=url, timeout=timeout)) if url else None
