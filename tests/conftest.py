"""Session fixtures: one real control plane (etcd + kube-apiserver) with our CRDs installed.

Nothing here skips: if a component is missing the fixture builds or installs it, or fails.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.support.controlplane import ControlPlane, bin_dir, running_control_plane
from tests.support.kube import install_crds

REPO = Path(__file__).resolve().parents[1]
_session_pids: list[int] = []


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    with running_control_plane(audit=True) as plane:
        _session_pids.extend(plane.pids())
        yield plane


@pytest.fixture(scope="session")
def api_client(control_plane: ControlPlane) -> client.ApiClient:
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    install_crds(api, REPO / "crds")
    return api


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Iterator[list[str]]:
    """argv prefix of the real kubectl (the one built with the plane) bound to the plane."""
    binary = bin_dir() / "kubectl"
    yield [str(binary if binary.exists() else "kubectl"), "--kubeconfig", str(control_plane.kubeconfig)]


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (the plane has no namespace controller, so we clean up ourselves)."""
    name = "t-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40].strip("-")
    name = name + "-" + os.urandom(2).hex()
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any control-plane process outlived the session."""
    alive = [pid for pid in _session_pids if _alive(pid)]
    if alive:
        session.exitstatus = 1
        print(f"\nFAIL: control-plane processes still running after the session: {alive}")
    survivors = subprocess.run(["pgrep", "-f", "modelrollout-plane-"], capture_output=True, text=True).stdout.split()
    if survivors:
        session.exitstatus = 1
        print(f"\nFAIL: processes of a test control plane left running: {survivors}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes, but Popen.wait reaped ours already.
    return True
