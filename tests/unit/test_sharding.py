"""Shard ownership and the shard-count handover rule (controller/sharding.py): pure functions.

Ownership must be a partition (every uid owned by exactly one shard of N), spread roughly evenly,
and the same answer for the same uid every time. The handover rule must never let two leaders of
different shard counts both reconcile, whatever each sees of the other, and whatever their clocks.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from controller.sharding import Holder, Verdict, in_set, lease_name, owns, shard_of, verdict

uids = st.uuids().map(str)


@given(uid=uids, shards=st.integers(1, 64))
def test_every_uid_is_owned_by_exactly_one_shard(uid: str, shards: int) -> None:
    owners = [k for k in range(shards) if owns(uid, shards, k)]
    assert owners == [shard_of(uid, shards)]


@given(uid=uids)
def test_one_shard_owns_everything(uid: str) -> None:
    assert owns(uid, 1, 0) and shard_of(uid, 1) == 0


def test_the_owner_is_a_fixed_function_of_the_uid() -> None:
    # Pinned: a change of the function would move rollouts between shards on an upgrade.
    uid = "0c7f5d8e-3b1a-4c2d-9e6f-1a2b3c4d5e6f"
    value = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big")
    assert [shard_of(uid, n) for n in (2, 3, 5, 7)] == [value % n for n in (2, 3, 5, 7)] == [0, 0, 0, 6]


@given(shards=st.integers(2, 8), seed=st.integers(0, 2**32 - 1))
def test_10000_uids_spread_evenly(shards: int, seed: int) -> None:
    rng = random.Random(seed)
    count = 10_000
    spread = Counter(shard_of(str(uuid.UUID(int=rng.getrandbits(128), version=4)), shards) for _ in range(count))
    expected = count / shards
    # A binomial count: 6 standard deviations either side (a false failure about once in 10^8).
    sigma = (count * (1 / shards) * (1 - 1 / shards)) ** 0.5
    assert set(spread) == set(range(shards))
    assert all(abs(n - expected) < 6 * sigma for n in spread.values()), spread


def test_lease_names() -> None:
    assert lease_name("mr", 1, 0) == "mr"
    assert [lease_name("mr", 3, k) for k in range(3)] == ["mr-0", "mr-1", "mr-2"]
    assert in_set("mr", "mr") and in_set("mr", "mr-2") and in_set("mr", "mr-10")
    assert not in_set("mr", "mr-x") and not in_set("mr", "mr-1-0") and not in_set("mr", "other-1")
    assert not in_set("mr-1", "mr-2")


holders = st.builds(
    Holder,
    shards=st.integers(0, 4),
    started=st.sampled_from(["", "2026-11-28T22:00:00.000001+00:00", "2026-11-28T22:00:01.000000+00:00"]),
    identity=st.sampled_from(["a", "b", "c"]),
)


def test_same_count_reconciles_beside_each_other() -> None:
    me = Holder(3, "2026-11-28T22:00:01.000000+00:00", "p0")
    assert verdict(me, []) is Verdict.RECONCILE
    assert verdict(me, [Holder(3, "", "p1"), Holder(3, "2030", "p2")]) is Verdict.RECONCILE


def test_the_later_count_waits_and_the_earlier_steps_down() -> None:
    old = Holder(2, "2026-11-28T22:00:00.000000+00:00", "old-0")
    new = Holder(3, "2026-11-28T22:05:00.000000+00:00", "new-2")
    assert verdict(new, [old]) is Verdict.WAIT
    assert verdict(old, [new]) is Verdict.STEP_DOWN
    # A Lease from before sharding (no annotations) counts as one shard that started first.
    legacy = Holder(1, "", "legacy")
    assert verdict(new, [legacy]) is Verdict.WAIT


@given(a=holders, b=holders)
def test_two_leaders_of_different_counts_never_both_reconcile_and_exactly_one_leaves(a: Holder, b: Holder) -> None:
    va, vb = verdict(a, [b]), verdict(b, [a])
    if a.shards == b.shards:
        assert va is vb is Verdict.RECONCILE
        return
    assert Verdict.RECONCILE not in (va, vb)
    if (a.started, a.identity) != (b.started, b.identity):
        assert {va, vb} == {Verdict.WAIT, Verdict.STEP_DOWN}


@given(me=holders, others=st.lists(holders, max_size=6))
def test_a_leader_reconciles_only_when_every_live_lease_shares_its_count(me: Holder, others: list[Holder]) -> None:
    result = verdict(me, others)
    assert (result is Verdict.RECONCILE) == all(o.shards == me.shards for o in others)
