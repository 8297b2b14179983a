"""One POST to one webhook: address policy, pinned address, TLS, signature, retries.

The URL comes from a rollout author, so it goes through the one address policy of the metric
providers (controller.metrics.address), after DNS resolution, and the request then goes to the
address that was checked (the Host header and TLS SNI keep the name), so a second DNS answer
cannot send it elsewhere. TLS is always verified: against the system CAs, or the CA bundle of
the hook's caBundleRef. Redirects are not followed (they would leave the policy behind).

Never raises for a receiver's failure: the outcome is a `Sent` with the HTTP code or an error
message. Transient failures (connection, timeout, 5xx, 429) are retried with jittered
exponential back-off (tenacity) while `attempts` last.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from controller.metrics.address import AddressPolicy

USER_AGENT = "modelrollout-controller/webhooks"


@dataclass(frozen=True)
class Sent:
    code: int | None
    error: str | None  # None when the receiver answered (whatever the code)
    answer: str = ""  # the start of the receiver's answer (a gate's reason)

    @property
    def ok(self) -> bool:
        return self.error is None and self.code is not None and 200 <= self.code < 300


class _Transient(Exception):
    def __init__(self, sent: Sent) -> None:
        super().__init__(sent.error or f"HTTP {sent.code}")
        self.sent = sent


def masked(text: str, url: str, shown: str, *more: str) -> str:
    """`text` with the URL kept in a Secret, its name and address (and `more`, e.g. the pinned
    target) replaced by `shown`: what a message may say of a urlSecretRef URL."""
    parts = urlsplit(url)
    for secret in sorted({url, *more, parts.netloc, parts.hostname or ""} - {""}, key=len, reverse=True):
        text = text.replace(secret, shown)
    return text


def _pinned(url: str, ip: str) -> tuple[str, str, str]:
    """(URL with the checked address in place of the name, Host header, SNI name)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc_ip = f"[{ip}]" if ":" in ip else ip
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{netloc_ip}{port}")), f"{parts.netloc}", host


class Sender:
    """Shared by the dispatcher's threads; one httpx client per CA bundle."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def _client(self, ca_pem: str | None) -> httpx.Client:
        key = ca_pem or ""
        with self._lock:
            if key not in self._clients:
                verify: ssl.SSLContext | bool = True
                if ca_pem:
                    verify = ssl.create_default_context(cadata=ca_pem)
                self._clients[key] = httpx.Client(verify=verify, follow_redirects=False, trust_env=False)
            return self._clients[key]

    def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        *,
        timeout: float,
        ca_pem: str | None = None,
        attempts: int = 1,
        backoff: float = 0.5,
        cap: float = 10.0,
        shown: str | None = None,
    ) -> Sent:
        """`shown`: how messages name the URL when it is a secret (urlSecretRef), else the URL."""
        refused, ips = self.policy.check(url, what="webhook url")
        if refused:
            return Sent(None, refused if shown is None else refused.replace(repr(url), shown))
        if not ips:
            return Sent(None, f"webhook url {shown or repr(url)}: the host does not resolve")
        target, host, sni = _pinned(url, ips[0])
        client = self._client(ca_pem)

        def once() -> Sent:
            try:
                response = client.post(
                    target,
                    content=body,
                    headers={**headers, "Host": host, "User-Agent": USER_AGENT},
                    timeout=timeout,
                    extensions={"sni_hostname": sni},
                )
            except httpx.TimeoutException:
                raise _Transient(Sent(None, f"no answer within {timeout:g}s")) from None
            except httpx.HTTPError as exc:
                text = f"{type(exc).__name__}: {exc}"
                if shown is not None:
                    text = masked(text, url, shown, target)
                raise _Transient(Sent(None, text[:200])) from None
            sent = Sent(response.status_code, None, response.text[:200])
            if response.status_code >= 500 or response.status_code == 429:
                raise _Transient(sent)
            return sent

        def last(state: RetryCallState) -> Sent:
            exc = state.outcome.exception() if state.outcome else None
            return exc.sent if isinstance(exc, _Transient) else Sent(None, repr(exc))

        retrying = Retrying(
            stop=stop_after_attempt(max(attempts, 1)),
            wait=wait_random_exponential(multiplier=backoff, max=cap),
            retry=retry_if_exception_type(_Transient),
            retry_error_callback=last,
            sleep=time.sleep,
        )
        result: Sent = retrying(once)
        return result

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
