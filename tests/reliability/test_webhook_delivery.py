"""Notifications survive the controller: SIGKILLed the moment it decides, with the receiver down.

The controller is killed the instant it logs the Promoted decision (the verdict is in status,
its notification not yet delivered), while the receiver (tests/support/receiver.py, on
loopback) is down. The receiver comes back, a new controller starts (same identity, as a
Deployment would restart it), and every notice arrives: at least once, exactly once per
delivery id after the receiver's dedupe, in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.controller import ControllerFactory
from tests.support.receiver import Receiver
from tests.support.world import World, phase, rollout_body, unique

pytestmark = pytest.mark.usefixtures("gateway_api")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_killed_between_the_verdict_and_its_notification_still_delivers_once_per_id(
    world: World, controllers: ControllerFactory, receiver: Receiver
) -> None:
    receiver.default = 200
    events = ["StepAdvanced", "Promoted"]
    hooks = [{"name": "audit", "type": "Notification", "url": receiver.url("/audit"), "events": events}]
    steps = {"steps": [{"weight": 20, "hold": "2s"}, {"weight": 50, "hold": "2s"}]}
    analysis = {"interval": "1s", "window": "10s", "progressDeadline": "60s", "inconclusiveLimit": 10}
    lease = unique("lease")
    first = controllers.start("victim", "--namespace", world.namespace, lease_name=lease)
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps, analysis=analysis, webhooks=hooks))

    # The step advance is delivered while the receiver is up; then it goes down, and the
    # controller is killed the moment it logs its verdict.
    receiver.wait(lambda got: any(r.json()["event"] == "StepAdvanced" for r in got))
    receiver.down()
    deadline = time.monotonic() + 90
    while not any(line.get("decision") == "Promoted" for line in first.logs()):
        assert time.monotonic() < deadline, "no Promoted decision"
        time.sleep(0.01)
    first.kill()
    obj = world.get()
    assert obj["status"]["phase"] == "Promoted"
    owed = [n["event"] for n in obj["status"]["notifications"]["outbox"]]
    assert "Promoted" in owed, f"the verdict's notice is in status, owed: {owed}"

    receiver.up()  # same port
    controllers.start("victim", "--namespace", world.namespace, lease_name=lease)
    got = receiver.wait(lambda got: any(r.json()["event"] == "Promoted" for r in got), timeout=120)

    by_id: dict[str, list[str]] = {}
    for r in got:
        by_id.setdefault(r.headers["x-modelrollout-delivery"], []).append(r.json()["event"])
    deduped = [seen[0] for seen in by_id.values()]
    assert sorted(deduped) == ["Promoted", "StepAdvanced"], by_id
    assert all(len(set(seen)) == 1 for seen in by_id.values()), "one delivery id, one notice"
    settled = world.wait(lambda o: not o["status"]["notifications"]["outbox"], timeout=60)
    assert phase("Promoted")(settled)
    assert settled["status"]["notifications"]["receivers"][0]["lastCode"] == 200
