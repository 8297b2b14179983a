"""The informer's bookkeeping (kube/informer.py), driven by a scripted list and watch.

Which copy of an object wins (ours, the list's, the watch's), what a re-list after 410 Gone
reports, and what a kind we may not list does to readers: pure logic over the answers, so the
answers are scripted here. The informer against the real kube-apiserver is
tests/integration/test_informer.py; the re-list after a real compaction is in tests/reliability.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from controller.kube.errors import Forbidden, Gone
from controller.kube.informer import Informer, KubeObject, Page


def obj(name: str, version: int, **extra: object) -> KubeObject:
    meta: dict[str, object] = {"namespace": "ns", "name": name, "resourceVersion": str(version)}
    meta.update(extra)
    return {"metadata": {**meta, "managedFields": [{"manager": "x"}]}, "spec": {"v": version}}


class Script:
    """Answers each list with the next of `lists` and each watch with the next of `watches`;
    when the script is over, it stops the informer."""

    def __init__(self, lists: list[list[KubeObject] | Exception], watches: list[list[tuple[str, KubeObject]]]) -> None:
        self.lists, self.watches = lists, watches
        self.stop = threading.Event()
        self.watched_from: list[str] = []

    def list_page(self, namespace: str | None, *, limit: int, cont: str) -> Page:
        if not self.lists:
            self.stop.set()
            return [], "0", ""
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer, "100", ""

    def watch(
        self, namespace: str | None, resource_version: str, *, timeout_seconds: int
    ) -> Iterator[tuple[str, KubeObject]]:
        self.watched_from.append(resource_version)
        if not self.watches:
            self.stop.set()
            return iter(())
        events = self.watches.pop(0)
        if events and events[-1][0] == "GONE":
            return _then_gone(events[:-1])
        return iter(events)


def _then_gone(events: list[tuple[str, KubeObject]]) -> Iterator[tuple[str, KubeObject]]:
    yield from events
    raise Gone("too old resource version")


def run(script: Script) -> tuple[Informer, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []
    informer = Informer(script, name="t", namespace="ns", on_event=lambda k, o: seen.append((k, o["metadata"]["name"])))
    informer.run(script.stop)
    return informer, seen


def test_a_watch_continues_from_the_last_version_seen_bookmarks_included() -> None:
    script = Script(
        [[obj("a", 10)]],
        [[("MODIFIED", obj("a", 11)), ("BOOKMARK", {"metadata": {"resourceVersion": "50"}})], []],
    )
    informer, seen = run(script)
    assert script.watched_from[:2] == ["100", "50"]  # the first watch from the list, the next from the bookmark
    assert seen == [("ADDED", "a"), ("MODIFIED", "a")]
    cached = informer.get("ns", "a")
    assert cached is not None and cached["spec"] == {"v": 11} and "managedFields" not in cached["metadata"]


def test_gone_relists_and_reports_what_vanished_meanwhile() -> None:
    script = Script([[obj("a", 10), obj("b", 10)], [obj("b", 20), obj("c", 20)]], [[("GONE", obj("x", 0))], []])
    informer, seen = run(script)
    assert sorted(name for _, name in informer.cached_keys()) == ["b", "c"]
    assert seen[2:] == [("DELETED", "a"), ("ADDED", "b"), ("ADDED", "c")]


def test_our_newer_write_survives_an_older_watch_event_and_a_deletion_is_never_undone() -> None:
    script = Script([[obj("a", 10)]], [])
    informer = Informer(script, name="t", namespace="ns")
    informer._list()
    informer.remember(obj("a", 12))
    # The watch delivers the versions in between, and then ours.
    for version in (11, 12):
        script.watches = [[("MODIFIED", obj("a", version))]]
        informer._watch("100", threading.Event())
    assert (informer.get("ns", "a") or {})["spec"] == {"v": 12}
    script.watches = [[("DELETED", obj("a", 13))]]
    informer._watch("100", threading.Event())
    informer.remember(obj("a", 12))  # a late answer to a write of ours
    informer.remember(obj("a", 14, deletionTimestamp="now"))  # the answer that deleted it
    assert informer.get("ns", "a") is None
    informer.remember(obj("a", 15))  # created again, later
    assert (informer.get("ns", "a") or {})["spec"] == {"v": 15}


def test_a_copy_handed_out_is_the_callers() -> None:
    informer = Informer(Script([[obj("a", 10)]], []), name="t", namespace="ns")
    informer._list()
    mine = informer.get("ns", "a")
    assert mine is not None
    mine["spec"]["v"] = 99
    assert (informer.get("ns", "a") or {})["spec"] == {"v": 10}


def test_a_kind_we_may_not_list_is_not_read_from_the_cache() -> None:
    informer = Informer(Script([Forbidden("403: forbidden")], []), name="t", namespace="ns")
    stop = threading.Event()
    thread = threading.Thread(target=informer.run, args=(stop,), daemon=True)
    thread.start()
    for _ in range(200):
        if informer.failure:
            break
        threading.Event().wait(0.01)
    stop.set()
    thread.join(5)
    assert informer.failure == "403: forbidden" and not informer.synced.is_set()


def test_objects_it_is_not_given_are_neither_stored_nor_reported() -> None:
    mine = {"a", "c"}
    script = Script(
        [[obj("a", 10), obj("b", 10)]],
        [[("ADDED", obj("c", 11)), ("MODIFIED", obj("b", 12)), ("DELETED", obj("b", 13)), ("MODIFIED", obj("a", 14))]],
    )
    seen: list[tuple[str, str]] = []
    informer = Informer(
        script,
        name="t",
        namespace="ns",
        on_event=lambda k, o: seen.append((k, o["metadata"]["name"])),
        keep=lambda o: o["metadata"]["name"] in mine,
    )
    informer.run(script.stop)
    assert sorted(name for _, name in informer.cached_keys()) == ["a", "c"]
    assert seen == [("ADDED", "a"), ("ADDED", "c"), ("MODIFIED", "a")]
    assert script.watched_from[1] == "14"  # the skipped events still move the watch on
    informer.remember(obj("b", 20))  # a write's answer of another shard's object (a fresh read)
    assert informer.get("ns", "b") is None
