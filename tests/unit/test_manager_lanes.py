"""Which lane of the work queue an informer event goes to (manager.py, workqueue.py).

A change (spec, annotations, finalizers, deletion, a new object) is served before the resync; a
re-list's ADDED of an object the manager has seen as it is now is a resync itself; a status-only
update (our own write's echo) queues nothing. The manager's event handling is pure: no API server.
"""

from __future__ import annotations

from typing import Any

from controller.manager import Manager, ManagerSettings
from controller.telemetry import Telemetry


def _manager() -> Manager:
    settings = ManagerSettings()
    return Manager(rollouts=None, reconciler=None, telemetry=Telemetry(), settings=settings, elector=None)  # type: ignore[arg-type]


def _rollout(
    name: str, *, generation: int = 1, annotations: dict[str, str] | None = None, phase: str = "Promoted"
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "generation": generation,
                     "annotations": annotations or {}, "finalizers": ["modelrollout.io/finalizer"]},
        "status": {"phase": phase},
    }  # fmt: skip


def _served(manager: Manager) -> list[str]:
    names = []
    while (key := manager.queue.get(timeout=0)) is not None:
        names.append(key[1])
        manager.queue.done(key)
    return names


def test_a_relist_of_unchanged_rollouts_waits_behind_a_change() -> None:
    m = _manager()
    for name in ("a", "b", "c"):
        m._on_event("ADDED", _rollout(name))
    assert _served(m) == ["a", "b", "c"]  # first seen: served as changes
    for name in ("a", "b", "c"):
        m._on_event("ADDED", _rollout(name))  # a re-list: nothing changed
    m._on_event("MODIFIED", _rollout("c", annotations={"modelrollout.io/abort": "now"}))
    assert _served(m) == ["c", "a", "b"]


def test_a_status_only_update_queues_nothing_a_spec_change_is_served_first() -> None:
    m = _manager()
    m._on_event("ADDED", _rollout("a"))
    m._on_event("ADDED", _rollout("b"))
    assert _served(m) == ["a", "b"]
    m._on_event("MODIFIED", _rollout("a", phase="RolledBack"))  # the echo of a status write
    assert _served(m) == []
    m.queue.add(("ns", "a"), background=True)  # the resync
    m._on_event("MODIFIED", _rollout("b", generation=2))
    m._on_event("DELETED", _rollout("a"))
    assert _served(m) == ["b", "a"]  # the delete moved a ahead; served once
