"""`kubectl modelrollout dashboard`: a live web page of the rollouts, served on this machine.

Why a web page next to `status --watch`: an SRE wants to see each guardrail's evidence as it
accumulates (candidate vs incumbent vs bound, samples vs needed, the sequential test against its
threshold), not one frame of it. What it is, kept small on purpose (docs/dashboard.md):

- one list+watch of the rollouts with the user's kubeconfig (their RBAC, nothing more); each
  change goes to the open pages at once as a server-sent event, so a page follows the API server
  within the watch's latency, never a poll loop;
- the history of the evidence from Prometheus (the controller's `modelrollout_guardrail_*`
  series) when `--prometheus` is given; otherwise what the status holds, kept in memory from the
  watch while the dashboard runs (the status itself stays small);
- the buttons make exactly the CLI's requests (controller.cli.requests), Event included;
- the standard library's HTTP server and one hand-written page with inline SVG charts: nothing to
  install, nothing in the controller image. It listens on loopback by default, answers only to its
  own Host name (no DNS rebinding) and takes a request only with the token of the page it served
  (no cross-site form can post one).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import queue
import re
import secrets
import sys
import threading
import time
from collections import deque
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, TextIO

import httpx
import structlog

from controller.api.models import MAX_GUARDRAILS
from controller.cli.requests import ACTIONS, CliError, plan, send
from controller.kube.errors import Gone, KubeError, NotFound
from controller.kube.events import EventRecorder
from controller.kube.rollouts import Rollouts

log = structlog.get_logger("dashboard")

Key = tuple[str, str]
# Evidence points kept per guardrail from the watch (the fallback history): 12 h at 1 a minute.
HISTORY_POINTS = 720
# Points per chart asked of Prometheus, whatever the rollout's age.
PROMETHEUS_POINTS = 400
KEEPALIVE_SECONDS = 15.0
# Evidence fields -> the page's series names; Prometheus's series map onto the same names.
EVIDENCE_SERIES = {
    "candidateValue": "candidate",
    "incumbentValue": "incumbent",
    "limit": "limit",
    "candidateSamples": "candidateSamples",
    "incumbentSamples": "incumbentSamples",
    "samplesNeeded": "samplesNeeded",
    "worse": "worse",
    "worseThreshold": "worseThreshold",
    "notWorse": "notWorse",
    "notWorseThreshold": "notWorseThreshold",
}
SERIES_QUERY = (
    '{{__name__=~"modelrollout_guardrail_(observed|samples|samples_needed|limit|evidence|evidence_threshold)",'
    'namespace="{namespace}",name="{name}"}}'
)


def _series_name(labels: dict[str, str]) -> str | None:
    metric, variant, test = labels.get("__name__", ""), labels.get("variant", ""), labels.get("test", "")
    test_name = {"worse": "worse", "not_worse": "notWorse"}.get(test)
    names = {
        "modelrollout_guardrail_observed": variant if variant in ("candidate", "incumbent") else None,
        "modelrollout_guardrail_samples": f"{variant}Samples" if variant in ("candidate", "incumbent") else None,
        "modelrollout_guardrail_samples_needed": "samplesNeeded",
        "modelrollout_guardrail_limit": "limit",
        "modelrollout_guardrail_evidence": test_name,
        "modelrollout_guardrail_evidence_threshold": f"{test_name}Threshold" if test_name else None,
    }
    return names.get(metric)


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def summary(obj: dict[str, Any]) -> dict[str, Any]:
    """One row of the list page."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    return {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "phase": status.get("phase", "Pending"),
        "reason": status.get("reason"),
        "message": status.get("message"),
        "step": status.get("stepDisplay"),
        "weights": status.get("weights"),
        "incumbent": (status.get("incumbent") or {}).get("name"),
        "candidate": (spec.get("candidate") or {}).get("name"),
        "created": meta.get("creationTimestamp"),
        "resourceVersion": meta.get("resourceVersion"),
    }


