"""The operator process around the reconciler: informers, the work queue, workers, the lease.

Concurrency (written down once, as DESIGN.md asks): the kubernetes client is synchronous, so
we run a bounded pool of worker threads (as client-go does), one informer thread (list, then
watch) per watched namespace (or one for all) and per routed kind in use, one resync thread and
one lease thread. The queue never hands one key to two workers, so one rollout is never
reconciled twice at once, and thousands of rollouts do not mean thousands of threads or
connections.

Shards (controller/sharding.py): with `shards` > 1 the informers keep only this shard's rollouts,
so only they are queued, cached and reconciled; a ShardGuard thread checks the other Leases of the
set each retry period, and the manager writes only while its last verdict allowed it.

Resync: every `resync` seconds every cached rollout is queued again, read from the cache, in the
work queue's background lane: a change never waits behind a resync key (workqueue.py). A settled
rollout (promoted or rolled back, nothing in flight) then costs no request and no query; the
resync is only a safety net for a wake-up that was lost, so it is rare (10 min by default).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import structlog

from controller.kube.errors import Conflict, KubeError
from controller.kube.informer import Informer
from controller.kube.lease import LeaderElector, ShardGuard
from controller.kube.rollouts import Rollouts
from controller.reconciler import NotLeader, Reconciler
from controller.sharding import Verdict, owns
from controller.telemetry import Telemetry
from controller.workqueue import Key, WorkQueue

log = structlog.get_logger("manager")

# Seconds before a key is looked at again when this replica may not write at that instant.
NOT_LEADING_RETRY = 1.0
# Where a key is queued (workqueue.py): changes first, the resync behind them.
Lane = Literal["foreground", "background"]


@dataclass
class ManagerSettings:
    namespaces: list[str] = field(default_factory=list)
    workers: int = 4
    health_port: int = 8080
    watch_timeout: int = 60
    # Seconds between two queuings of every cached rollout; 0: never.
    resync: float = 600.0
    # This process owns the rollouts of shard `shard` of `shards` (controller/sharding.py).
    shards: int = 1
    shard: int = 0


class Manager:
    def __init__(
        self,
        *,
        rollouts: Rollouts,
        reconciler: Reconciler,
        telemetry: Telemetry,
        settings: ManagerSettings,
        elector: LeaderElector | None,
        guard: ShardGuard | None = None,
    ) -> None:
        self.rollouts = rollouts
        self.reconciler = reconciler
        self.telemetry = telemetry
        self.settings = settings
        self.elector = elector
        self.guard = guard
        # Set when a leader of another shard count made this one step down (exit 1, Lease released).
        self.stepped_down = threading.Event()
        self.queue = WorkQueue()
        self.stop = threading.Event()
        self.lost_lease = threading.Event()
        self.synced = threading.Event()
        self.telemetry.depth_source = self.queue.depth
        self._server: ThreadingHTTPServer | None = None
        # Per key, a fingerprint of what the last watch event showed beyond status.
        self._seen: dict[Key, int] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def run(self) -> int:
        """Block until stopped; 0 on a clean stop, 1 when the lease was lost."""
        self._serve_health()
        if self.elector is not None:
            if not self.elector.acquire(self.stop):
                return self._shutdown([])
            self.telemetry.leader.set(1)
            threading.Thread(
                target=self.elector.keep_renewing, args=(self.stop, self._on_lost), daemon=True, name="lease"
            ).start()
            if self.guard is not None:
                threading.Thread(target=self._guard, args=(self.guard,), daemon=True, name="shard-guard").start()
        informers = self.rollouts.cache(
            self.settings.namespaces,
            watch_timeout=self.settings.watch_timeout,
            on_event=self._on_event,
            keep=self._owned if self.settings.shards > 1 else None,
        )
        self.telemetry.owned_source = lambda: (self.settings.shard, sum(len(i) for i in informers))
        for informer in informers:
            threading.Thread(
                target=informer.run, args=(self.stop,), daemon=True, name=f"informer-{informer.namespace or 'all'}"
            ).start()
        threading.Thread(target=self._resync, args=(informers,), daemon=True, name="resync").start()
        workers = [threading.Thread(target=self._work, name=f"worker-{i}") for i in range(self.settings.workers)]
        for worker in workers:
            worker.start()
        self.stop.wait()
        return self._shutdown(workers)

    def _owned(self, obj: dict[str, Any]) -> bool:
        uid = (obj.get("metadata") or {}).get("uid")
        return isinstance(uid, str) and owns(uid, self.settings.shards, self.settings.shard)

    def _guard(self, guard: ShardGuard) -> None:
        """Check the set's Leases each retry period; step down when a later leader of another
        shard count is live (controller/sharding.py)."""
        assert self.elector is not None
        last: Verdict | None = None
        while not self.stop.is_set():
            result = guard.check()
            if result is not last and result is not None:
                log.info("shard guard", verdict=result.value, shard=self.settings.shard, shards=self.settings.shards)
                last = result
            if result is Verdict.STEP_DOWN:
                log.error(
                    "a later leader of another shard count is live: stepping down", identity=self.elector.identity
                )
                self.stepped_down.set()
                self.stop.set()
                return
            self.stop.wait(self.elector.config.retry_period)

    def _on_lost(self) -> None:
        self.telemetry.leader.set(0)
        self.lost_lease.set()
        self.stop.set()

    def _shutdown(self, workers: list[threading.Thread]) -> int:
        log.info("stopping", lost_lease=self.lost_lease.is_set(), stepped_down=self.stepped_down.is_set())
        self.queue.shutdown()
        for worker in workers:
            # A worker finishes its in-flight reconcile (bounded by its request timeouts).
            worker.join(timeout=30)
        if self.elector is not None and not self.lost_lease.is_set():
            self.elector.release()
        if self._server is not None:
            self._server.shutdown()
        return 1 if self.lost_lease.is_set() or self.stepped_down.is_set() else 0

    def may_write(self) -> bool:
        if self.stop.is_set() and (self.lost_lease.is_set() or self.stepped_down.is_set()):
            return False
        if self.guard is not None and not self.guard.clear():
            return False
        return self.elector is None or self.elector.is_leader()

    # -- informer events and resync ------------------------------------------------------------

    def _on_event(self, kind: str, obj: dict[str, Any]) -> None:
        lane = self._lane(kind, obj)
        if lane is not None:
            self.queue.add(_key(obj), background=lane == "background")

    def _resync(self, informers: list[Informer]) -> None:
        """Mark the manager synced once every informer has listed; then queue every cached rollout
        each `resync` seconds."""
        for informer in informers:
            while not informer.synced.wait(0.5):
                if self.stop.is_set():
                    return
        self.synced.set()
        owned = sum(len(informer) for informer in informers)
        log.info("synced", shard=self.settings.shard, shards=self.settings.shards, rollouts=owned)
        period = self.settings.resync
        while period > 0 and not self.stop.wait(period):
            keys = [key for informer in informers for key in informer.cached_keys()]
            for key in keys:
                self.queue.add(key, background=True)  # behind every change (workqueue.py)
            log.debug("resync", rollouts=len(keys))

    def _lane(self, kind: str, obj: dict[str, Any]) -> Lane | None:
        """None for an update that changed nothing but status: mostly the echo of our own status
        write, which would cost a reconcile (two reads) each. Spec (generation), annotations (the
        CLI's requests), finalizers and deletion are changes, served first; so are adds and deletes.
        A re-list's ADDED of an object seen as it is now is a resync: in the background lane."""
        key = _key(obj)
        if kind == "DELETED":
            self._seen.pop(key, None)
            return "foreground"
        meta = obj.get("metadata") or {}
        annotations = json.dumps(meta.get("annotations") or {}, sort_keys=True)
        fingerprint = hash(
            (
                meta.get("uid"),
                meta.get("generation"),
                annotations,
                meta.get("deletionTimestamp"),
                tuple(meta.get("finalizers") or ()),
            )
        )
        previous = self._seen.get(key)
        self._seen[key] = fingerprint
        if previous != fingerprint:
            return "foreground"
        return "background" if kind == "ADDED" else None

    # -- working --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                self._reconcile(key)
            finally:
                self.queue.done(key)

    def _reconcile(self, key: Key, *, fresh: bool = False) -> None:
        namespace, name = key
        try:
            if not self.may_write():
                # Our last renew is older than the renew deadline (a slow API server): write
                # nothing now, and look again once the renewer has caught up. If the lease is
                # really lost, the renewer stops this process; a dropped key would never come back.
                self.queue.add_after(key, NOT_LEADING_RETRY)
                return
            after = (
                self.reconciler.reconcile(namespace, name, fresh=True)
                if fresh
                else self.reconciler.reconcile(namespace, name)
            )
        except NotLeader:
            log.warning("not leading at this instant: nothing written, trying again", namespace=namespace, name=name)
            self.queue.add_after(key, NOT_LEADING_RETRY)
            return
        except Conflict:
            # Someone wrote since we read (or the cache was behind): re-read from the API server and
            # recompute at once; a second conflict in a row backs off.
            self.telemetry.errors.labels("conflict").inc()
            if not fresh:
                self._reconcile(key, fresh=True)
                return
            self.queue.add_rate_limited(key)
            return
        except KubeError as exc:
            delay = self.queue.add_rate_limited(key)
            self.telemetry.errors.labels(type(exc).__name__).inc()
            self.telemetry.reconciles.labels("error").inc()
            log.warning("reconcile failed", namespace=namespace, name=name, error=str(exc), retry_in=delay)
            return
        except Exception as exc:
            delay = self.queue.add_rate_limited(key)
            self.telemetry.errors.labels("unexpected").inc()
            self.telemetry.reconciles.labels("error").inc()
            log.exception("reconcile crashed", namespace=namespace, name=name, error=repr(exc), retry_in=delay)
            return
        self.telemetry.reconciles.labels("ok").inc()
        self.queue.forget(key)
        if after is not None:
            self.queue.add_after(key, after.total_seconds())

    # -- health and metrics ---------------------------------------------------------------------

    def _serve_health(self) -> None:
        manager = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif self.path == "/readyz":
                    # A standby replica is ready too: it is waiting for the lease, as it should.
                    ready = manager.synced.is_set() or (manager.elector is not None and not manager.elector.is_leader())
                    self._send(200 if ready else 503, b"ok\n" if ready else b"not synced\n", "text/plain")
                elif self.path == "/metrics":
                    self._send(200, manager.telemetry.render(), "text/plain; version=0.0.4")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("0.0.0.0", self.settings.health_port), Handler)
        self.health_port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True, name="health").start()
        log.info("serving health and metrics", port=self.health_port)


def _key(obj: dict[str, object]) -> Key:
    meta = obj["metadata"]
    assert isinstance(meta, dict)
    return str(meta["namespace"]), str(meta["name"])
