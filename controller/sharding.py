"""Which shard owns a rollout, and whether a shard's leader may reconcile (pure: no I/O).

Ownership: shard K of N owns a rollout iff the first 8 bytes of sha256(metadata.uid), read as a
big-endian integer, are K modulo N. Why the uid: a hash of it spreads rollouts evenly over the
shards (namespaces are not even: one team may own most rollouts); it is fixed for the object's
whole life (a name is reused by a new object after a delete, a uid never), and claiming a rollout
needs no write: every replica computes the same owner from what the watch shows.

Changing the shard count: during a `helm upgrade` from N to M shards, processes of both counts run
at once, and shard 0 of 2 and shard 2 of 3 own some of the same rollouts. The Leases settle it:
each leader's Lease records its shard count and when its process started. A leader reconciles
only while no live Lease of the set records another count (`verdict` says RECONCILE); otherwise
the later-started side waits (WAIT) and the earlier-started one steps down (STEP_DOWN: it stops,
releases its Lease and exits). Safety rests only on the first rule (no leader reconciles while it
sees a live Lease of another count, and each checks after it acquires, so of two leaders of
different counts the later one always sees the earlier); the start times only choose who leaves,
so a skewed clock can delay the change, never make two counts reconcile at once.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass


def shard_of(uid: str, shards: int) -> int:
    """The shard (0-based, < shards) that owns the rollout with this uid."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") % shards


def owns(uid: str, shards: int, shard: int) -> bool:
    return shards == 1 or shard_of(uid, shards) == shard


def lease_name(prefix: str, shards: int, shard: int) -> str:
    """One shard's Lease; a single shard keeps the unsharded name, so upgrading to this version
    changes nothing for an install of one shard."""
    return prefix if shards == 1 else f"{prefix}-{shard}"


def in_set(prefix: str, name: str) -> bool:
    """Whether a Lease of that name belongs to the set of `prefix` (any shard count)."""
    if name == prefix:
        return True
    head, _, tail = name.rpartition("-")
    return head == prefix and tail.isdigit()


@dataclass(frozen=True)
class Holder:
    """What a live Lease says of its holder: its shard count, when its process started (RFC 3339,
    UTC, microseconds: compared as text), and its identity (the tie-break)."""

    shards: int
    started: str
    identity: str


class Verdict(enum.Enum):
    RECONCILE = "reconcile"
    WAIT = "wait"
    STEP_DOWN = "step_down"


def verdict(me: Holder, live: list[Holder]) -> Verdict:
    """What a leader does, given the holders of the other live Leases of its set."""
    others = [other for other in live if other.shards != me.shards]
    if not others:
        return Verdict.RECONCILE
    mine = (me.started, me.identity)
    if all(mine > (other.started, other.identity) for other in others):
        return Verdict.WAIT
    return Verdict.STEP_DOWN
