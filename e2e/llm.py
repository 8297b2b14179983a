"""A stand-in for an LLM server: OpenAI-compatible token streaming, vLLM's metric names, NO model.

This server imitates vLLM's *metrics* and the shape of its OpenAI-compatible API; it runs no
model and generates no language. `POST /v1/chat/completions` with `"stream": true` answers as
vLLM does, in server-sent events (`data: {chat.completion.chunk}` per token, a last chunk with
`finish_reason`, then `data: [DONE]`); each "token" is a placeholder word. What a variant sets is
what a rollout of a real LLM is judged on: the time to the first token, the tokens per second
after it, and the share of answers cut off at `max_tokens` (`finish_reason: length`). The time
to the first token it exports is the prefill time it simulates, without the test machine's
scheduling delays (the other histograms are wall time).

At `GET /metrics` it exports the names vLLM exports (vLLM docs, design/metrics.md), labelled
`model_name="<its name>"`, with vLLM's histogram buckets:

- `vllm:time_to_first_token_seconds`, `vllm:inter_token_latency_seconds`,
  `vllm:e2e_request_latency_seconds` (histograms);
- `vllm:request_success_total{finished_reason="stop|length|abort"}`, `vllm:prompt_tokens_total`,
  `vllm:generation_tokens_total` (counters, every label exported at 0 from the start);
- `vllm:num_requests_running` (a gauge: one series per replica, what the cost builtin counts).

Like e2e/models.py each server is its own process (`python -m e2e.llm --name N --variant V`),
started and stopped by `LlmServer` (the harness side), with `GET /arrivals` for the split checks.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from e2e.models import ModelServer

# vLLM's own bucket boundaries (vllm/v1/metrics/loggers.py), so histogram_quantile reads the same.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
FINISH_REASONS = ("stop", "length", "abort")


@dataclass(frozen=True)
class LlmVariant:
    """How one stand-in LLM server behaves."""

    description: str
    ttft: tuple[float, float] = (0.050, 0.070)  # seconds to the first token, uniform
    tokens_per_second: float = 400.0
    truncation: float = 0.05  # share of answers cut off at max_tokens (finish_reason "length")


LLM_VARIANTS: dict[str, LlmVariant] = {
    "llm-incumbent": LlmVariant("in production: first token in 50-70 ms, 400 tokens/s, 5% of answers cut off"),
    "llm-slow-first-token": LlmVariant(
        "a new model server build with a slow prefill: first token in 100-140 ms (2x)", ttft=(0.100, 0.140)
    ),
    "llm-truncating": LlmVariant(
        "a new base model that rambles: 15% of answers cut off at max_tokens (3x)", truncation=0.15
    ),
    "llm-same": LlmVariant("a distilled model on cheaper hardware: the same TTFT, speed and finish reasons"),
}

ANSWER_TOKENS = 16  # tokens of a finished answer; a truncated one stops at max_tokens instead


class LlmHttpServer:
    """The server itself (runs in its own process: see `main`)."""

    def __init__(self, name: str, variant: str, *, port: int = 0, seed: int | None = None) -> None:
        self.name = name
        self.variant = LLM_VARIANTS[variant]
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.arrivals: list[float] = []
        self.codes: dict[int, int] = {}
        self.finished: dict[str, int] = {}
        registry = CollectorRegistry()
        labels = ["model_name"]
        self._ttft = Histogram(
            "vllm:time_to_first_token_seconds", "Time to first token.", labels, buckets=TTFT_BUCKETS, registry=registry
        )
        self._itl = Histogram(
            "vllm:inter_token_latency_seconds", "Inter-token latency.", labels, buckets=ITL_BUCKETS, registry=registry
        )
        self._e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end latency.", labels, buckets=E2E_BUCKETS, registry=registry
        )
        self._success = Counter(
            "vllm:request_success", "Finished requests.", [*labels, "finished_reason"], registry=registry
        )
        self._prompt = Counter("vllm:prompt_tokens", "Prompt tokens.", labels, registry=registry)
        self._generated = Counter("vllm:generation_tokens", "Generated tokens.", labels, registry=registry)
        self._running = Gauge("vllm:num_requests_running", "Requests running.", labels, registry=registry)
        for reason in FINISH_REASONS:  # exported at 0 (docs/metrics.md, "Initialise counters at 0")
            self._success.labels(model_name=name, finished_reason=reason)
        for metric in (self._ttft, self._itl, self._e2e, self._prompt, self._generated, self._running):
            metric.labels(model_name=name)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/arrivals":
                    self._send(200, json.dumps(server.snapshot()).encode(), "application/json")
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.split("?", 1)[0] != "/v1/chat/completions":
                    self._send(404, b"not found\n", "text/plain")
                    return
                try:
                    request = json.loads(body)
                    prompt = " ".join(str(m.get("content", "")) for m in request["messages"])
                    max_tokens = int(request.get("max_tokens") or ANSWER_TOKENS * 2)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    self._send(400, json.dumps({"error": f"bad request: {exc}"}).encode(), "application/json")
                    return
                server.complete(self, prompt, max_tokens, stream=bool(request.get("stream")))

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.http.daemon_threads = True

    def complete(self, handler: BaseHTTPRequestHandler, prompt: str, max_tokens: int, *, stream: bool) -> None:
        began = time.perf_counter()
        with self._lock:
            self.arrivals.append(time.monotonic())
            first = self._random.uniform(*self.variant.ttft)
            truncated = self._random.random() < self.variant.truncation
        tokens, reason = (max_tokens, "length") if truncated else (min(ANSWER_TOKENS, max_tokens), "stop")
        model = self.name
        sent = 0
        self._running.labels(model_name=model).inc()
        try:
            if stream:
                handler.send_response(200)
                handler.send_header("Content-Type", "text/event-stream")
                handler.send_header("Transfer-Encoding", "chunked")
                handler.end_headers()
            time.sleep(first)
            # The prefill time this variant simulates, not the wall time: on a loaded 2-core test
            # machine, thread scheduling adds tens of milliseconds to both models' first tokens,
            # which swamps a 50 ms difference (a 2x-TTFT candidate was promoted in CI so).
            self._ttft.labels(model_name=model).observe(first)
            last = time.perf_counter()
            for index in range(tokens):
                if index:
                    time.sleep(1.0 / self.variant.tokens_per_second)
                    now = time.perf_counter()
                    self._itl.labels(model_name=model).observe(now - last)
                    last = now
                if stream:
                    _event(handler, _chunk(model, {"content": f"tok{index} "}, None))
                sent += 1
            if stream:
                _event(handler, _chunk(model, {}, reason))
                _event(handler, "[DONE]")
                handler.wfile.write(b"0\r\n\r\n")
            else:
                body = json.dumps(
                    {
                        "object": "chat.completion",
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": " ".join(f"tok{i}" for i in range(tokens))},
                                "finish_reason": reason,
                            }
                        ],
                        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": tokens},
                    }
                ).encode()
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            tokens, reason = sent, "abort"  # the client went away mid-answer: vLLM counts an abort
        finally:
            self._running.labels(model_name=model).dec()
        self._e2e.labels(model_name=model).observe(time.perf_counter() - began)
        self._prompt.labels(model_name=model).inc(len(prompt.split()))
        self._generated.labels(model_name=model).inc(tokens)
        self._success.labels(model_name=model, finished_reason=reason).inc()
        with self._lock:
            self.codes[200] = self.codes.get(200, 0) + 1
            self.finished[reason] = self.finished.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "arrivals": list(self.arrivals),
                "codes": {str(k): v for k, v in self.codes.items()},
                "finished": dict(self.finished),
            }


def _chunk(model: str, delta: dict[str, str], finish_reason: str | None) -> str:
    return json.dumps(
        {
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
    )


def _event(handler: BaseHTTPRequestHandler, data: str) -> None:
    """One server-sent event, as one HTTP/1.1 chunk."""
    payload = f"data: {data}\n\n".encode()
    handler.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
    handler.wfile.flush()


class LlmServer(ModelServer):
    """A stand-in LLM server process on 127.0.0.1, seen from the harness (as ModelServer is)."""

    module = "e2e.llm"
    variants: dict[str, Any] = LLM_VARIANTS

    def finished(self) -> dict[str, int]:
        """Answers by finish reason so far."""
        return {str(k): int(v) for k, v in self.snapshot().get("finished", {}).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a stand-in LLM server (vLLM's metric names, no model) on 127.0.0.1")
    parser.add_argument("--name", required=True)
    parser.add_argument("--variant", required=True, choices=sorted(LLM_VARIANTS))
    parser.add_argument("--port", type=int, default=0, help="default 0: any free port")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    server = LlmHttpServer(args.name, args.variant, port=args.port, seed=args.seed)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.http.shutdown).start())
    port = server.http.server_address[1]
    if args.port_file:
        staging = args.port_file.with_suffix(".tmp")
        staging.write_text(str(port))
        staging.rename(args.port_file)
    print(f"{args.name} ({args.variant}, a stand-in LLM server) on 127.0.0.1:{port}", flush=True)
    server.http.serve_forever()
    server.http.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
