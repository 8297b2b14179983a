"""End to end, LLMs: stand-in vLLM servers (e2e/llm.py: vLLM's metric names, streamed chat
completions, no model) behind InferencePools, a gateway splitting real streamed requests by the
HTTPRoute's weights, a real Prometheus and the controller as its own process.

Given the world of e2e/conftest.py (these three rollouts applied with all the others), each test
waits for its scenario's verdict and checks it against what the servers saw.
"""

from __future__ import annotations

from e2e.harness import Stack, epochs, split_problems
from e2e.llm import LlmServer
from e2e.test_scenarios import applied_weights, assert_rolled_back_by, guardrails, route_weights, verdict


def finished(stack: Stack, name: str) -> dict[str, int]:
    server = stack.servers[name]
    assert isinstance(server, LlmServer)
    return server.finished()


def test_an_llm_with_twice_the_time_to_first_token_is_rolled_back_by_the_ttft_guardrail(stack: Stack) -> None:
    # Caught at 20% on a quiet machine; on a busy one the incumbent's p99 rises too and the
    # 1.5x bound may first hold at 20% with its ~100 samples: caught at 50% then, never promoted.
    obj = assert_rolled_back_by(stack, "ttft", "ttft-p99", steps=(20, 50))

    evidence = guardrails(obj)["ttft-p99"]["evidence"]
    assert evidence["candidateValue"] > 1.5 * evidence["incumbentValue"], evidence
    assert evidence["candidateSamples"] >= 100
    # Token speed was never the problem: the inter-token latency guardrail did not fail.
    assert guardrails(obj)["itl-p99"]["verdict"] != "Fail"


def test_an_llm_that_truncates_3x_as_often_is_rolled_back_by_the_sequential_rule_on_finish_reasons(
    stack: Stack,
) -> None:
    obj = assert_rolled_back_by(stack, "truncation", "finish-reasons")

    status = guardrails(obj)["finish-reasons"]
    assert status["verdict"] == "Fail" and "log e-value worse" in (status["evidence"].get("statistic") or ""), status
    assert status["evidence"]["candidateValue"] > status["evidence"]["incumbentValue"], status
    # What the servers answered: the candidate cut off a larger share of its answers.
    cand, inc = finished(stack, "truncation-v2"), finished(stack, "truncation-v1")
    share = {name: f.get("length", 0) / max(sum(f.values()), 1) for name, f in (("cand", cand), ("inc", inc))}
    assert share["cand"] > 1.5 * share["inc"], (cand, inc)
    stack.notes.append(f"truncation: the candidate cut off {cand.get('length', 0)} of {sum(cand.values())} answers")


def test_a_cheaper_llm_of_the_same_quality_is_promoted_on_cost_per_1k_output_tokens(stack: Stack) -> None:
    obj = verdict(stack, "cheaper")
    scenario = stack.scenarios["cheaper"]

    status = obj["status"]
    assert status["phase"] == "Promoted" and status["incumbent"]["name"] == "cheaper-v2", status
    assert applied_weights(scenario) == [0, 20, 50, 100]
    assert route_weights(stack, "cheaper") == {"cheaper-v1": 0, "cheaper-v2": 100}
    judged = guardrails(obj)
    assert {name: g["verdict"] for name, g in judged.items()} == {
        "cost-per-1k-tokens": "Pass",
        "ttft-p99": "Pass",
        "finish-reasons": "Pass",
    }
    # A third of the price per token, the same token counts per answer: a third of the cost.
    cost = judged["cost-per-1k-tokens"]["evidence"]
    ratio = cost["candidateValue"] / cost["incumbentValue"]
    assert 0.25 < ratio < 0.45, cost
    stack.notes.append(
        f"cheaper: ${cost['candidateValue']:.6f} vs ${cost['incumbentValue']:.6f} per 1,000 output tokens"
    )


def test_streamed_requests_at_each_llm_server_match_the_step_weights(stack: Stack) -> None:
    for key in ("ttft", "truncation", "cheaper"):
        verdict(stack, key)
    problems: list[str] = []
    seen_weights: set[int] = set()
    for key in ("ttft", "truncation", "cheaper"):
        scenario = stack.scenarios[key]
        assert scenario.gateway is not None
        for epoch in epochs(scenario.gateway, stack.servers):
            problems += [f"{key}: {p}" for p in split_problems(epoch)]
            if epoch.total >= 40:
                seen_weights.update(epoch.weights.values())
    assert problems == []
    assert {0, 20, 50, 100} <= seen_weights
