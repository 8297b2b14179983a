"""tests/support/traefik.py's objects and static configuration: one entry point per scenario and a
Gateway listener on each entry point's port (Traefik serves a listener from the entry point with
its port); Traefik's own entry point stays on the namespace's loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.traefik import gateway, static_config


def config(entry_points: dict[str, int]) -> dict[str, object]:
    return static_config(
        api_url="https://127.0.0.1:6443", token="t", ca_file=Path("/ca.crt"), entry_points=entry_points, ping_port=8082
    )


def test_one_entry_point_per_scenario_and_traefiks_own_on_loopback() -> None:
    cfg = config({"better": 8000, "errors": 8001})
    assert cfg["entryPoints"] == {
        "better": {"address": ":8000"},
        "errors": {"address": ":8001"},
        "traefik": {"address": "127.0.0.1:8082"},
    }
    assert cfg["ping"] == {"entryPoint": "traefik"}
    assert cfg["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}


def test_traefiks_own_entry_point_name_is_refused() -> None:
    with pytest.raises(ValueError, match="traefik"):
        config({"traefik": 8000})


def test_gateway_listeners_by_name_on_the_entry_points_ports() -> None:
    gw = gateway("demo-gateway", listeners={"better": 8000, "errors": 8001})
    assert gw["spec"]["listeners"] == [
        {"name": "better", "protocol": "HTTP", "port": 8000},
        {"name": "errors", "protocol": "HTTP", "port": 8001},
    ]
    assert gateway()["spec"]["listeners"] == [{"name": "web", "protocol": "HTTP", "port": 8000}]
