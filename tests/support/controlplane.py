"""A real local Kubernetes control plane (etcd + kube-apiserver), like controller-runtime's envtest.

The binaries are built from the Go module proxy by hack/build-envtest.sh (cached per version
under ~/.cache/modelrollout). This module starts both on free loopback ports with a static
admin token, writes a kubeconfig, and stops both by pid. Used by the pytest fixtures,
`make cluster` and `make demo`.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

K8S_VERSION = os.environ.get("K8S_VERSION", "v1.35.4")
REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MODELROLLOUT_CACHE", Path.home() / ".cache" / "modelrollout"))

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    verbs: ["watch"]
  # Reads of rollouts and routes are kept, so tests can count what one reconcile costs.
  - level: Metadata
    verbs: ["get", "list"]
    resources:
      - group: "modelrollout.dev"
      - group: "gateway.networking.k8s.io"
  # Every read by a ServiceAccount too (the chart's RBAC test counts its 403s).
  - level: Metadata
    verbs: ["get", "list"]
    userGroups: ["system:serviceaccounts"]
  - level: None
    verbs: ["get", "list"]
  # Traffic objects with the object after each write, so tests can replay what the data plane
  # had at any instant (tests/support/backends.py Backend.served_history).
  - level: RequestResponse
    resources:
      - group: "gateway.networking.k8s.io"
      - group: "networking.istio.io"
      - group: "serving.kserve.io"
      - group: "apps"
  - level: Request
    resources:
      - group: "modelrollout.dev"
      - group: ""
        resources: ["events"]
  - level: Metadata
"""


def bin_dir() -> Path:
    return CACHE / "envtest" / K8S_VERSION / "bin"


def ensure_binaries() -> Path:
    """Build the binaries if this machine has none yet (a one-time cost, about 5 min on 2 cores)."""
    target = bin_dir()
    if not ((target / "kube-apiserver").is_file() and (target / "etcd").is_file()):
        subprocess.run(["bash", str(REPO / "hack" / "build-envtest.sh")], check=True)
    return target


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PICKER = random.SystemRandom()  # not the `random` module's state, which Hypothesis seeds


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test is about to start.

    Picked at random below the kernel's ephemeral range, never by binding to port 0: that gives
    an ephemeral port, and until the server binds it any outbound connection on the machine (a
    Prometheus scrape, an HTTP client) may take it as its source port. Seen in CI on a busy
    machine: kube-apiserver "bind: address already in use", and every test of the session
    errored. Below the range only another test's pick can take it, and each pick is checked.
    """
    high = _ephemeral_low()
    for _ in range(1000):
        port = _PICKER.randrange(10000, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in 10000-{high - 1}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL; always reaps, so no process is left behind."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=timeout)


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver pair, owned by whoever started it."""

    workdir: Path
    audit_log: Path | None = None
    etcd: subprocess.Popen[bytes] | None = None
    apiserver: subprocess.Popen[bytes] | None = None
    etcd_port: int = 0
    apiserver_port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    start_seconds: float = 0.0
    # Extra kube-apiserver flags (e.g. --watch-cache=false for the watch-compaction test).
    apiserver_args: list[str] = field(default_factory=list)
    # The audit policy (with audit_log): the tests' by default; a bench may log more (bench/argo.py).
    audit_policy: str = AUDIT_POLICY

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        # kube-apiserver writes a self-signed CA and serving certificate here when none is given.
        return self.workdir / "certs" / "apiserver.crt"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def pids(self) -> list[int]:
        return [p.pid for p in (self.etcd, self.apiserver) if p is not None]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, timeout: float = 120.0) -> ControlPlane:
        bins = ensure_binaries()
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self._start_etcd(bins)
            self._start_apiserver(bins)
            try:
                self._wait_ready(timeout)
                break
            except RuntimeError as exc:
                # Another test's server took a port between our pick and the bind: new ports.
                if "address already in use" not in str(exc) or attempt == 2:
                    raise
                self.stop()
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
        self._write_kubeconfig()
        self.start_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        for proc in (self.apiserver, self.etcd):
            if proc is not None:
                stop_process(proc)

    def _log(self, name: str) -> int:
        return os.open(self.workdir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self._log(name)
        try:
            # Own session: a Ctrl-C in the terminal reaches us, and we stop the children in order.
            return subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(log)

    def _start_etcd(self, bins: Path) -> None:
        self.etcd_port, peer = free_port(), free_port()
        peer_url = f"http://127.0.0.1:{peer}"
        self.etcd = self._spawn(
            "etcd",
            [
                str(bins / "etcd"),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )

    def _start_apiserver(self, bins: Path) -> None:
        self.apiserver_port = free_port()
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        sa_key = certs / "sa.key"
        subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.token},admin,admin-uid,"system:masters"\n')
        argv = [
            str(bins / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--cert-dir={certs}",
            f"--secure-port={self.apiserver_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--authorization-mode=RBAC",
            f"--token-auth-file={tokens}",
            f"--service-account-issuer=https://127.0.0.1:{self.apiserver_port}/",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--v=1",
            *self.apiserver_args,
        ]
        if self.audit_log is not None:
            policy = self.workdir / "audit-policy.yaml"
            policy.write_text(self.audit_policy)
            argv += [
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",
                "--audit-log-format=json",
            ]
        self.apiserver = self._spawn("kube-apiserver", argv)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "not started"
        headers = {"Authorization": f"Bearer {self.token}"}
        while time.monotonic() < deadline:
            for name, proc in (("etcd", self.etcd), ("kube-apiserver", self.apiserver)):
                if proc is not None and proc.poll() is not None:
                    log = (self.workdir / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")
            try:
                response = httpx.get(f"{self.url}/readyz", headers=headers, verify=False, timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[-500:]}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready after {timeout}s: {last}")

    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "modelrollout-local",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "modelrollout-local",
                    "context": {"cluster": "modelrollout-local", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "modelrollout-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)


@contextlib.contextmanager
def running_control_plane(
    *,
    audit: bool = False,
    keep: bool = False,
    apiserver_args: list[str] | None = None,
    audit_policy: str = AUDIT_POLICY,
) -> Iterator[ControlPlane]:
    """Start a plane in a fresh temporary directory; stop it and remove the directory after."""
    workdir = Path(tempfile.mkdtemp(prefix="modelrollout-plane-"))
    plane = ControlPlane(
        workdir=workdir,
        audit_log=workdir / "audit.log" if audit else None,
        apiserver_args=apiserver_args or [],
        audit_policy=audit_policy,
    )
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
