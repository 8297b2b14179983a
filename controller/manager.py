"""The operator process around the reconciler: watches, the work queue, workers, the lease.

Concurrency (written down once, as DESIGN.md asks): the kubernetes client is synchronous, so
we run a bounded pool of worker threads (as client-go does), one watch thread per watched
namespace (or one for all), and one lease thread. The queue never hands one key to two workers,
so one rollout is never reconciled twice at once, and thousands of rollouts do not mean
thousands of threads or connections.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog

from controller.kube.errors import Conflict, Gone, KubeError
from controller.kube.lease import LeaderElector
from controller.kube.rollouts import Rollouts
from controller.reconciler import NotLeader, Reconciler
from controller.telemetry import Telemetry
from controller.workqueue import Key, WorkQueue

log = structlog.get_logger("manager")

# Seconds before a key is looked at again when this replica may not write at that instant.
NOT_LEADING_RETRY = 1.0


@dataclass
class ManagerSettings:
    namespaces: list[str] = field(default_factory=list)
    workers: int = 4
    health_port: int = 8080
    watch_timeout: int = 60


class Manager:
    def __init__(
        self,
        *,
        rollouts: Rollouts,
        reconciler: Reconciler,
        telemetry: Telemetry,
        settings: ManagerSettings,
        elector: LeaderElector | None,
    ) -> None:
        self.rollouts = rollouts
        self.reconciler = reconciler
        self.telemetry = telemetry
        self.settings = settings
        self.elector = elector
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
        watched: list[str | None] = [*self.settings.namespaces] or [None]
        for namespace in watched:
            threading.Thread(
                target=self._watch, args=(namespace,), daemon=True, name=f"watch-{namespace or 'all'}"
            ).start()
        workers = [threading.Thread(target=self._work, name=f"worker-{i}") for i in range(self.settings.workers)]
        for worker in workers:
            worker.start()
        self.stop.wait()
        return self._shutdown(workers)

    def _on_lost(self) -> None:
        self.telemetry.leader.set(0)
        self.lost_lease.set()
        self.stop.set()

    def _shutdown(self, workers: list[threading.Thread]) -> int:
        log.info("stopping", lost_lease=self.lost_lease.is_set())
        self.queue.shutdown()
        for worker in workers:
            # A worker finishes its in-flight reconcile (bounded by its request timeouts).
            worker.join(timeout=30)
        if self.elector is not None and not self.lost_lease.is_set():
            self.elector.release()
        if self._server is not None:
            self._server.shutdown()
        return 1 if self.lost_lease.is_set() else 0

    def may_write(self) -> bool:
        if self.stop.is_set() and self.lost_lease.is_set():
            return False
        return self.elector is None or self.elector.is_leader()

    # -- watching -------------------------------------------------------------------------------

    def _watch(self, namespace: str | None) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            try:
                items, version = self.rollouts.list_all(namespace)
                for obj in items:
                    self._relevant("ADDED", obj)
                    self.queue.add(_key(obj))
                self.synced.set()
                backoff = 1.0
                while not self.stop.is_set():
                    for kind, obj in self.rollouts.watch(
                        namespace, version, timeout_seconds=self.settings.watch_timeout
                    ):
                        version = obj["metadata"].get("resourceVersion", version)
                        if kind != "BOOKMARK" and self._relevant(kind, obj):
                            self.queue.add(_key(obj))
                        if self.stop.is_set():
                            return
            except Gone as exc:
                log.info("watch expired: re-listing", namespace=namespace, error=str(exc))
            except KubeError as exc:
                log.warning("watch failed: retrying", namespace=namespace, error=str(exc), retry_in=backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _relevant(self, kind: str, obj: dict[str, Any]) -> bool:
        """False for an update that changed nothing but status: mostly the echo of our own status
        write, which would cost a reconcile (two reads) each. Spec (generation), annotations (the
        CLI's requests), finalizers and deletion always count; so do adds, deletes and re-lists."""
        key = _key(obj)
        if kind == "DELETED":
            self._seen.pop(key, None)
            return True
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
        return kind != "MODIFIED" or previous != fingerprint

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

    def _reconcile(self, key: Key) -> None:
        namespace, name = key
        try:
            if not self.may_write():
                # Our last renew is older than the renew deadline (a slow API server): write
                # nothing now, and look again once the renewer has caught up. If the lease is
                # really lost, the renewer stops this process; a dropped key would never come back.
                self.queue.add_after(key, NOT_LEADING_RETRY)
                return
            after = self.reconciler.reconcile(namespace, name)
        except NotLeader:
            log.warning("not leading at this instant: nothing written, trying again", namespace=namespace, name=name)
            self.queue.add_after(key, NOT_LEADING_RETRY)
            return
        except Conflict:
            # Someone wrote since we read: re-read and recompute soon, with bounded back-off.
            self.telemetry.errors.labels("conflict").inc()
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
