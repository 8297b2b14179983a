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
from controller.kube.errors import Conflict, KubeError, NotFound, translated

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
    def __init__(self, api: client.ApiClient, config: LeaseConfig, identity: str) -> None:
        self._coord = client.CoordinationV1Api(api)
        self.config = config
        self.identity = identity
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
            metadata=client.V1ObjectMeta(name=self.config.name, namespace=self.config.namespace),
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
