"""Calling webhooks off the reconcile path: a pool of its own, one request at a time per receiver.

A reconcile never waits for a receiver: it `submit`s what the decision core asks (gates,
rollback hooks) and what status says is still owed (notices past each receiver's cursor), and
returns. The pool's threads make the calls; each outcome is kept for the rollout and the rollout
is queued again (`wake`), and its next reconcile `take`s the outcomes into the decision core,
which records them in status. Memory only dedupes and paces; what is owed is always derived
from status again, so a controller killed at any instant delivers after its restart whatever
was not acknowledged (at least once; the delivery id lets the receiver drop a duplicate).

Per receiver (its URL): one request at a time, in submission order; after a failed delivery
the receiver rests `base * 2**failures` seconds, at most `cap`, before its next request, so a
receiver that is down is neither flooded nor forgotten. A slow receiver holds at most one
thread of the pool for its timeout; the reconcile workers are never involved.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from controller.api.duration import parse_duration
from controller.api.models import ModelRolloutSpec, ModelRolloutStatus, SecretKeyRef, Webhook, WebhookType
from controller.core import hooks
from controller.core.clock import Clock
from controller.kube.errors import Forbidden, NotFound
from controller.kube.secrets import Secrets
from controller.telemetry import Telemetry
from controller.webhooks import payload
from controller.webhooks.sender import Sender, Sent, masked

log = structlog.get_logger("webhooks")

Key = tuple[str, str]
Outcome = hooks.GateAnswer | hooks.DeliveryResult


@dataclass
class _Job:
    id: str
    key: Key
    hook: Webhook
    namespace: str
    receiver: str  # one request at a time per receiver: its URL, or where the Secret holding it is
    body: bytes
    headers: dict[str, str]
    # Turns what the sender got into the outcome the decision core records.
    outcome: Callable[[Sent, datetime], Outcome]
    attempts: int = 1


@dataclass
class _Receiver:
    jobs: deque[_Job] = field(default_factory=deque)
    busy: bool = False
    failures: int = 0
    rest_until: float = 0.0


class Unavailable(Exception):
    """A hook's Secret cannot be read: the call fails with this message, nothing is sent."""


