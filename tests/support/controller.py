"""Run the real `modelrollout-controller` process against the test control plane."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.support.controlplane import ControlPlane, free_port, stop_process

# One `name="value"` of a sample's label set; the value as exposed, with \\, \" and \n escaped.
_LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], value)


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of the values of every sample of metric `name` in the Prometheus text `text` whose
    labels include all of `labels` (values compared exactly), 0.0 if there is none.

    `name` is a sample's exact name (a counter's `..._total`, not its `..._created`); a sample
    without labels matches only when `labels` is empty."""
    want = labels or {}
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest.startswith("{"):
            # The last `}` closes the label set: a value (or timestamp) never holds one.
            block, _, rest = rest[1:].rpartition("}")
            have = {k: _unescape(v) for k, v in _LABEL.findall(block)}
        elif rest[:1] in (" ", "\t"):
            have = {}
        else:
            continue  # another metric, whose name only starts with `name`
        if all(have.get(k) == v for k, v in want.items()):
            total += float(rest.split()[0])  # the value; a timestamp may follow
    return total


class ControllerProcess:
    def __init__(
        self,
        plane: ControlPlane,
        *,
        identity: str,
        prometheus_url: str | None,
        extra: list[str],
        kubeconfig: Path | None = None,
        allow_loopback_metrics: bool = True,
        program: list[str] | None = None,
    ) -> None:
        self.identity = identity
        self.port = free_port()
        # One log per process: identities repeat across tests that share the plane.
        self.log_path = plane.workdir / f"controller-{identity}-{os.urandom(3).hex()}.log"
        argv = [
            # The installed console script, or what runs controller.main another way (a bench's
            # memory census: bench/census_controller.py).
            *(program or [str(Path(sys.executable).parent / "modelrollout-controller")]),
            "--kubeconfig",
            # Another user's kubeconfig (e.g. the chart's ServiceAccount), else the plane's admin.
            str(kubeconfig or plane.kubeconfig),
            "--health-port",
            str(self.port),
            "--identity",
            identity,
            "--workers",
            "2",
            "--log-level",
            "debug",
            *extra,
        ]
        if allow_loopback_metrics:
            # The tests' Prometheus, proxies and listeners are all on loopback (never the default).
            argv.append("--allow-loopback-metrics")
        if prometheus_url:
            argv += ["--prometheus-url", prometheus_url]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("controller not healthy")

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The sum of the values of this process's samples of metric `name` whose labels include
        all of `labels`, 0.0 if there is none (`metric_value` on its /metrics)."""
        return metric_value(self.metrics(), name, labels)

    def reconciles(self) -> int:
        """How many reconciles this process has finished (modelrollout_reconciles_total, any result)."""
        return int(self.metric("modelrollout_reconciles_total"))

    def reconciles_settled(self, quiet: float = 1.5, timeout: float = 60) -> int:
        """The reconcile count once no reconcile has finished for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        last = self.reconciles()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.reconciles()
            if now == last:
                return now
            last = now
        raise TimeoutError(f"{self.identity} kept reconciling for {timeout}s")

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 40) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        stop_process(self.proc)


class ControllerFactory:
    """Starts controllers as one identity: the plane's admin, or (kubeconfig) another user such
    as the chart's ServiceAccount, whose leases then live in `lease_namespace`."""

    def __init__(
        self,
        plane: ControlPlane,
        *,
        prometheus_url: str | None,
        kubeconfig: Path | None = None,
        lease_namespace: str = "default",
        program: list[str] | None = None,
    ) -> None:
        self.plane = plane
        self.program = program
        self.prometheus_url = prometheus_url
        self.kubeconfig = kubeconfig
        self.lease_namespace = lease_namespace
        self.started: list[ControllerProcess] = []

    def start(
        self,
        identity: str = "c1",
        *extra: str,
        lease_name: str | None = None,
        kubeconfig: Path | None = None,
        allow_loopback_metrics: bool = True,
    ) -> ControllerProcess:
        # Explicit arguments come last, so a test's own --lease-namespace wins.
        args = ["--lease-namespace", self.lease_namespace, *extra]
        args += ["--lease-name", lease_name or f"modelrollout-{os.getpid()}-{len(self.started)}"]
        proc = ControllerProcess(
            self.plane,
            identity=identity,
            prometheus_url=self.prometheus_url,
            extra=args,
            kubeconfig=kubeconfig or self.kubeconfig,
            allow_loopback_metrics=allow_loopback_metrics,
            program=self.program,
        )
        self.started.append(proc)
        proc.wait_healthy()
        return proc

    def wait_leader(self, proc: ControllerProcess, lease_name: str, timeout: float = 60) -> None:
        """Until `proc` holds the lease: a second replica started after this never leads first."""
        from kubernetes import client, config

        api = client.CoordinationV1Api(config.new_client_from_config(config_file=str(self.plane.kubeconfig)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if api.read_namespaced_lease(lease_name, self.lease_namespace).spec.holder_identity == proc.identity:
                    return
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
            time.sleep(0.2)
        raise TimeoutError(f"{proc.identity} did not take lease {lease_name} within {timeout}s")

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop()
