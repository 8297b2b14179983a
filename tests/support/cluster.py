"""`make cluster` / `make demo`: a local control plane in the foreground for humans.

Starts etcd + kube-apiserver, installs the CRDs, optionally runs the controller and applies
manifests, prints how to point kubectl at it, and on Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from kubernetes import config

from tests.support.controlplane import REPO, bin_dir, running_control_plane, stop_process
from tests.support.kube import install_crds
from tests.support.workload import Workload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--controller", action="store_true", help="also run modelrollout-controller against it")
    parser.add_argument("--apply", action="append", default=[], help="manifest file or directory to apply")
    parser.add_argument(
        "--workload",
        action="store_true",
        help="also run kube-controller-manager, kube-scheduler and kwok (one Ready node): Deployments roll out",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    with running_control_plane() as plane, contextlib.ExitStack() as stack:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        install_crds(api, REPO / "crds")
        workload = Workload(plane).start() if args.workload else None
        if workload is not None:
            stack.callback(workload.stop)  # whatever fails below
        kubectl = str(bin_dir() / "kubectl")
        env = {**os.environ, "KUBECONFIG": str(plane.kubeconfig)}
        controller = None
        if args.controller:
            log = open(plane.workdir / "controller.log", "ab")  # noqa: SIM115 - closed below
            controller = subprocess.Popen(
                [str(Path(sys.executable).parent / "modelrollout-controller"), "--health-port", "0"],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        for target in args.apply:
            subprocess.run([kubectl, "apply", "-f", target], env=env, check=False)
        print(
            f"\nLocal control plane is up (Kubernetes {plane.url}, started in {plane.start_seconds:.1f}s).\n"
            + (
                f"Workload controllers (kube-controller-manager, kube-scheduler, kwok) and a Ready node "
                f"in {workload.start_seconds:.1f}s more.\n"
                if workload
                else ""
            )
            + f"In another shell:\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  export PATH={bin_dir()}:$PATH   # kubectl of the same version\n"
            f"  kubectl get modelrollouts -A\n"
            + (f"Controller log: {plane.workdir / 'controller.log'}\n" if controller else "")
            + "Press Ctrl-C to stop; nothing is left running.\n",
            flush=True,
        )
        try:
            while not stop.wait(1.0):
                if controller is not None and controller.poll() is not None:
                    print(f"controller exited with {controller.returncode}; see its log", file=sys.stderr)
                    return 1
        finally:
            if controller is not None:
                stop_process(controller)
                log.close()
        print(
            "stopped the controller, "
            + ("kwok, kube-scheduler, kube-controller-manager, " if workload else "")
            + "kube-apiserver and etcd",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
