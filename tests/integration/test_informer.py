"""The watch-fed caches (kube/informer.py) against the real kube-apiserver.

Given objects created, changed and deleted through the API server, the informer's cache follows
them: listed in pages (continue tokens), watched across watches the server ends, our own writes
seen at once, and a deletion never undone by a late copy. 410 Gone and the re-list are covered
by tests/reliability/test_control_plane_faults.py (etcd compacted under a watch).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from controller.api import GROUP, PLURAL, VERSION
from controller.kube import informer as informer_module
from controller.kube.errors import NotFound
from controller.kube.informer import Informer, KubeObject, ListWatch, Page
from controller.kube.objects import Objects
from controller.kube.rollouts import Rollouts
from controller.routers.gatewayapi import HTTPROUTE
from tests.support.gatewayapi import make_httproute
from tests.support.world import rollout_body

pytestmark = pytest.mark.usefixtures("gateway_api")

ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")


def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    """Wait for the watch to deliver (not a timing assertion: the bound only stops a hung test)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the cache never caught up")
        time.sleep(0.05)


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


class CountedWatches:
    """The real ListWatch, counting the lists and the watches it opened."""

    def __init__(self, source: ListWatch) -> None:
        self.source, self.lists, self.watches = source, 0, 0

    def list_page(self, namespace: str | None, *, limit: int, cont: str) -> Page:
        self.lists += not cont
        return self.source.list_page(namespace, limit=limit, cont=cont)

    def watch(
        self, namespace: str | None, resource_version: str, *, timeout_seconds: int
    ) -> Iterator[tuple[str, KubeObject]]:
        self.watches += 1
        return self.source.watch(namespace, resource_version, timeout_seconds=timeout_seconds)


def run(informer: Informer, stop: threading.Event) -> Informer:
    threading.Thread(target=informer.run, args=(stop,), daemon=True).start()
    assert informer.synced.wait(30), "the informer never listed"
    return informer


def test_rollouts_are_listed_in_pages_then_followed_across_watches(
    api_client: client.ApiClient, namespace: str, stop: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    custom = client.CustomObjectsApi(api_client)
    for i in range(5):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout_body(f"r{i}", "a", "b"))
    monkeypatch.setattr(informer_module, "PAGE_SIZE", 2)  # three pages: two continue tokens
    events: list[tuple[str, str]] = []
    rollouts = Rollouts(api_client)
    # The server ends each watch after 1 s: the changes below land across several watches.
    (informer,) = rollouts.cache(
        [namespace], watch_timeout=1, on_event=lambda kind, obj: events.append((kind, obj["metadata"]["name"]))
    )
    informer.source = counted = CountedWatches(informer.source)
    run(informer, stop)

    assert sorted(name for _, name in events) == [f"r{i}" for i in range(5)]
    assert {kind for kind, _ in events} == {"ADDED"}
    assert "managedFields" not in rollouts.get(namespace, "r0")["metadata"]

    eventually(lambda: counted.watches >= 3)  # two watches ended and were re-opened, without a list
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "r1", {"spec": {"paused": True}})
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "r2")
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout_body("r5", "a", "b"))

    eventually(lambda: ("ADDED", "r5") in events and ("DELETED", "r2") in events)
    eventually(lambda: rollouts.get(namespace, "r1")["spec"].get("paused") is True)
    with pytest.raises(NotFound):
        rollouts.get(namespace, "r2")
    assert sorted(name for _, name in informer.cached_keys()) == ["r0", "r1", "r3", "r4", "r5"]
    assert counted.lists == 1, "a watch the server ended was re-opened with a list"
    # What the cache hands out is a copy: changing it changes nothing cached.
    rollouts.get(namespace, "r0")["spec"]["candidate"]["name"] = "changed"
    assert rollouts.get(namespace, "r0")["spec"]["candidate"]["name"] == "b"
    # And it is what the API server has.
    assert (
        rollouts.get(namespace, "r1", fresh=True)["metadata"]["resourceVersion"]
        == (rollouts.get(namespace, "r1")["metadata"]["resourceVersion"])
    )


def test_our_own_status_write_is_read_back_at_once_and_never_replaced_by_an_older_copy(
    api_client: client.ApiClient, namespace: str, stop: threading.Event
) -> None:
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rollout_body("demo", "a", "b"))
    rollouts = Rollouts(api_client)
    (informer,) = rollouts.cache([namespace], watch_timeout=30, on_event=lambda kind, obj: None)
    run(informer, stop)
    before = rollouts.get(namespace, "demo")

    written = rollouts.replace_status(before, {"phase": "Progressing", "message": "ours"})

    # Read straight after the write, whether or not its watch event has arrived.
    assert rollouts.get(namespace, "demo")["status"]["message"] == "ours"
    informer.remember(before)  # a late, older copy (e.g. an answer that crossed the write)
    assert rollouts.get(namespace, "demo")["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]


def test_routes_are_cached_on_first_read_and_a_deleted_one_is_not_brought_back(
    api_client: client.ApiClient, namespace: str, stop: threading.Event
) -> None:
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object(*ROUTES[:2], namespace, ROUTES[2], make_httproute("models", [("a", 100)]))
    objects = Objects(api_client)
    objects.cache(namespaces=[namespace], watch_timeout=30, stop=stop)
    first = objects.get(HTTPROUTE, namespace, "models")  # starts the informer; read from the API server
    (informer,) = objects.informers()
    assert informer.synced.wait(30)
    assert objects.get(HTTPROUTE, namespace, "models")["metadata"]["uid"] == first["metadata"]["uid"]
    assert [o["metadata"]["name"] for o in objects.list_all(HTTPROUTE, namespace)["items"]] == ["models"]

    patched = objects.json_patch(
        HTTPROUTE, namespace, "models", [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 7}]
    )
    assert objects.get(HTTPROUTE, namespace, "models")["spec"]["rules"][0]["backendRefs"][0]["weight"] == 7

    custom.delete_namespaced_custom_object(*ROUTES[:2], namespace, ROUTES[2], "models")
    eventually(lambda: informer.get(namespace, "models") is None)
    informer.remember(patched)  # our patch's answer, arriving after the deletion was watched
    assert informer.get(namespace, "models") is None
    with pytest.raises(NotFound):
        objects.get(HTTPROUTE, namespace, "models")  # not cached: asked of the API server
