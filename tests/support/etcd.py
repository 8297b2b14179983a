"""etcd's v3 JSON gateway on the test plane's client URL: what `etcdctl compaction` does."""

from __future__ import annotations

import base64

import httpx


def revision(etcd_url: str) -> int:
    """etcd's current revision (the header of any range request)."""
    key = base64.b64encode(b"/registry/").decode()
    body = httpx.post(f"{etcd_url}/v3/kv/range", json={"key": key, "count_only": True}, timeout=10).json()
    return int(body["header"]["revision"])


def compact(etcd_url: str, at: int | None = None) -> int:
    """Compact etcd's history up to `at` (default: now), physically; returns the revision."""
    target = at if at is not None else revision(etcd_url)
    response = httpx.post(f"{etcd_url}/v3/kv/compaction", json={"revision": str(target), "physical": True}, timeout=30)
    response.raise_for_status()
    return target
