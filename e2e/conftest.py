"""The end-to-end world, started once for the suite: see e2e/harness.py.

Every rollout but the CI flow's starts as soon as the world is up, so the scenarios run in
parallel within one controller; each test then waits for its own verdict. Nothing here skips,
except the whole suite when `E2E_CLUSTER=kind` is asked for on a machine without Docker/kind.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from e2e.harness import Stack, demo_scenarios, e2e_only_scenarios, llm_scenarios

# Requests per second through each scenario's gateway (nine scenarios at 20, the two per-region ones
# at 30: 240 requests/s in all).
RATE = 20.0
_results: list[dict[str, object]] = []
_timings: dict[str, float] = {}
_notes: list[str] = []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    if os.environ.get("E2E_CLUSTER") == "kind" and not (shutil.which("docker") and shutil.which("kind")):
        pytest.skip("E2E_CLUSTER=kind: needs docker and kind on PATH (unset E2E_CLUSTER for the local plane)")
    scenarios = [*demo_scenarios(), *e2e_only_scenarios().values(), *llm_scenarios().values()]
    # E2E_ONLY=better,shadow runs a world of those scenarios alone (their tests; the others fail).
    only = {key for key in os.environ.get("E2E_ONLY", "").split(",") if key}
    scenarios = [s for s in scenarios if not only or s.key in only]
    world = Stack(scenarios, rate=RATE, namespace=f"e2e-{os.urandom(3).hex()}", log=lambda line: None)
    pids: list[int] = []
    began = time.monotonic()
    try:
        world.start()
        pids = world.pids()
        _timings["world up"] = time.monotonic() - began
        _notes.append(
            "data plane: "
            + (
                "Traefik (real EndpointSlices of kwok pods; the LLM and shadow scenarios through the stand-in gateway)"
                if world.data_plane == "traefik"
                else "the stand-in gateway (e2e/gateway.py)"
            )
        )
        for scenario in scenarios:
            world.serve(scenario, wait=False)
        for scenario in scenarios:
            world.wait_scraped(scenario)
        for scenario in scenarios:
            world.start_rollout(scenario)
        _timings["rollouts applied"] = time.monotonic() - began
        yield world
    finally:
        pids = pids or world.pids()
        _results.extend(s.result for s in scenarios if s.result)
        _notes.extend(world.notes)
        world.close()
    left = [pid for pid in pids if _alive(pid)]
    assert not left, f"processes outlived the e2e suite: {left}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """What the closing notes ask for: each scenario's verdict, time to verdict, requests served."""
    if not _results:
        return
    write = terminalreporter.write_line
    write("")
    write("e2e scenarios (time from applying the ModelRollout to its verdict):")
    for r in _results:
        # An inconclusive rollback names its guardrail but has no observed value.
        observed = "no value" if r.get("observed") is None else f"{r['observed']:.3g}"
        guard = f" by {r['guardrail']} ({observed} vs {r['threshold']})" if r.get("guardrail") else ""
        shadow = f", {r['candidate_shadow_requests']} comparator calls" if r.get("candidate_shadow_requests") else ""
        write(
            f"  {r['scenario']:8} {r['verdict']} ({r['reason']}){guard} after {r['seconds']:.1f}s; "
            f"the candidate served {r['candidate_requests']} requests ({r['candidate_errors']} errors){shadow}"
        )
    for note in _notes:
        write(f"  {note}")
    write("  " + ", ".join(f"{k} at {v:.1f}s" for k, v in _timings.items()))
