"""A watch-fed cache of one kind of object in one scope (an informer, as client-go's).

Why: reading every rollout and its route fresh from the API server on every reconcile made the
controller's CPU, and the API server's, grow with rollouts x reconciles (issue 23: the knee
between 1,000 and 2,000 progressing rollouts). From a cache, a reconcile reads nothing from the
API server unless it writes. Writes still carry the resourceVersion of what was read, so a stale
read costs a 409 (the caller re-reads from the API server and recomputes), never a wrong write.

- List once (in pages, so 10,000 objects never sit in one response), then watch from the list's
  resourceVersion. A watch the server ends (its timeout) is re-opened from the last
  resourceVersion seen, an event's or a bookmark's, without listing again.
- 410 Gone (the history was compacted) means: list again. Objects gone meanwhile are reported
  DELETED, the rest ADDED, so a handler misses nothing that happened while nobody watched.
- Our own writes are put in the cache at once (`remember`), so our next read sees them rather than
  the older object until its watch event arrives. Whichever of two copies has the larger
  resourceVersion wins: an API server backed by etcd gives etcd revisions, one counter for all
  objects, which its own watch cache compares the same way; a resourceVersion that is not an
  integer is never taken as newer than the watch's.
  A write answered after the object's deletion was watched (a route deleted right after our
  patch, a rollout whose last finalizer we removed) does not bring it back: the last deletions
  are remembered with their resourceVersion.
- Objects are stored as compact JSON text without `metadata.managedFields` (nothing here reads
  them; they are often half an object's size). Parsed, a rollout with a full status (20 history
  entries, 4.4 KB of JSON) takes 19 KB of Python dicts and strings: 190 MB for 10,000 of them,
  against 45 MB as text. Each read parses a new copy, so a caller may change what it got.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import structlog

from controller.kube.errors import Forbidden, Gone, KubeError, NotFound

log = structlog.get_logger("informer")

KubeObject = dict[str, Any]
Key = tuple[str, str]
# One page of a list: the items, the list's resourceVersion, and the continue token ('' when last).
Page = tuple[list[KubeObject], str, str]

PAGE_SIZE = 500
MAX_BACKOFF = 30.0
# Deletions remembered so that a late answer to our own write does not resurrect the object.
TOMBSTONES = 1000


class ListWatch(Protocol):
    """How an informer reads its kind of object from the API server (one scope: a namespace, or
    None for all)."""

    def list_page(self, namespace: str | None, *, limit: int, cont: str) -> Page: ...

    def watch(
        self, namespace: str | None, resource_version: str, *, timeout_seconds: int
    ) -> Iterator[tuple[str, KubeObject]]: ...


def key_of(obj: KubeObject) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _version(obj: KubeObject | None) -> int | None:
    try:
        return int(obj["metadata"]["resourceVersion"]) if obj is not None else None
    except (KeyError, TypeError, ValueError):
        return None


def _slim(obj: KubeObject) -> KubeObject:
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


class _Entry:
    """One cached object: its resourceVersion (None when not an integer) and its JSON text."""

    __slots__ = ("text", "version")

    def __init__(self, obj: KubeObject) -> None:
        self.version = _version(obj)
        self.text = json.dumps(_slim(obj), separators=(",", ":"))

    def parse(self) -> KubeObject:
        parsed: KubeObject = json.loads(self.text)
        return parsed

    def newer_than(self, cached: _Entry | None) -> bool:
        """Whether this copy is known to be later than `cached` (None: nothing cached)."""
        if cached is None:
            return True
        return self.version is not None and cached.version is not None and self.version > cached.version


class Informer:
    """The objects of one kind in one scope, as the API server last told us.

    `on_event(kind, obj)` is called (on the informer's thread) for each change: ADDED (every
    object of a list, the first and each re-list), MODIFIED, DELETED, with the object as the API
    server sent it (a copy of its own). With `keep`, only the objects it accepts are stored and
    reported; the others are dropped as they arrive (a page of a list at a time), so what the cache
    holds falls with the share kept.
    """

    def __init__(
        self,
        source: ListWatch,
        *,
        name: str,
        namespace: str | None,
        watch_timeout: int = 60,
        on_event: Callable[[str, KubeObject], None] | None = None,
        keep: Callable[[KubeObject], bool] | None = None,
    ) -> None:
        self.source, self.name, self.namespace = source, name, namespace
        self.watch_timeout = watch_timeout
        self.on_event = on_event
        # Objects it is not given are neither stored nor reported (a shard's: only its own rollouts).
        self.keep = keep
        self.synced = threading.Event()
        # Why the last list failed (the kind is not installed, RBAC lacks list/watch), else None.
        self.failure: str | None = None
        self._store: dict[Key, _Entry] = {}
        self._deleted: OrderedDict[Key, int | None] = OrderedDict()
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> KubeObject | None:
        """A copy of the cached object, or None when it is not in the cache."""
        with self._lock:
            entry = self._store.get((namespace, name))
        return None if entry is None else entry.parse()

    def in_namespace(self, namespace: str) -> list[KubeObject]:
        """Copies of the cached objects of one namespace."""
        with self._lock:
            found = [entry for (ns, _), entry in self._store.items() if ns == namespace]
        return [entry.parse() for entry in found]

    def cached_keys(self) -> list[Key]:
        with self._lock:
            return list(self._store)

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    # -- our own writes -------------------------------------------------------------------------

    def remember(self, obj: KubeObject) -> None:
        """Put an object the API server returned to us in the cache, if it is newer than the cached one."""
        if self.keep is not None and not self.keep(obj):
            return
        key, entry = key_of(obj), _Entry(obj)
        with self._lock:
            # Before the first list, the list brings it (and would take an unknown key for a deleted one).
            if not (key in self._store or self.synced.is_set()) or self._was_deleted(key, obj):
                return
            if entry.newer_than(self._store.get(key)):
                self._store[key] = entry

    def _was_deleted(self, key: Key, obj: KubeObject) -> bool:
        """Whether the watch reported this object deleted at or after this version of it."""
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return True  # the API server deletes it as it answers
        if key not in self._deleted:
            return False
        deleted, version = self._deleted[key], _version(obj)
        return deleted is None or version is None or version <= deleted

    # -- list and watch -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """List, then watch, until `stop` is set; re-list on 410 Gone; back off on failures."""
        backoff = 1.0
        while not stop.is_set():
            try:
                version = self._list()
                backoff = 1.0
                while not stop.is_set():
                    version = self._watch(version, stop)
            except Gone as exc:
                log.info("watch expired: re-listing", informer=self.name, namespace=self.namespace, error=str(exc))
            except (NotFound, Forbidden) as exc:
                # The kind is not installed, or we may not list or watch it: readers go to the API
                # server meanwhile; look again later.
                self.synced.clear()  # a cache that can no longer be refreshed is not read
                if self.failure != str(exc):
                    log.warning("cannot list: not cached", informer=self.name, namespace=self.namespace, error=str(exc))
                self.failure = str(exc)
                stop.wait(MAX_BACKOFF)
            except KubeError as exc:
                log.warning(
                    "watch failed: retrying", informer=self.name, namespace=self.namespace, error=str(exc),
                    retry_in=backoff,
                )  # fmt: skip
                stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _list(self) -> str:
        # Each page is turned into entries as it comes: only one page is ever held parsed.
        listed: dict[Key, _Entry] = {}
        cont, version = "", ""
        while True:
            page, version, cont = self.source.list_page(self.namespace, limit=PAGE_SIZE, cont=cont)
            listed.update((key_of(obj), _Entry(obj)) for obj in page if self.keep is None or self.keep(obj))
            if not cont:
                break
        with self._lock:
            gone = [(key, entry) for key, entry in self._store.items() if key not in listed]
            # A write of ours answered after the list was served is newer than the listed copy.
            for key, entry in listed.items():
                cached = self._store.get(key)
                if cached is None or not cached.newer_than(entry):
                    self._store[key] = entry
            for key, _ in gone:
                self._store.pop(key, None)
            self._deleted.clear()
        self.failure = None
        self.synced.set()
        if self.on_event is not None:
            for _, entry in gone:
                self._emit("DELETED", entry.parse())
            for entry in listed.values():
                self._emit("ADDED", entry.parse())
        log.debug("listed", informer=self.name, namespace=self.namespace, objects=len(listed), version=version)
        return version

    def _watch(self, version: str, stop: threading.Event) -> str:
        """One watch until the server ends it; returns the last resourceVersion seen."""
        for kind, obj in self.source.watch(self.namespace, version, timeout_seconds=self.watch_timeout):
            meta = obj.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            if kind == "BOOKMARK" or (self.keep is not None and not self.keep(obj)):
                if stop.is_set():
                    break
                continue
            key = key_of(obj)
            with self._lock:
                if kind == "DELETED":
                    self._store.pop(key, None)
                    self._deleted[key] = _version(obj)
                    while len(self._deleted) > TOMBSTONES:
                        self._deleted.popitem(last=False)
                else:
                    entry, cached = _Entry(obj), self._store.get(key)
                    if cached is None or not cached.newer_than(entry):
                        self._store[key] = entry
            self._emit(kind, obj)
            if stop.is_set():
                break
        return version

    def _emit(self, kind: str, obj: KubeObject) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, obj)
        except Exception:
            log.exception("informer handler failed", informer=self.name, kind=kind, key=key_of(obj))
