"""`make demo`: the controller doing its job on real models, real traffic, real metrics.

Starts a local Kubernetes control plane (etcd + kube-apiserver), Prometheus, scikit-learn
model servers, the data plane (Traefik with the workload controllers by default, or the
stand-in gateway with E2E_DATA_PLANE=standin: e2e/harness.py), a steady load of HTTP requests
and the controller (and a comparator per shadow rollout); then runs the four rollouts of
examples/demo/ one after the other, showing the live `kubectl modelrollout status --watch` view
of each, and prints a summary. Ctrl-C, or the end, stops everything it started.

`--llm` (`make demo-llm`) runs the three LLM rollouts of examples/llm/ instead: stand-in vLLM
servers (e2e/llm.py: vLLM's metric names and streamed answers, no model) behind InferencePools,
judged on time to first token, finish reasons and cost per 1,000 output tokens (docs/llm.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from e2e.harness import Scenario, Stack, TraefikRoute, demo_scenarios, epochs, llm_scenarios, split_problems, tolerance
from tests.support.controlplane import bin_dir

EXPECTED = {"Promoted": "promoted", "RolledBack": "rolled back"}


def _terminate(*_: Any) -> None:
    raise KeyboardInterrupt


def run_scenario(stack: Stack, scenario: Scenario, number: int, total: int, *, watch: bool) -> None:
    print(f"\n=== Scenario {number}/{total}: {scenario.title}", flush=True)
    print(f"    {scenario.source}: {scenario.incumbent} (incumbent) -> {scenario.candidate}", flush=True)
    print(f"    candidate: {stack.servers[scenario.candidate].variant.description}", flush=True)
    stack.serve(scenario)
    gateway = "Traefik" if isinstance(scenario.gateway, TraefikRoute) else "the stand-in gateway (e2e/gateway.py)"
    print(f"    load: {stack.rate:.0f} requests/s through {gateway}; applying the ModelRollout\n", flush=True)
    stack.start_rollout(scenario)
    viewer = None
    if watch:
        interval = "1" if sys.stdout.isatty() else "4"
        viewer = subprocess.Popen([*stack.cli(), "status", scenario.name, "--watch", "--interval", interval])
    try:
        stack.wait_verdict(scenario)
        if viewer is not None:
            try:
                viewer.wait(timeout=20)
            except subprocess.TimeoutExpired:
                viewer.terminate()
    finally:
        if viewer is not None and viewer.poll() is None:
            viewer.kill()
            viewer.wait()
    result = scenario.result
    print(
        f"\n--> {scenario.key}: {result['verdict']} ({result['reason']}) after {result['seconds']:.1f}s; "
        f"the candidate served {result['candidate_requests']} requests",
        flush=True,
    )
    assert scenario.load is not None and scenario.gateway is not None
    time.sleep(3)  # a little traffic after the verdict: all of it goes where the verdict said
    scenario.load.stop()
    scenario.result["split"] = split_report(stack, scenario)
    for line in scenario.result["split"]:
        print(f"    {line}", flush=True)


def split_report(stack: Stack, scenario: Scenario) -> list[str]:
    assert scenario.gateway is not None
    lines = []
    for epoch in epochs(scenario.gateway, stack.servers):
        weight = epoch.weights.get(scenario.candidate, 0)
        share = epoch.seen.get(scenario.candidate, 0) / epoch.total if epoch.total else 0.0
        problems = split_problems(epoch)
        verdict = "MISMATCH: " + "; ".join(problems) if problems else "ok"
        lines.append(
            f"candidate weight {weight:3d}%: it received {epoch.seen.get(scenario.candidate, 0):4d} of "
            f"{epoch.total:4d} requests ({share:.1%}, tolerance ±{tolerance(weight / 100, epoch.total):.1%}) {verdict}"
        )
    return lines


def summary(scenarios: list[Scenario], wall: float) -> str:
    rows = [
        (
            "scenario",
            "candidate",
            "verdict",
            "failed guardrail (observed vs bound)",
            "time to verdict",
            "requests the candidate served",
            "held-out accuracy",
        )
    ]
    for s in scenarios:
        r = s.result
        if not r:
            rows.append((s.key, s.candidate, "not run", "", "", "", ""))
            continue
        guard = f"{r['guardrail']} ({r['observed']:.3g} vs {r['threshold']})" if r.get("guardrail") else "-"
        served = f"{r['candidate_requests']} ({r['candidate_errors']} errors)"
        accuracy = (
            "- (a stand-in: no model)"
            if r["candidate_accuracy"] is None
            else f"{r['incumbent_accuracy']:.3f} -> {r['candidate_accuracy']:.3f}"
        )
        rows.append(
            (
                s.key,
                f"{s.candidate} [{r['candidate_variant']}]",
                r["verdict"],
                guard,
                f"{r['seconds']:.1f}s",
                served,
                accuracy,
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(["", "=== Summary", *lines, "", f"demo wall time: {wall:.0f}s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=25.0, help="requests/s through each gateway (default 25)")
    parser.add_argument("--no-watch", action="store_true", help="do not show the status --watch view")
    parser.add_argument("--only", action="append", help="run only these scenarios (better, errors, drift)")
    parser.add_argument(
        "--llm", action="store_true", help="the LLM rollouts of examples/llm/ (ttft, truncation, cheaper)"
    )
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell may start us with it ignored
        signal.signal(sig, _terminate)
    began = time.monotonic()
    chosen = list(llm_scenarios().values()) if args.llm else demo_scenarios()
    scenarios = [s for s in chosen if not args.only or s.key in args.only]
    ok = False
    pids: list[int] = []
    try:
        with Stack(scenarios, rate=args.rate) as stack:
            pids = stack.pids()
            print(
                "\nTo look around while it runs, in another shell:\n"
                f"  export KUBECONFIG={stack.plane.kubeconfig}\n"
                f"  export PATH={bin_dir()}:{os.path.dirname(stack.cli()[0])}:$PATH   # kubectl, kubectl-modelrollout\n"
                f"  kubectl get mro -n {stack.namespace}; kubectl modelrollout -n {stack.namespace} list\n"
                f"  kubectl modelrollout -n {stack.namespace} dashboard   # then open http://127.0.0.1:9797/\n",
                flush=True,
            )
            for number, scenario in enumerate(scenarios, 1):
                run_scenario(stack, scenario, number, len(scenarios), watch=not args.no_watch)
            ok = all(s.result.get("verdict") == s.expected for s in scenarios)
            ok = ok and all("MISMATCH" not in line for s in scenarios for line in s.result.get("split", []))
            print(summary(scenarios, time.monotonic() - began), flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", flush=True)
        return 130
    finally:
        left = [pid for pid in pids if _alive(pid)]
        print(
            "stopped the model servers, the controller, Prometheus, kube-apiserver and etcd; nothing left running"
            if not left
            else f"WARNING: still running: {left}",
            flush=True,
        )
    if not ok:
        print("FAIL: a scenario did not end as expected", file=sys.stderr)
    return 0 if ok else 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    return True


if __name__ == "__main__":
    raise SystemExit(main())
