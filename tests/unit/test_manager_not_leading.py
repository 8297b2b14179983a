"""A key that arrives while this replica may not write is looked at again, never dropped.

A replica whose last renew is older than the renew deadline (a slow or paused API server) must
write nothing; but once the renewer catches up, every rollout it was handed must still be
reconciled. Dropping the key lost it for good: nothing else requeues a rollout whose status
does not change (the paused-API-server test once stalled this way). Stand-ins here are the
elector's answer and a reconciler that records its calls: the manager's queue logic is pure.
"""

from __future__ import annotations

from typing import Any

from controller.manager import NOT_LEADING_RETRY, Manager, ManagerSettings
from controller.reconciler import NotLeader
from controller.telemetry import Telemetry


class Elector:
    def __init__(self) -> None:
        self.leading = False

    def is_leader(self) -> bool:
        return self.leading


class Reconciler:
    def __init__(self, raises: bool = False) -> None:
        self.calls: list[tuple[str, str]] = []
        self.raises = raises

    def reconcile(self, namespace: str, name: str) -> None:
        self.calls.append((namespace, name))
        if self.raises:
            raise NotLeader("lost leadership: not writing")


def _manager(reconciler: Any, elector: Any) -> Manager:
    return Manager(
        rollouts=None,  # type: ignore[arg-type]
        reconciler=reconciler,
        telemetry=Telemetry(),
        settings=ManagerSettings(),
        elector=elector,
    )


def test_a_key_seen_while_not_leading_comes_back_and_is_reconciled_once_leading() -> None:
    elector, reconciler = Elector(), Reconciler()
    manager = _manager(reconciler, elector)
    manager._reconcile(("ns", "demo"))
    assert reconciler.calls == []  # nothing done while it may not write
    elector.leading = True
    key = manager.queue.get(timeout=NOT_LEADING_RETRY + 30)
    assert key == ("ns", "demo"), "the key was dropped"
    manager._reconcile(key)
    assert reconciler.calls == [("ns", "demo")]


def test_a_reconcile_refused_mid_way_for_leadership_comes_back() -> None:
    elector = Elector()
    elector.leading = True
    manager = _manager(Reconciler(raises=True), elector)
    manager._reconcile(("ns", "demo"))
    assert manager.queue.get(timeout=NOT_LEADING_RETRY + 30) == ("ns", "demo")