class Board:
    """The rollouts as the watch last said, the evidence seen since start, and the open streams."""

    def __init__(self, api: Any, *, namespace: str | None, prometheus: str | None) -> None:
        self.api, self.namespace, self.prometheus = api, namespace, prometheus
        self.rollouts: dict[Key, dict[str, Any]] = {}
        self.history: dict[Key, dict[str, deque[dict[str, Any]]]] = {}
        self.synced = threading.Event()
        self._subscribers: set[queue.Queue[str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- the watch ----------------------------------------------------------------------------

    def run(self) -> None:
        """List, then watch from the list's resourceVersion; re-list on expiry, back off on errors."""
        source, delay = Rollouts(self.api), 1.0
        while not self._stop.is_set():
            try:
                items, version = source.list_all(self.namespace)
                self._reset(items)
                delay = 1.0
                while not self._stop.is_set():
                    for kind, obj in source.watch(self.namespace, version, timeout_seconds=240):
                        version = obj.get("metadata", {}).get("resourceVersion", version)
                        if kind != "BOOKMARK":
                            self.apply(kind, obj)
            except Gone:
                continue
            except Exception as exc:  # the API server gone, a dropped connection: list again, later
                log.warning("watch failed: listing again", error=str(exc) or repr(exc), retry_in=delay)
                self._publish({"type": "error", "message": f"watch failed: {exc!s:.200}; retrying in {delay:.0f}s"})
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def stop(self) -> None:
        self._stop.set()

    def _reset(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            keys = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items}
            self.rollouts = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in items}
            self.history = {k: v for k, v in self.history.items() if k in keys}
            for obj in items:
                self._record(obj)
        self.synced.set()
        self._publish({"type": "reset"})

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self._lock:
            if kind == "DELETED":
                self.rollouts.pop(key, None)
                self.history.pop(key, None)
            else:
                self.rollouts[key] = obj
                self._record(obj)
        self._publish({"type": "deleted" if kind == "DELETED" else "rollout", "rollout": summary(obj)})

    def _record(self, obj: dict[str, Any]) -> None:
        """Each guardrail's evidence at each analysis, as the status said (the fallback history)."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        status = obj.get("status") or {}
        started = _timestamp(status.get("rolloutStarted"))
        per_guardrail = self.history.setdefault(key, {})
        for g in (status.get("guardrails") or [])[:MAX_GUARDRAILS]:
            at = _timestamp(g.get("lastEvaluated"))
            if at is None:
                continue
            points = per_guardrail.setdefault(g["name"], deque(maxlen=HISTORY_POINTS))
            if points and points[-1]["t"] >= at:
                continue
            if points and started is not None and points[-1]["t"] < started:
                points.clear()  # a new candidate's rollout: its own history
            evidence = g.get("evidence") or {}
            points.append({"t": at, **{field: evidence.get(field) for field in EVIDENCE_SERIES}})

    # -- the event stream ---------------------------------------------------------------------

    def subscribe(self) -> queue.Queue[str]:
        q: queue.Queue[str] = queue.Queue(maxsize=1000)
        with self._lock:
            self._subscribers.add(q)
        return q

    def unsubscribe(self, q: queue.Queue[str]) -> None:
        with self._lock:
            self._subscribers.discard(q)

    def _publish(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, default=str)
        with self._lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            try:
                q.put_nowait(text)
            except queue.Full:  # a stalled page: it gets a reset and reloads its data when it wakes
                with contextlib.suppress(queue.Empty):
                    while True:
                        q.get_nowait()
                q.put_nowait(json.dumps({"type": "reset"}))

    # -- what the pages ask -------------------------------------------------------------------

    def summaries(self) -> list[dict[str, Any]]:
        with self._lock:
            items = sorted(self.rollouts.items())
        return [summary(obj) for _, obj in items]

    def detail(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self.rollouts.get((namespace, name))
            history = {g: list(points) for g, points in self.history.get((namespace, name), {}).items()}
        if obj is None:
            return None
        try:
            events = EventRecorder(self.api).list_for(namespace, name, obj["metadata"].get("uid"))
        except KubeError as exc:
            events = [{"type": "Warning", "reason": "EventsUnavailable", "message": str(exc)}]
        events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "", reverse=True)
        series, source = self._series(obj, history)
        return {"object": obj, "events": events[:50], "series": series, "source": source}

    def _series(
        self, obj: dict[str, Any], history: dict[str, list[dict[str, Any]]]
    ) -> tuple[dict[str, dict[str, list[list[float]]]], str]:
        fallback = {
            guardrail: {
                series: [[p["t"], p[field]] for p in points if isinstance(p[field], int | float)]
                for field, series in EVIDENCE_SERIES.items()
            }
            for guardrail, points in history.items()
        }
        if not self.prometheus:
            return fallback, "status"
        try:
            scraped = self._from_prometheus(obj)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            return fallback, f"status (Prometheus: {exc})"
        # The analyses since the last scrape, the verdict's own among them (a finished rollout's
        # evidence series end before it), come from the status. A range query's points carry the
        # scraped value at each step, so those from the latest analysis on are older news.
        for guardrail, series in fallback.items():
            latest = max((points[-1][0] for points in series.values() if points), default=None)
            if latest is None:
                continue
            have = scraped.setdefault(guardrail, {})
            for name in have:
                have[name] = [p for p in have[name] if p[0] < latest]
            last = max((points[-1][0] for points in have.values() if points), default=0.0)
            for name, points in series.items():
                have.setdefault(name, []).extend(p for p in points if p[0] > last)
        return scraped, "prometheus"

    def _from_prometheus(self, obj: dict[str, Any]) -> dict[str, dict[str, list[list[float]]]]:
        meta, status = obj["metadata"], obj.get("status") or {}
        end = time.time()
        start = _timestamp(status.get("rolloutStarted")) or _timestamp(meta.get("creationTimestamp")) or end - 3600
        start = min(start, end - 60)
        step = max(1, math.ceil((end - start) / PROMETHEUS_POINTS))
        query = SERIES_QUERY.format(namespace=meta["namespace"], name=meta["name"])
        assert self.prometheus is not None
        reply = httpx.get(
            f"{self.prometheus.rstrip('/')}/api/v1/query_range",
            params={"query": query, "start": start, "end": end, "step": step},
            timeout=10,
        )
        reply.raise_for_status()
        body = reply.json()
        if body.get("status") != "success":
            raise ValueError(body.get("error", "query failed"))
        out: dict[str, dict[str, list[list[float]]]] = {}
        for item in body["data"]["result"]:
            labels = item["metric"]
            series = _series_name(labels)
            if series is None or "guardrail" not in labels:
                continue
            points = [[float(t), float(v)] for t, v in item["values"] if math.isfinite(float(v))]
            out.setdefault(labels["guardrail"], {}).setdefault(series, []).extend(points)
        return out

    def request(self, namespace: str, name: str, action: str) -> str:
        """Make the CLI's request on the rollout as the API server has it now."""
        obj = Rollouts(self.api).get(namespace, name)
        request = plan(action, obj)
        send(self.api, obj, request)
        return f"{name}: {request.what} requested"


# -- HTTP -------------------------------------------------------------------------------------

ROLLOUT_PATH = re.compile(r"^/api/rollouts/([a-z0-9][-a-z0-9.]*)/([a-z0-9][-a-z0-9.]*)(?:/([a-z-]+))?$")
PAGE_PATH = re.compile(r"^/rollouts/[a-z0-9][-a-z0-9.]*/[a-z0-9][-a-z0-9.]*$")


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath(name).read_bytes()


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], board: Board, *, allowed_hosts: tuple[str, ...] = ()) -> None:
        super().__init__(address, Handler)
        self.board = board
        self.token = secrets.token_urlsafe(24)
        host, port = str(self.server_address[0]), self.server_address[1]
        self.url = f"http://{host if ':' not in str(host) else f'[{host}]'}:{port}/"
        self.hosts = hosts(host, port, allowed_hosts)


