"""Which metric provider addresses a rollout may make the controller fetch.

`spec.provider.prometheus.address` is written by whoever may create a ModelRollout, and the
controller fetches it with its own network position: an address on loopback (the controller's
own ports), link-local (169.254.0.0/16 and fe80::/10: cloud metadata services with node
credentials) or the API server would let a rollout author make the controller call those.
The CRD refuses link-local literals and the API server's names (CEL); this allow-list is the
second line: it also looks at what a host name resolves to, and refuses loopback unless the
controller runs with `--allow-loopback-metrics` (the local test setup, never the default).
A refused address is never fetched: every guardrail is inconclusive with the reason.
Webhook URLs (controller.webhooks) go through the same policy, and connect to the addresses it checked;
so do the shadow comparator's calls to the models (controller.comparator), whose Services a rollout names.

The controller-wide `--prometheus-url` is the operator's own setting and is not checked.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# The API server's in-cluster names (any cluster domain), as the CRD's CEL rule also refuses.
API_SERVER_NAME = re.compile(r"^kubernetes(\.default(\.svc(\..*)?)?)?$")

Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    """The addresses a host name resolves to; none when it does not resolve (then the fetch
    fails by itself, as an inconclusive observation)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def api_server_urls(host: str) -> list[str]:
    """Where the API server listens, as this process reaches it (`host`) and as pods do."""
    urls = [host]
    service_host, service_port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if service_host:
        urls.append(
            f"https://[{service_host}]:{service_port or 443}"
            if ":" in service_host
            else f"https://{service_host}:{service_port or 443}"
        )
    return urls


def _ip(text: str) -> IP | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


@dataclass(frozen=True)
class AddressPolicy:
    """`api_endpoints`: (ip, port) pairs where the API server listens, from the controller's
    own connection settings (and KUBERNETES_SERVICE_HOST/PORT in a pod)."""

    allow_loopback: bool = False
    api_endpoints: frozenset[tuple[str, int]] = frozenset()
    resolver: Resolver = field(default=resolve, compare=False)

    @classmethod
    def for_api_server(
        cls, urls: Iterable[str], *, allow_loopback: bool, resolver: Resolver = resolve
    ) -> AddressPolicy:
        endpoints: set[tuple[str, int]] = set()
        for url in urls:
            parts = urlsplit(url if "://" in url else f"https://{url}")
            if not parts.hostname:
                continue
            port = _port(parts.scheme, parts.port)
            literal = _ip(parts.hostname)
            ips = [str(literal)] if literal is not None else [str(_ip(a)) for a in resolver(parts.hostname) if _ip(a)]
            endpoints.update((ip, port) for ip in ips)
        return cls(allow_loopback=allow_loopback, api_endpoints=frozenset(endpoints), resolver=resolver)

    def refusal(self, address: str, *, what: str = "metric provider address") -> str | None:
        """Why the controller must not fetch this address, or None when it may."""
        return self.check(address, what=what)[0]

    def check(self, address: str, *, what: str = "metric provider address") -> tuple[str | None, list[str]]:
        """(why refused or None, the addresses checked). A caller that connects to one of these
        addresses itself (webhooks do) cannot be sent elsewhere by a second DNS answer."""
        try:
            parts = urlsplit(address)
            port = _port(parts.scheme, parts.port)
        except ValueError:
            return None, []  # unparseable: the caller reports it as an error, fetching nothing
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            return None, []
        if API_SERVER_NAME.match(host):
            return f"{what} {address!r} is the Kubernetes API server: refused", []
        literal = _ip(host)
        if literal is not None:
            ips = [literal]
        elif host == "localhost" or host.endswith(".localhost"):
            ips = [ipaddress.IPv4Address("127.0.0.1")]
        else:
            ips = [ip for ip in (_ip(a) for a in self.resolver(host)) if ip is not None]
        for ip in ips:
            unsafe = self._unsafe(ip, port)
            if unsafe:
                via = "" if literal is not None else f" (resolves to {ip})"
                return f"{what} {address!r} is {unsafe}{via}: refused, nothing fetched", [str(i) for i in ips]
        return None, [str(i) for i in ips]

    def _unsafe(self, ip: IP, port: int) -> str | None:
        if (str(ip), port) in self.api_endpoints:
            return "the Kubernetes API server"
        if ip.is_link_local:
            return "link-local (cloud metadata and node-local services)"
        if ip.is_unspecified:
            return "the unspecified address"
        if ip.is_loopback and not self.allow_loopback:
            return "loopback (the controller's own host; allowed only with --allow-loopback-metrics)"
        return None
