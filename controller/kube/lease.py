"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Only the leader reconciles. Expiry is judged on our own monotonic clock from when we last saw
the record change (not on the holder's timestamps), so clock skew between replicas cannot
make two leaders. A leader that cannot renew within the renew deadline stops at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from kubernetes import client

from controller.kube.config import REQUEST_TIMEOUT
from controller.kube.errors import Conflict, Forbidden, KubeError, NotFound, translated
from controller.sharding import Holder, Verdict, in_set, verdict

log = structlog.get_logger("lease")


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str = "modelrollout-controller"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _micro_now() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        config: LeaseConfig,
        identity: str,
        *,
        annotations: dict[str, str] | None = None,
    ) -> None:
        self._coord = client.CoordinationV1Api(api)
        self.config = config
        self.identity = identity
        # Written on the Lease at each acquire and renew (the shard count, for ShardPeers).
        self.annotations = dict(annotations or {})
        self._observed_record: tuple[str | None, str | None] | None = None
        self._observed_at = 0.0
        self._last_renew = -1e9
        self._leader = False
        self._lock = threading.Lock()

    # -- state ----------------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """True only while our last successful renew is younger than the renew deadline."""
        with self._lock:
            return self._leader and time.monotonic() - self._last_renew < self.config.renew_deadline

    # -- one attempt ----------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        # Leadership counts from when the attempt began, not from when its answer came: a renew
        # answered late (a slow or paused API server) must not extend our lease past the one
        # others see. Each request gives up after the renew deadline.
        started, now = time.monotonic(), _micro_now()
        deadline = (REQUEST_TIMEOUT[0], self.config.renew_deadline)
        try:
            with translated():
                lease = self._coord.read_namespaced_lease(
                    self.config.name, self.config.namespace, _request_timeout=deadline
                )
        except NotFound:
            return self._create(now, started)
        except KubeError as exc:
            log.info("lease read failed", error=str(exc))
            return False
        spec = lease.spec
        if spec is None:
            spec = lease.spec = client.V1LeaseSpec()
        holder = spec.holder_identity or None
        record = (holder, str(spec.renew_time))
        if record != self._observed_record:
            self._observed_record, self._observed_at = record, time.monotonic()
        duration = spec.lease_duration_seconds or self.config.lease_duration
        expired = time.monotonic() - self._observed_at > duration
        if holder not in (None, self.identity) and not expired:
            self._set_leader(False)
            return False
        if holder != self.identity:
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            spec.acquire_time = now
        spec.holder_identity = self.identity
        spec.renew_time = now
        if self.annotations:
            if lease.metadata is None:
                lease.metadata = client.V1ObjectMeta()
            lease.metadata.annotations = {**(lease.metadata.annotations or {}), **self.annotations}
        spec.lease_duration_seconds = int(self.config.lease_duration)
        try:
            with translated():
                self._coord.replace_namespaced_lease(
                    self.config.name, self.config.namespace, lease, _request_timeout=deadline
                )
        except (Conflict, KubeError) as exc:
            log.info("lease update failed", error=str(exc))
            return False
        self._renewed(started)
        return True

    def _create(self, now: datetime, started: float) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.config.name, namespace=self.config.namespace, annotations=self.annotations or None
            ),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self.config.lease_duration),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            with translated():
                self._coord.create_namespaced_lease(
                    self.config.namespace, body, _request_timeout=(REQUEST_TIMEOUT[0], self.config.renew_deadline)
                )
        except KubeError:
            return False
        self._renewed(started)
        return True

    def _renewed(self, started: float) -> None:
        with self._lock:
            self._leader = True
            self._last_renew = started

    def _set_leader(self, value: bool) -> None:
        with self._lock:
            self._leader = value

    # -- loops ----------------------------------------------------------------------------------

    def acquire(self, stop: threading.Event) -> bool:
        """Block until we lead (True) or stop is set (False)."""
        while not stop.is_set():
            if self.try_acquire_or_renew():
                log.info("became leader", identity=self.identity, lease=self.config.name)
                return True
            stop.wait(self.config.retry_period)
        return False

    def keep_renewing(self, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Renew every retry period; when renewing fails past the renew deadline, call on_lost."""
        while not stop.wait(self.config.retry_period):
            try:
                renewed = self.try_acquire_or_renew()
            except Exception:  # this thread must outlive any one failure, or no one notices the loss
                log.exception("lease renew crashed", identity=self.identity)
                renewed = False
            if renewed:
                continue
            if not self.is_leader():
                self._set_leader(False)
                log.error("lost the lease: stopping", identity=self.identity)
                on_lost()
                return

    def release(self) -> None:
        """Give the lease up on a clean shutdown so the next replica need not wait for expiry."""
        if not self.is_leader():
            return
        self._set_leader(False)
        try:
            with translated():
                lease = self._coord.read_namespaced_lease(self.config.name, self.config.namespace)
                if lease.spec is not None and lease.spec.holder_identity == self.identity:
                    lease.spec.holder_identity = None
                    lease.spec.lease_duration_seconds = 1
                    self._coord.replace_namespaced_lease(self.config.name, self.config.namespace, lease)
        except KubeError as exc:
            log.warning("could not release the lease", error=str(exc))


# On each shard leader's Lease: its shard count and when its process started (controller/sharding.py).
SHARDS_ANNOTATION = "modelrollout.dev/shards"
STARTED_ANNOTATION = "modelrollout.dev/started"


class ShardGuard:
    """Whether this shard's leader may reconcile, given the other Leases of its set.

    `check` lists the Leases of the namespace, keeps those of the set (`sharding.in_set`: by name,
    not by a label, so the Lease of an install from before sharding counts too) and judges each
    live as LeaderElector judges expiry: a holder whose record we saw change less than its lease
    duration ago on our own clock (a Lease seen for the first time counts as just renewed). A
    Lease without the shards annotation (a version from before sharding) counts as one shard that
    started earliest. `clear()` holds while the last RECONCILE verdict is younger than the renew
    deadline, as LeaderElector.is_leader does for renews.
    """

    def __init__(self, api: client.ApiClient, config: LeaseConfig, prefix: str, me: Holder) -> None:
        self._coord = client.CoordinationV1Api(api)
        self.config, self.prefix, self.me = config, prefix, me
        self._observed: dict[str, tuple[tuple[str | None, str], float]] = {}
        self._clear_at = -1e9
        self._warned = False
        self._lock = threading.Lock()

    def annotations(self) -> dict[str, str]:
        return {SHARDS_ANNOTATION: str(self.me.shards), STARTED_ANNOTATION: self.me.started}

    def clear(self) -> bool:
        with self._lock:
            return time.monotonic() - self._clear_at < self.config.renew_deadline

    def close(self) -> None:
        with self._lock:
            self._clear_at = -1e9

    def check(self) -> Verdict | None:
        """The verdict now, or None when the Leases could not be read (the gate then closes once
        the last clear verdict is older than the renew deadline)."""
        started = time.monotonic()
        try:
            live = self.live()
        except Forbidden as exc:
            if self.me.shards > 1:
                log.warning("cannot list Leases: not reconciling", error=str(exc))
                return None
            # One shard and RBAC from before sharding: nothing to guard against but a change of
            # the shard count, which needs the chart's list grant (docs/operations.md).
            if not self._warned:
                log.warning("cannot list Leases: a change of the shard count is not guarded", error=str(exc))
                self._warned = True
            live = []
        except KubeError as exc:
            log.info("lease list failed", error=str(exc))
            return None
        result = verdict(self.me, live)
        if result is Verdict.RECONCILE:
            with self._lock:
                self._clear_at = started
        else:
            self.close()
        return result

    def live(self) -> list[Holder]:
        """The holders of the other live Leases of the set."""
        with translated():
            leases = self._coord.list_namespaced_lease(
                self.config.namespace, _request_timeout=(REQUEST_TIMEOUT[0], self.config.renew_deadline)
            ).items
        now, out, seen = time.monotonic(), [], set()
        for lease in leases:
            meta = lease.metadata or client.V1ObjectMeta()
            name = meta.name or ""
            if name == self.config.name or not in_set(self.prefix, name):
                continue
            seen.add(name)
            spec = lease.spec or client.V1LeaseSpec()
            holder = spec.holder_identity or None
            record = (holder, str(spec.renew_time))
            previous = self._observed.get(name)
            if previous is None or previous[0] != record:
                self._observed[name] = (record, now)
            duration = spec.lease_duration_seconds or self.config.lease_duration
            if holder is None or now - self._observed[name][1] > duration:
                continue
            annotations = meta.annotations or {}
            try:
                shards = int(annotations.get(SHARDS_ANNOTATION, "1"))
            except ValueError:
                shards = 0  # unreadable: another count, so nobody reconciles beside it
            out.append(Holder(shards=shards, started=annotations.get(STARTED_ANNOTATION, ""), identity=holder))
        for name in set(self._observed) - seen:
            del self._observed[name]
        return out
