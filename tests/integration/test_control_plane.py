"""The local control plane is real: CRDs install, ModelRollouts round-trip, kubectl works."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import yaml
from kubernetes import client, watch

from controller.api import GROUP, PLURAL, VERSION
from tests.support.controlplane import running_control_plane
from tests.support.objects import minimal_rollout


def test_crd_is_established_and_served(api_client: client.ApiClient) -> None:
    crd = client.ApiextensionsV1Api(api_client).read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions["Established"] == "True"
    assert crd.spec.names.short_names == ["mro"]


def test_modelrollout_create_read_watch_delete_with_python_client(api_client: client.ApiClient, namespace: str) -> None:
    api = client.CustomObjectsApi(api_client)
    events: list[dict] = []
    ready = threading.Event()

    def watch_one() -> None:
        w = watch.Watch()
        ready.set()
        for event in w.stream(api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, timeout_seconds=30):
            events.append(event)
            w.stop()

    watcher = threading.Thread(target=watch_one)
    watcher.start()
    ready.wait()
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, minimal_rollout())
    read = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fraud-scorer")
    watcher.join(timeout=30)

    assert read["spec"]["candidate"]["name"] == "fraud-v2"
    assert read["metadata"]["uid"] == created["metadata"]["uid"]
    assert [e["type"] for e in events] == ["ADDED"]
    assert events[0]["object"]["metadata"]["name"] == "fraud-scorer"

    api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "fraud-scorer")
    remaining = api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    assert remaining == []


def test_modelrollout_round_trip_with_kubectl(kubectl: list[str], namespace: str, tmp_path) -> None:
    manifest = tmp_path / "mro.yaml"
    manifest.write_text(yaml.safe_dump(minimal_rollout("via-kubectl")))
    run = lambda *args: subprocess.run([*kubectl, "-n", namespace, *args], capture_output=True, text=True)  # noqa: E731

    applied = run("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr
    got = run("get", "mro", "via-kubectl", "-o", "json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["spec"]["traffic"]["gatewayAPI"]["httpRoute"] == "fraud-scorer"
    table = run("get", "modelrollouts")
    assert "via-kubectl" in table.stdout and "PHASE" in table.stdout
    deleted = run("delete", "mro", "via-kubectl", "--wait=true")
    assert deleted.returncode == 0, deleted.stderr
    assert "No resources found" in run("get", "mro").stderr


def test_stopping_a_plane_leaves_no_process_behind() -> None:
    with running_control_plane() as plane:
        pids = plane.pids()
        assert len(pids) == 2
        assert plane.apiserver is not None and plane.apiserver.poll() is None
    for proc in (plane.etcd, plane.apiserver):
        assert proc is not None and proc.returncode is not None
    assert not plane.workdir.exists()


def test_a_port_taken_before_the_apiserver_binds_it_is_retried_on_new_ports(monkeypatch) -> None:
    """Between picking a free port and kube-apiserver's bind, another process may take the port
    (seen in CI: "bind: address already in use", and every test of the session errored). The
    plane then starts again on new ports."""
    from tests.support import controlplane

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", controlplane.free_port()))
        taken.listen()
        taken_port = taken.getsockname()[1]
        picks = iter([controlplane.free_port(), controlplane.free_port(), taken_port])
        real = controlplane.free_port
        # etcd's two ports first, then the apiserver's: the taken one; real picks afterwards.
        monkeypatch.setattr(controlplane, "free_port", lambda: next(picks, None) or real())
        with running_control_plane() as plane:
            assert plane.apiserver_port != taken_port
            assert "address already in use" in (plane.workdir / "kube-apiserver.log").read_text()
            version = httpx.get(f"{plane.url}/version", verify=False, timeout=5)
            assert version.status_code in (200, 401, 403), version.text


def test_free_ports_come_from_below_the_ephemeral_range() -> None:
    """A port picked by binding to 0 is ephemeral: any outbound connection may take it as its
    source port before our server binds it. Ours are below that range."""
    from tests.support.controlplane import free_port

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(10000 <= free_port() < low for _ in range(200))