class Webhooks:
    def __init__(
        self,
        *,
        sender: Sender,
        secrets: Secrets,
        clock: Clock,
        telemetry: Telemetry,
        workers: int = 4,
        base: float = 1.0,
        cap: float = 60.0,
    ) -> None:
        self.sender, self.secrets, self.clock, self.telemetry = sender, secrets, clock, telemetry
        self.base, self.cap = base, cap
        self.wake: Callable[[Key], None] = lambda key: None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._receivers: dict[str, _Receiver] = {}
        self._queued: set[str] = set()
        self._outcomes: dict[Key, list[Outcome]] = {}
        self._closed = False

    # -- the reconciler's side ------------------------------------------------------------------

    def take(self, namespace: str, name: str) -> tuple[tuple[hooks.GateAnswer, ...], tuple[hooks.DeliveryResult, ...]]:
        with self._lock:
            got = self._outcomes.pop((namespace, name), [])
        answers = tuple(o for o in got if isinstance(o, hooks.GateAnswer))
        return answers, tuple(o for o in got if isinstance(o, hooks.DeliveryResult))

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._outcomes.pop((namespace, name), None)

    def submit(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        spec: ModelRolloutSpec,
        status: ModelRolloutStatus,
        asks: list[hooks.Ask],
    ) -> None:
        """Queue the asks and the notices status says are owed (those already queued are skipped)."""
        key, now = (namespace, name), self.clock.now()
        by_name = {w.name: w for w in spec.webhooks}
        for ask in asks:
            hook = by_name.get(ask.webhook)
            job_id = f"{namespace}/{name}/ask/{ask.webhook}/{ask.candidate_hash}/{ask.step}"
            if hook is None or self._is_queued(job_id):
                continue
            delivery = payload.delivery_id(uid, "ask", hook.name, ask.candidate_hash, ask.step)
            body = payload.gate_body(
                namespace=namespace, name=name, uid=uid, spec=spec, status=status, hook=hook, ask=ask,
                delivery=delivery, now=now,
            )  # fmt: skip
            self._enqueue(
                _Job(
                    id=job_id,
                    key=key,
                    hook=hook,
                    namespace=namespace,
                    receiver=self.receiver(hook, namespace),
                    body=body,
                    headers=_headers(delivery, hook.type.value, "application/json"),
                    outcome=_answer(ask),
                )
            )
        for hook, notice in hooks.pending(spec, status):
            job_id = f"{namespace}/{name}/notice/{hook.name}/{notice.id}"
            if self._is_queued(job_id):
                continue
            delivery = payload.delivery_id(uid, "notice", notice.id, hook.name)
            data = payload.notice_data(
                namespace=namespace, name=name, uid=uid, spec=spec, status=status, notice=notice, delivery=delivery
            )
            body, content_type = payload.notice_body(hook, data)
            self._enqueue(
                _Job(
                    id=job_id,
                    key=key,
                    hook=hook,
                    namespace=namespace,
                    receiver=self.receiver(hook, namespace),
                    body=body,
                    headers=_headers(delivery, notice.event.value, content_type),
                    outcome=_delivered(hook.name, notice.seq, delivery),
                    attempts=3,
                )
            )

    def _is_queued(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._queued

    @staticmethod
    def receiver(hook: Webhook, namespace: str) -> str:
        """The URL, or for urlSecretRef where it is kept (the URL itself is read only to send)."""
        if hook.url is not None:
            return hook.url
        if hook.service is not None:
            svc = hook.service
            return f"{svc.scheme}://{svc.name}.{namespace}.svc:{svc.port}{svc.path}"
        ref = hook.url_secret_ref
        assert ref is not None  # exactly one of url, service and urlSecretRef (CEL and the model)
        return f"secret:{namespace}/{ref.name}/{ref.key}"

    # -- the pool's side ------------------------------------------------------------------------

    def _enqueue(self, job: _Job) -> None:
        with self._lock:
            if self._closed or job.id in self._queued:
                return
            self._queued.add(job.id)
            receiver = self._receivers.setdefault(job.receiver, _Receiver())
            receiver.jobs.append(job)
            start = not receiver.busy
            receiver.busy = True
        if start:
            self._pool.submit(self._drain, job.receiver)

    def _drain(self, url: str) -> None:
        """Send one receiver's jobs in order; after a failure, rest (on a timer, not a thread)."""
        while True:
            with self._lock:
                receiver = self._receivers[url]
                if not receiver.jobs or self._closed:
                    receiver.busy = False
                    return
                rest = receiver.rest_until - time.monotonic()
                if rest > 0:
                    timer = threading.Timer(rest, self._resume, (url,))
                    timer.daemon = True
                    timer.start()
                    return
                job = receiver.jobs.popleft()
            try:
                sent = self._send(job)
            except Exception as exc:  # a bad CA bundle, a bug: an outcome, never a dead receiver queue
                if self._closed:
                    return  # shutting down: what was owed is found in status by the next leader
                text = f"{type(exc).__name__}: {exc}"
                log.exception("webhook call crashed", webhook=job.hook.name, error=text)
                sent = Sent(None, f"could not call the webhook: {text}"[:200])
            outcome = job.outcome(sent, self.clock.now())
            ok = sent.ok
            kind = "notification" if job.hook.type is WebhookType.NOTIFICATION else "ask"
            self.telemetry.webhook_requests.labels(
                kind, "ok" if ok else ("refused" if sent.error is None else "error")
            ).inc()
            with self._lock:
                if kind == "notification":
                    if ok:
                        receiver.failures = 0
                    else:
                        receiver.failures += 1
                        receiver.rest_until = time.monotonic() + min(self.cap, self.base * 2 ** (receiver.failures - 1))
                self.telemetry.webhook_receivers_failing.set(sum(1 for r in self._receivers.values() if r.failures))
                self._outcomes.setdefault(job.key, []).append(outcome)
                self._queued.discard(job.id)
            if not ok:
                log.warning(
                    "webhook call failed", namespace=job.key[0], name=job.key[1], webhook=job.hook.name,
                    code=sent.code, error=sent.error,
                )  # fmt: skip
            self.wake(job.key)

    def _resume(self, url: str) -> None:
        with self._lock:
            receiver = self._receivers[url]
            receiver.rest_until = 0.0
        self._pool.submit(self._drain, url)

    def _send(self, job: _Job) -> Sent:
        try:
            key = self._secret(job.namespace, job.hook.secret_ref)
            ca = self._secret(job.namespace, job.hook.ca_bundle_ref)
            secret_url = self._secret(job.namespace, job.hook.url_secret_ref)
        except Unavailable as exc:
            return Sent(None, str(exc))
        shown = f"(the url in secret {job.receiver.removeprefix('secret:')})" if secret_url else None
        headers = dict(job.headers)
        if key is not None:
            headers[payload.SIGNATURE_HEADER] = payload.sign(key.encode(), int(self.clock.now().timestamp()), job.body)
        timeout = parse_duration(job.hook.timeout).total_seconds()
        try:
            return self.sender.post(
                secret_url or job.receiver,
                job.body,
                headers,
                timeout=timeout,
                ca_pem=ca,
                attempts=job.attempts,
                cap=min(self.cap, 10.0),
                shown=shown,
            )
        except Exception as exc:
            if not secret_url or shown is None or self._closed:
                raise
            # A URL kept in a Secret: the exception (its repr, its traceback) may carry the host
            # (e.g. a UnicodeEncodeError of a non-ASCII one); only its type and a masked message.
            text = masked(f"{type(exc).__name__}: {exc}", secret_url, shown)
            log.error("webhook call crashed", webhook=job.hook.name, error=text)
            return Sent(None, f"could not call the webhook url {shown}: {text}"[:200])

    def _secret(self, namespace: str, ref: SecretKeyRef | None) -> str | None:
        if ref is None:
            return None
        try:
            value = self.secrets.read(namespace, ref.name, ref.key)
        except Forbidden:
            raise Unavailable(f"not allowed to read secret {ref.name}: grant the controller get on it") from None
        except NotFound:
            raise Unavailable(f"secret {ref.name} not found") from None
        if value is None:
            raise Unavailable(f"secret {ref.name} has no key {ref.key}")
        return value

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.sender.close()


def _headers(delivery: str, event: str, content_type: str) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        payload.DELIVERY_HEADER: delivery,
        payload.EVENT_HEADER: event,
    }


def _answer(ask: hooks.Ask) -> Callable[[Sent, datetime], Outcome]:
    def outcome(sent: Sent, now: datetime) -> Outcome:
        message = sent.error or sent.answer.strip().replace("\n", " ") or f"HTTP {sent.code}"
        return hooks.GateAnswer(ask.webhook, ask.step, ask.candidate_hash, sent.code, message[:200], now)

    return outcome


def _delivered(webhook: str, seq: int, delivery: str) -> Callable[[Sent, datetime], Outcome]:
    def outcome(sent: Sent, now: datetime) -> Outcome:
        error = sent.error if sent.error is not None else (None if sent.ok else f"HTTP {sent.code}")
        return hooks.DeliveryResult(webhook, seq, delivery, sent.code, error, now)

    return outcome
