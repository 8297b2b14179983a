"""The controller's allow-list for rollout-supplied metric addresses (controller/metrics/address.py).

Name resolution is given as a table (a resolver is a plain function), so these cases do not
depend on this machine's DNS; the integration side (tests/reliability/test_bad_input.py) runs
the real controller against real listeners.
"""

from __future__ import annotations

import pytest

from controller.api import models
from controller.metrics.address import AddressPolicy

TABLE = {
    "prometheus.monitoring": ["10.0.0.7"],
    "sneaky.example": ["127.0.0.2"],
    "metadata.google.internal": ["169.254.169.254"],
    "both.example": ["10.0.0.8", "::1"],
    "api.example": ["10.0.0.1"],
}


def policy(*, allow_loopback: bool = False) -> AddressPolicy:
    return AddressPolicy.for_api_server(
        ["https://api.example:6443", "https://10.96.0.1:443"],
        allow_loopback=allow_loopback,
        resolver=lambda host: TABLE.get(host, []),
    )


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("http://127.0.0.1:9090", "loopback"),
        ("http://127.8.9.10", "loopback"),
        ("http://[::1]:9090", "loopback"),
        ("http://localhost:9090", "loopback"),
        ("http://LOCALHOST.:9090", "loopback"),
        ("http://prom.localhost", "loopback"),
        ("http://sneaky.example:9090", "loopback"),
        ("http://both.example", "loopback"),
        ("http://[::ffff:127.0.0.1]:9090", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://metadata.google.internal", "link-local"),
        ("http://[fe80::1]:9090", "link-local"),
        ("http://[::ffff:169.254.169.254]", "link-local"),
        ("http://0.0.0.0:9090", "unspecified"),
        ("https://api.example:6443", "API server"),
        ("https://10.96.0.1", "API server"),
        ("https://kubernetes.default.svc:443", "API server"),
    ],
)
def test_refused(address: str, why: str) -> None:
    refusal = policy().refusal(address)
    assert refusal is not None and why in refusal and "refused" in refusal


@pytest.mark.parametrize(
    "address",
    [
        "http://prometheus.monitoring:9090",
        "https://api.example:9090",  # the API server's host, another port
        "http://10.96.0.1:9090",
        "http://unresolvable.example:9090",  # fails by itself, as an inconclusive observation
        "http://[::1",  # unparseable: the provider reports it
    ],
)
def test_allowed(address: str) -> None:
    assert policy().refusal(address) is None


def test_loopback_only_with_the_flag_and_never_the_api_server_or_link_local() -> None:
    relaxed = AddressPolicy.for_api_server(["https://127.0.0.1:6443"], allow_loopback=True, resolver=lambda h: [])
    assert relaxed.refusal("http://127.0.0.1:9090") is None
    assert relaxed.refusal("http://localhost:9090") is None
    assert "API server" in (relaxed.refusal("https://127.0.0.1:6443") or "")
    assert "link-local" in (relaxed.refusal("http://169.254.169.254") or "")
    assert "loopback" in (AddressPolicy().refusal("http://127.0.0.1:9090") or ""), "the default refuses loopback"


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("http://169.254.169.254/latest", True),
        ("http://[FE80::1%25eth0]:9090", True),
        ("https://kubernetes.default.svc.cluster.local", True),
        ("https://KUBERNETES:443/x", True),
        ("http://kubernetes-metrics.monitoring:9090", False),
        ("http://169.2540.1.1", False),
        ("http://prom.example/169.254.169.254", False),
    ],
)
def test_the_crd_rule_twin(address: str, refused: bool) -> None:
    rule = next(r for r in models.PrometheusSource.rules if "link-local" in r.message)
    assert rule.check(models.PrometheusSource(address="http://x")) is True
    assert (not rule.check(type("P", (), {"address": address})())) is refused
