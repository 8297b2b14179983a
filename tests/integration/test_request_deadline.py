"""A request the API server never answers fails as Unavailable instead of holding its thread.

The server here is a real TCP listener on loopback that accepts the connection, reads the
request and never answers: what a client sees across a half-open connection or from an API
server that stalled after accepting. Without a deadline the kubernetes client waits for ever.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from controller.kube.config import with_deadline
from controller.kube.errors import Unavailable
from controller.kube.lease import LeaderElector, LeaseConfig
from controller.kube.rollouts import Rollouts


@pytest.fixture
def silent_server() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            held.append(conn)  # keep it open, say nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


def _api(host: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = host
    configuration.retries = False  # one attempt: the deadline, not urllib3's retries, is under test
    return with_deadline(client.ApiClient(configuration), (2.0, 2.0))


def _finishes(call: Callable[[], Any]) -> Any:
    """Run call in a thread; fail (rather than hang the suite) if it never returns."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the request never returned: it has no deadline"
    return outcome


def test_a_read_never_answered_is_unavailable(silent_server: str) -> None:
    outcome = _finishes(lambda: Rollouts(_api(silent_server)).get("default", "demo"))
    assert isinstance(outcome.get("error"), Unavailable), outcome


def test_a_lease_renew_never_answered_is_not_leadership(silent_server: str) -> None:
    elector = LeaderElector(_api(silent_server), LeaseConfig(name="l", namespace="default", renew_deadline=1), "me")
    outcome = _finishes(elector.try_acquire_or_renew)
    assert outcome == {"value": False} or isinstance(outcome.get("error"), Unavailable), outcome
    assert not elector.is_leader()


def test_a_request_naming_its_own_timeout_keeps_it(silent_server: str) -> None:
    seen: list[Any] = []
    api = _api(silent_server)
    send = api.rest_client.request

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("_request_timeout"))
        return send(*args, **kwargs)

    api.rest_client.request = spy
    with_deadline(api, (2.0, 2.0))  # wraps the spy: the outer layer decides, the spy records
    outcome = _finishes(
        lambda: client.CustomObjectsApi(api).list_cluster_custom_object(
            "modelrollout.dev", "v1alpha1", "modelrollouts", _request_timeout=(1.0, 1.5)
        )
    )
    assert "error" in outcome
    assert seen and seen[0] == (1.0, 1.5)