def hosts(address: str, port: int, allowed: tuple[str, ...] = ()) -> frozenset[str]:
    """The Host headers the dashboard answers, wherever it listens: its own address, loopback's
    names when it listens on loopback, and the --allowed-host names (DNS rebinding: a page of
    another site that resolves its name to this address sends its own Host, and is refused)."""
    names = [address if ":" not in address else f"[{address}]"]
    if _loopback(address):
        names += ["localhost", "127.0.0.1", "[::1]"]
    names += [name.lower() for name in allowed]
    out = {n.lower() if re.search(r":\d+$", n) and not n.endswith("]") else f"{n.lower()}:{port}" for n in names}
    if port == 80:  # a browser leaves out the default port
        out |= {n.rsplit(":", 1)[0] for n in out if n.endswith(":80")}
    return frozenset(out)


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # the terminal stays for the URL and real problems

    def _refuse_host(self) -> bool:
        """403 for a Host the dashboard does not answer to (DNS rebinding); True when refused."""
        host = self.headers.get("Host", "")
        if host.lower() in self.server.hosts:
            return False
        error = (
            f"Host {host!r} is not this dashboard's (it answers to {', '.join(sorted(self.server.hosts))}); "
            "to reach it by another name, start it with --allowed-host NAME"
        )
        self._json(HTTPStatus.FORBIDDEN, {"error": error})
        return True

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        )
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, value: Any) -> None:
        self._send(code, json.dumps(value, default=str).encode(), "application/json")

    def do_GET(self) -> None:
        if self._refuse_host():
            return
        path = self.path.split("?", 1)[0]
        board = self.server.board
        if path == "/" or PAGE_PATH.match(path):
            page = _asset("app.html").replace(b"{{TOKEN}}", self.server.token.encode())
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif path == "/app.js":
            self._send(HTTPStatus.OK, _asset("app.js"), "text/javascript; charset=utf-8")
        elif path == "/api/rollouts":
            board.synced.wait(10)
            self._json(HTTPStatus.OK, {"namespace": board.namespace, "items": board.summaries()})
        elif path == "/api/stream":
            self._stream()
        elif (m := ROLLOUT_PATH.match(path)) and m.group(3) is None:
            board.synced.wait(10)
            detail = board.detail(m.group(1), m.group(2))
            if detail is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"modelrollout {m.group(1)}/{m.group(2)} not found"})
            else:
                self._json(HTTPStatus.OK, detail)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "no such page"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))
        m = ROLLOUT_PATH.match(self.path)
        if self._refuse_host():
            return
        if self.headers.get("X-Modelrollout-Token") != self.server.token:
            self._json(HTTPStatus.FORBIDDEN, {"error": "the request did not come from this dashboard's page"})
            return
        if m is None or m.group(3) not in ACTIONS:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such request (one of {', '.join(ACTIONS)})"})
            return
        namespace, name, action = m.groups()
        try:
            message = self.server.board.request(namespace, name, action)
        except NotFound:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"modelrollout {namespace}/{name} not found"})
        except CliError as exc:
            self._json(HTTPStatus.CONFLICT, {"error": str(exc)})
        except KubeError as exc:
            self._json(HTTPStatus.BAD_GATEWAY, {"error": f"from the API server: {exc}"})
        else:
            log.info("request made", namespace=namespace, name=name, request=action)
            self._json(HTTPStatus.OK, {"message": message})

    def _stream(self) -> None:
        board = self.server.board
        q = board.subscribe()
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            while True:
                try:
                    text = q.get(timeout=KEEPALIVE_SECONDS)
                except queue.Empty:
                    self.wfile.write(b": keepalive\n\n")
                else:
                    self.wfile.write(f"data: {text}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return
        finally:
            board.unsubscribe(q)


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def serve(
    api: Any,
    *,
    namespace: str | None,
    address: str,
    port: int,
    prometheus: str | None,
    out: TextIO,
    allowed_hosts: tuple[str, ...] = (),
) -> int:
    """Serve until interrupted; prints the URL first (its own line, for scripts)."""
    if not _loopback(address):
        print(
            f"warning: listening on {address}: anyone who reaches it acts with your kubeconfig's rights",
            file=sys.stderr,
        )
    board = Board(api, namespace=namespace, prometheus=prometheus)
    try:
        server = DashboardServer((address, port), board, allowed_hosts=allowed_hosts)
    except OSError as exc:
        raise CliError(f"cannot listen on {address}:{port}: {exc.strerror or exc}") from None
    watcher = threading.Thread(target=board.run, name="watch", daemon=True)
    watcher.start()
    where = "all namespaces" if namespace is None else f"namespace {namespace}"
    history = f"history from {prometheus}" if prometheus else "history from status while it runs"
    print(f"dashboard: {server.url} ({where}, {history}; Ctrl-C to stop)", file=out, flush=True)
    if not _loopback(address):
        names = ", ".join(sorted(server.hosts))
        print(f"dashboard: answers only to Host {names} (more with --allowed-host NAME)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        board.stop()
        server.server_close()
    return 0


__all__ = ["Board", "DashboardServer", "hosts", "serve", "summary"]
