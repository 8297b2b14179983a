"""`make bench-plane`: how long the local control plane takes to start (etcd + kube-apiserver
until /readyz answers 200), over several runs; with `--workload` also how long
kube-controller-manager, kube-scheduler and kwok take after it (healthy, and one kwok node
Ready: what `make cluster WORKLOAD=1` adds). Prints a table."""

from __future__ import annotations

import argparse
import statistics

from tests.support.controlplane import K8S_VERSION, running_control_plane
from tests.support.workload import KWOK_VERSION, Workload


def row(what: str, times: list[float]) -> str:
    return f"| {what} | {len(times)} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=int, nargs="?", default=5)
    parser.add_argument("--workload", action="store_true", help="also time the workload controllers and kwok")
    args = parser.parse_args(argv)
    plane_times, workload_times = [], []
    for _ in range(args.runs):
        with running_control_plane() as plane:
            plane_times.append(plane.start_seconds)
            if args.workload:
                workload = Workload(plane).start()
                try:
                    workload_times.append(workload.start_seconds)
                finally:
                    workload.stop()
    print(f"| kube-apiserver {K8S_VERSION} + etcd | runs | median s | min s | max s |")
    print("|---|---|---|---|---|")
    print(row("start to /readyz", plane_times))
    if workload_times:
        print(
            row(
                f"then kube-controller-manager + kube-scheduler {K8S_VERSION} + kwok {KWOK_VERSION}, a node Ready",
                workload_times,
            )
        )
        print(row("both", [a + b for a, b in zip(plane_times, workload_times, strict=True)]))


if __name__ == "__main__":
    main()
