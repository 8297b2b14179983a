"""The dashboard's memory of the watch: the fallback history per guardrail and the stream's messages
(pure: the Board is fed watch events by hand; the server, the watch and the browser are tested in
tests/integration/test_dashboard.py), and the Host check on a loopback socket."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from controller.cli.dashboard import HISTORY_POINTS, Board, DashboardServer, hosts, summary


def rollout(
    name: str = "r", *, started: str = "2026-11-28T12:00:00Z", evaluated: str | None = None, value: float = 0.01
) -> dict[str, Any]:
    guardrails = []
    if evaluated is not None:
        evidence = {
            "candidateValue": value,
            "incumbentValue": 0.02,
            "limit": 0.05,
            "candidateSamples": 100,
            "worse": 0.5,
        }
        guardrails.append({"name": "error-rate", "verdict": "Pass", "lastEvaluated": evaluated, "evidence": evidence})
    return {
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"},
        "spec": {"candidate": {"name": "v2"}},
        "status": {"phase": "Progressing", "rolloutStarted": started, "guardrails": guardrails, "stepDisplay": "1/2"},
    }


def board() -> Board:
    return Board(None, namespace="ns", prometheus=None)


def points(b: Board, name: str = "r") -> list[dict[str, Any]]:
    return list(b.history[("ns", name)]["error-rate"])


def test_each_analysis_is_one_point_once() -> None:
    b = board()
    for evaluated in ("2026-11-28T12:00:10Z", "2026-11-28T12:00:10Z", "2026-11-28T12:00:20Z"):
        b.apply("MODIFIED", rollout(evaluated=evaluated))
    got = points(b)
    assert [p["t"] for p in got] == sorted({p["t"] for p in got}) and len(got) == 2
    assert got[-1]["candidateValue"] == 0.01 and got[-1]["limit"] == 0.05 and got[-1]["notWorse"] is None


def test_a_new_rollout_of_the_same_object_starts_its_own_history() -> None:
    b = board()
    b.apply("MODIFIED", rollout(evaluated="2026-11-28T12:00:10Z"))
    b.apply("MODIFIED", rollout(started="2026-11-28T13:00:00Z", evaluated="2026-11-28T13:00:10Z"))
    assert len(points(b)) == 1


def test_history_is_bounded_and_forgotten_with_the_rollout() -> None:
    b = board()
    for i in range(HISTORY_POINTS + 10):
        b.apply("MODIFIED", rollout(evaluated=f"2026-11-28T12:{i // 60:02d}:{i % 60:02d}Z"))
    assert len(points(b)) == HISTORY_POINTS
    b.apply("DELETED", rollout())
    assert ("ns", "r") not in b.history and b.summaries() == []


def test_every_change_goes_to_every_open_stream_as_one_message() -> None:
    b = board()
    first, second = b.subscribe(), b.subscribe()
    b.apply("ADDED", rollout())
    b.unsubscribe(second)
    b.apply("DELETED", rollout())
    got = [json.loads(first.get_nowait()) for _ in range(2)]
    assert [m["type"] for m in got] == ["rollout", "deleted"]
    assert got[0]["rollout"] == summary(rollout()) and second.qsize() == 1


def test_the_fallback_series_come_from_the_status_when_no_prometheus_is_given() -> None:
    b = board()
    b.apply("MODIFIED", rollout(evaluated="2026-11-28T12:00:10Z"))
    series, source = b._series(rollout(), {g: list(p) for g, p in b.history[("ns", "r")].items()})
    assert source == "status"
    assert series["error-rate"]["candidate"] == [[1795867210.0, 0.01]]
    assert series["error-rate"]["notWorse"] == []


def test_the_server_answers_only_to_its_own_host_wherever_it_listens() -> None:
    """DNS rebinding at the HTTP level: a real socket on 127.0.0.2 (loopback, but not one of the
    names the dashboard used to check), no API server needed to serve the page and refuse."""
    server = DashboardServer(("127.0.0.2", 0), board(), allowed_hosts=("rollouts.example",))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]

        def get(host: str) -> httpx.Response:
            return httpx.get(server.url, headers={"Host": host}, timeout=10)

        assert get(f"127.0.0.2:{port}").status_code == 200
        assert get(f"localhost:{port}").status_code == 200
        assert get(f"Rollouts.Example:{port}").status_code == 200  # --allowed-host
        rebound = get(f"evil.example:{port}")
        assert rebound.status_code == 403 and "--allowed-host" in rebound.json()["error"]
        assert "token" not in rebound.text and server.token not in rebound.text
        post = httpx.post(
            f"{server.url}api/rollouts/ns/r/abort",
            headers={"Host": f"evil.example:{port}", "X-Modelrollout-Token": server.token},
            timeout=10,
        )
        assert post.status_code == 403
    finally:
        server.shutdown()
        server.server_close()


def test_the_hosts_a_dashboard_answers_to() -> None:
    assert hosts("0.0.0.0", 9797) == {"0.0.0.0:9797"}
    assert hosts("10.0.0.5", 9797, ("box", "box.example:443")) == {"10.0.0.5:9797", "box:9797", "box.example:443"}
    assert hosts("::1", 80) >= {"[::1]:80", "[::1]", "localhost", "127.0.0.1:80"}
