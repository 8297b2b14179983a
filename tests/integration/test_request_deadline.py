"""A request the API server never answers fails as Unavailable instead of holding its thread.

The server here is a real TCP listener on loopback that accepts the connection, reads the
request and never answers: what a client sees across a half-open connection or from an API
server that stalled after accepting. Without a deadline the kubernetes client waits for ever.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.kube.config import api_client, with_deadline
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


def _api(host: str, tmp_path: Path) -> client.ApiClient:
    """The controller's own client (`api_client`), from a kubeconfig naming the silent server."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": host}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    api = api_client(str(kubeconfig))
    return with_deadline(api, (2.0, 2.0))  # shorter than the controller's own, same mechanism


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


def test_a_read_never_answered_is_unavailable(silent_server: str, tmp_path: Path) -> None:
    outcome = _finishes(lambda: Rollouts(_api(silent_server, tmp_path)).get("default", "demo"))
    assert isinstance(outcome.get("error"), Unavailable), outcome


def test_an_informer_list_never_answered_is_unavailable(silent_server: str, tmp_path: Path) -> None:
    """The informer's paged list goes through the same REST layer: its page gives up too, and the
    informer's loop backs off and tries again instead of hanging."""
    (informer,) = Rollouts(_api(silent_server, tmp_path)).cache([], watch_timeout=1, on_event=lambda kind, obj: None)
    outcome = _finishes(lambda: informer.source.list_page(None, limit=2, cont=""))
    assert isinstance(outcome.get("error"), Unavailable), outcome
    assert not informer.synced.is_set()


def test_a_lease_read_never_answered_is_not_leadership(silent_server: str, tmp_path: Path) -> None:
    elector = LeaderElector(
        _api(silent_server, tmp_path), LeaseConfig(name="l", namespace="default", renew_deadline=1), "me"
    )
    assert _finishes(elector.try_acquire_or_renew) == {"value": False}
    assert not elector.is_leader()


def test_a_leader_whose_renews_go_unanswered_gives_up_the_lead(silent_server: str, tmp_path: Path) -> None:
    """The renewer thread survives each failed renew and calls on_lost once past the deadline."""
    config = LeaseConfig(name="l", namespace="default", renew_deadline=1, retry_period=0.1)
    elector = LeaderElector(_api(silent_server, tmp_path), config, "me")
    elector._renewed(time.monotonic())  # as if it had just renewed against a live API server
    lost = threading.Event()
    outcome = _finishes(lambda: elector.keep_renewing(threading.Event(), lost.set))
    assert outcome == {"value": None} and lost.is_set()
    assert not elector.is_leader()


def test_a_request_naming_its_own_timeout_keeps_it(silent_server: str, tmp_path: Path) -> None:
    seen: list[Any] = []
    api = _api(silent_server, tmp_path)
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
