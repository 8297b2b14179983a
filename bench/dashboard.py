"""`make bench-dashboard`: how soon a status change reaches a page of `kubectl modelrollout dashboard`.

Real parts: a local etcd + kube-apiserver, the dashboard as a user starts it (the installed
plugin, `--port 0`), and a client of its event stream (what a page's EventSource does). Each of N
status writes carries a marker in status.message; the time is from just before the write's
request (so it includes the write itself: an upper bound) to the marker's event at the client,
both on this machine's monotonic clock. Prints a table (ms).

Usage: python -m bench.dashboard [N]
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from kubernetes import client, config

from controller.api import GROUP, PLURAL, VERSION
from tests.support.controlplane import running_control_plane
from tests.support.kube import install_crds
from tests.support.world import rollout_body

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    writes = int((argv if argv is not None else sys.argv[1:] or ["100"])[0])
    with running_control_plane() as plane:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        install_crds(api, REPO / "crds")
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, rollout_body("bench", "a", "b"))
        plugin = Path(sys.executable).parent / "kubectl-modelrollout"
        argv_ = [str(plugin), "--kubeconfig", str(plane.kubeconfig), "-n", "default", "dashboard", "--port", "0"]
        proc = subprocess.Popen(argv_, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            found = re.search(r"http://\S+/", proc.stdout.readline())
            assert found, "the dashboard did not start"
            seen: dict[str, float] = {}
            connected = threading.Event()

            def listen() -> None:
                with httpx.stream("GET", found.group(0) + "api/stream", timeout=None) as reply:
                    connected.set()
                    for line in reply.iter_lines():
                        if line.startswith("data: "):
                            message = (json.loads(line[6:]).get("rollout") or {}).get("message") or ""
                            if message.startswith("bench-"):
                                seen.setdefault(message, time.monotonic())

            threading.Thread(target=listen, daemon=True).start()
            connected.wait(30)
            httpx.get(found.group(0) + "api/rollouts", timeout=30)  # answers once the first list is in
            sent: dict[str, float] = {}
            for i in range(writes):
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "bench")
                obj["status"] = {"phase": "Progressing", "message": f"bench-{i}"}
                sent[f"bench-{i}"] = time.monotonic()
                custom.replace_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "bench", obj)
                time.sleep(0.1)
            deadline = time.monotonic() + 10
            while len(seen) < len(sent) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(10)
    ms = sorted((seen[k] - sent[k]) * 1000 for k in sent if k in seen)
    if not ms:
        print("no event arrived")
        return 1
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else [ms[0]] * 99
    print("| status writes | events received | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(sent)} | {len(ms)} | {q[49]:.1f} | {q[89]:.1f} | {q[98]:.1f} | {ms[-1]:.1f} |")
    return 0 if len(ms) == len(sent) else 1


if __name__ == "__main__":
    raise SystemExit(main())
