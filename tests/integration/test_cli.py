"""kubectl-modelrollout against the real API server, with the real controller running.

Each command runs in-process through `controller.cli.main` with the test kubeconfig, exactly as
`kubectl modelrollout ...` would run it.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli import main
from tests.support.controller import ControllerFactory
from tests.support.world import World, phase, rollout_body

pytestmark = pytest.mark.usefixtures("gateway_api")


def cli(world: World, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--kubeconfig", str(world.plane.kubeconfig), "-n", world.namespace, *args], out=out)
    return code, out.getvalue()


def requested_by(world: World) -> list[str]:
    return [m for _, r, m in world.events() if r.endswith("Requested") or r == "CandidateSet"]


def test_list_and_status_show_where_a_rollout_stands(world: World, controller_process: ControllerFactory) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    steps = {"steps": [{"weight": 20, "hold": "50s"}, {"weight": 50, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    world.wait(lambda o: (o.get("status", {}).get("guardrails") or [{}])[0].get("verdict") == "Pass")

    code, listed = cli(world, "list")
    assert code == 0
    header, row = listed.splitlines()[0].split(), listed.splitlines()[1].split()
    assert dict(zip(header, row, strict=False)) | {"AGE": "-"} == {
        "NAME": "demo",
        "PHASE": "Progressing",
        "STEP": "1/2",
        "INCUMBENT%": "80",
        "CANDIDATE%": "20",
        "INCUMBENT": world.incumbent,
        "CANDIDATE": world.candidate,
        "AGE": "-",
    }
    code, status = cli(world, "status", "demo")
    assert code == 0
    assert "> " in status and "Weights:    incumbent 80% / candidate 20% (read back)" in status
    assert "error-rate" in status and "Pass" in status and "RolloutStarted" in status
    assert "hold ends in" in status
    code, as_json = cli(world, "get", "demo", "-o", "json")
    assert code == 0 and '"stepDisplay": "1/2"' in as_json


def test_wait_exits_0_when_promoted(world: World, controller_process: ControllerFactory) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    world.apply(rollout_body("demo", world.incumbent, world.candidate))
    code, log = cli(world, "wait", "demo", "--timeout", "2m", "--interval", "0.5")
    assert code == 0, log
    assert "verdict: promoted" in log and "Progressing step 1/2" in log and "Promoted" in log
    code, frames = cli(world, "status", "demo", "--watch")
    assert code == 0 and frames.startswith("--- ") and "Phase:      Promoted" in frames and "\x1b" not in frames


def test_wait_exits_1_when_rolled_back(world: World, controller_process: ControllerFactory) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    world.traffic.set(world.candidate, ok=5, errors=15)
    world.apply(rollout_body("demo", world.incumbent, world.candidate))
    code, log = cli(world, "wait", "demo", "--timeout", "2m", "--interval", "0.5")
    assert code == 1, log
    assert "verdict: rolled back" in log and "GuardrailFailed" in log


def test_wait_exits_2_on_timeout_and_3_when_paused_for_a_human(
    world: World, controller_process: ControllerFactory
) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    steps = {"steps": [{"weight": 20, "hold": "4s", "manualGate": True}, {"weight": 50, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)
    code, log = cli(world, "wait", "demo", "--timeout", "1s", "--interval", "0.2")
    assert code == 2 and "timed out" in log

    code, log = cli(world, "wait", "demo", "--timeout", "2m", "--interval", "0.5")
    assert code == 3, log
    assert "AwaitingPromotion" in log

    code, _ = cli(world, "promote", "demo")
    assert code == 0
    code, log = cli(world, "wait", "demo", "--timeout", "2m", "--interval", "0.5")
    assert code == 0, log
    assert world.candidate_writes() == [20, 50, 100]
    assert any("requested by admin" in m for m in requested_by(world))


def test_set_candidate_pause_resume_abort_and_retry(world: World, controller_process: ControllerFactory) -> None:
    controller_process.start("c1", "--namespace", world.namespace)
    steps = {"steps": [{"weight": 20, "hold": "30s"}, {"weight": 50, "hold": "4s"}]}
    world.apply(rollout_body("demo", world.incumbent, world.candidate, canary=steps))
    world.wait(lambda o: o.get("status", {}).get("weights", {}).get("candidate") == 20)

    assert cli(world, "pause", "demo")[0] == 0
    world.wait(phase("Paused"))
    assert cli(world, "pause", "demo")[0] == 0  # safe to repeat
    assert cli(world, "resume", "demo")[0] == 0
    world.wait(phase("Progressing"))

    assert cli(world, "abort", "demo")[0] == 0
    obj = world.wait(phase("RolledBack"))
    assert obj["status"]["reason"] == "AbortedByUser"
    assert cli(world, "abort", "demo")[0] == 1  # nothing left to abort: a clear error, no change

    assert cli(world, "retry", "demo")[0] == 0
    world.wait(lambda o: o.get("status", {}).get("reason") in ("RolloutRetried", "StepAdvanced"))
    assert cli(world, "promote", "demo", "--full")[0] == 0
    world.wait(phase("Promoted"))
    assert world.route_weights() == {world.incumbent: 0, world.candidate: 100}

    code, out = cli(world, "set-candidate", "demo", "--model", world.incumbent)
    assert code == 0 and "candidate set to" in out
    code, out = cli(world, "set-candidate", "demo", "--model", world.incumbent)
    assert code == 0 and "unchanged" in out
    asked = requested_by(world)
    assert len(asked) >= 6 and all("requested by admin" in m for m in asked)


def test_the_console_script_runs_as_a_kubectl_plugin(world: World) -> None:
    plugin = Path(sys.executable).parent / "kubectl-modelrollout"
    done = subprocess.run(
        [str(plugin), "--kubeconfig", str(world.plane.kubeconfig), "-n", world.namespace, "list"],
        capture_output=True,
        text=True,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "No ModelRollouts found" in done.stderr
    missing = subprocess.run(
        [str(plugin), "--kubeconfig", str(world.plane.kubeconfig), "-n", world.namespace, "status", "nope"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1 and 'modelrollout "nope" not found' in missing.stderr
