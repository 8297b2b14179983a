"""`make bench-plane`: how long the local control plane takes to start (etcd + kube-apiserver
until /readyz answers 200), over several runs; prints a table."""

from __future__ import annotations

import statistics
import sys

from tests.support.controlplane import K8S_VERSION, running_control_plane


def main(runs: int = 5) -> None:
    times = []
    for _ in range(runs):
        with running_control_plane() as plane:
            times.append(plane.start_seconds)
    print(f"| kube-apiserver {K8S_VERSION} + etcd | runs | median s | min s | max s |")
    print("|---|---|---|---|---|")
    print(f"| start to /readyz | {runs} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
