"""kubectl-modelrollout: the CLI for SREs and CI pipelines (`kubectl modelrollout ...`).

Reads go to the API server; every request a human makes is a spec field or an annotation the
controller honours (each annotation value acts once, so repeating a command is safe), and is
recorded as an Event naming who asked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml

from controller import __version__
from controller.api import API_VERSION, KIND
from controller.api.duration import parse_duration
from controller.cli.render import list_rows, status_view
from controller.cli.requests import CliError, Request, plan, send
from controller.cli.waiting import Verdict, transition_line, verdict_of
from controller.kube.config import api_client, current_namespace
from controller.kube.errors import KubeError, NotFound
from controller.kube.events import EventRecorder
from controller.kube.rollouts import Rollouts

EXAMPLES = """\
examples:
  kubectl modelrollout list -A
  kubectl modelrollout status fraud-scorer --watch
  kubectl modelrollout set-candidate fraud-scorer --model fraud-v9 --version 9.0.0
  kubectl modelrollout wait fraud-scorer --timeout 30m     # exit 0 promoted, 1 rolled back, 2 timeout, 3 paused, 4 inconclusive
  kubectl modelrollout promote fraud-scorer [--full]
  kubectl modelrollout pause|resume|abort|retry fraud-scorer
  kubectl modelrollout dashboard -A --prometheus http://localhost:9090   # http://127.0.0.1:9797/
"""


class Context:
    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self._api: Any = None

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = api_client(self.args.kubeconfig, context=self.args.context)
        return self._api

    @property
    def namespace(self) -> str:
        ns: str = self.args.namespace or current_namespace(self.args.kubeconfig, context=self.args.context)
        return ns

    @property
    def rollouts(self) -> Rollouts:
        return Rollouts(self.api)

    def get(self, name: str) -> dict[str, Any]:
        try:
            return self.rollouts.get(self.namespace, name)
        except NotFound:
            raise CliError(f'modelrollout "{name}" not found in namespace "{self.namespace}"') from None

    def now(self) -> datetime:
        return datetime.now(UTC)


# -- reading ---------------------------------------------------------------------------------


def cmd_list(ctx: Context) -> int:
    namespace = None if ctx.args.all_namespaces else ctx.namespace
    items, _ = ctx.rollouts.list_all(namespace)
    items.sort(key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
    if ctx.args.output in ("json", "yaml"):
        return _dump(ctx, {"apiVersion": "v1", "kind": "List", "items": items})
    if not items:
        where = "any namespace" if ctx.args.all_namespaces else f"namespace {ctx.namespace}"
        print(f"No ModelRollouts found in {where}.", file=sys.stderr)
        return 0
    print(
        list_rows(items, ctx.now(), wide=ctx.args.output == "wide", all_namespaces=ctx.args.all_namespaces),
        file=ctx.out,
    )
    return 0


def cmd_status(ctx: Context) -> int:
    obj = ctx.get(ctx.args.name)
    if ctx.args.output in ("json", "yaml"):
        return _dump(ctx, obj)
    if not ctx.args.watch:
        ctx.out.write(_view(ctx, obj))
        return 0
    interactive = ctx.out.isatty() and not os.environ.get("NO_COLOR")
    while True:
        text = _view(ctx, obj)
        if interactive:
            ctx.out.write("\x1b[H\x1b[2J")  # redraw in place on a terminal; plain frames otherwise
        else:
            ctx.out.write(f"--- {ctx.now().strftime('%H:%M:%S')}\n")
        ctx.out.write(text)
        ctx.out.flush()
        if verdict_of(obj) in (Verdict.PROMOTED, Verdict.ROLLED_BACK):
            return 0
        time.sleep(ctx.args.interval)
        obj = ctx.get(ctx.args.name)


def _view(ctx: Context, obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    try:
        events = EventRecorder(ctx.api).list_for(meta["namespace"], meta["name"], meta.get("uid"))
    except KubeError:
        events = []
    return status_view(obj, events, ctx.now())


def _dump(ctx: Context, obj: dict[str, Any]) -> int:
    if ctx.args.output == "json":
        json.dump(obj, ctx.out, indent=2, default=str)
        ctx.out.write("\n")
    else:
        yaml.safe_dump(obj, ctx.out, sort_keys=False)
    return 0


def cmd_wait(ctx: Context) -> int:
    """Block until a verdict; one line per transition, for CI logs."""
    deadline = time.monotonic() + _seconds(ctx.args.timeout)
    last = ""
    while True:
        obj = ctx.get(ctx.args.name)
        line = transition_line(obj)
        if line != last:
            print(f"{ctx.now().strftime('%Y-%m-%dT%H:%M:%SZ')} {line}", file=ctx.out, flush=True)
            last = line
        verdict = verdict_of(obj)
        if verdict is not None:
            print(f"verdict: {verdict.text}", file=ctx.out, flush=True)
            return verdict.exit_code
        if time.monotonic() >= deadline:
            print(f"verdict: timed out after {ctx.args.timeout}", file=ctx.out, flush=True)
            return 2
        time.sleep(ctx.args.interval)


def _seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise CliError(str(exc)) from None


# -- requests ----------------------------------------------------------------------------------


def _request(ctx: Context, obj: dict[str, Any], request: Request) -> int:
    send(ctx.api, obj, request)
    print(f"modelrollout.modelrollout.dev/{obj['metadata']['name']} {request.what}", file=ctx.out)
    return 0


def _ask(ctx: Context, action: str) -> int:
    obj = ctx.get(ctx.args.name)
    return _request(ctx, obj, plan(action, obj))


def cmd_set_candidate(ctx: Context) -> int:
    obj = ctx.get(ctx.args.name)
    backend = {
        k: v
        for k, v in (("service", ctx.args.service), ("port", ctx.args.port), ("storageUri", ctx.args.storage_uri))
        if v
    }
    candidate = {"name": ctx.args.model, "version": ctx.args.model_version, "backend": backend or None}
    current = obj["spec"]["candidate"]
    if (
        current.get("name") == ctx.args.model
        and current.get("version") == ctx.args.model_version
        and (current.get("backend") or None) == (backend or None)
    ):
        print(
            f"modelrollout.modelrollout.dev/{ctx.args.name} unchanged: candidate is already {ctx.args.model}",
            file=ctx.out,
        )
        return 0
    patch: dict[str, Any] = {"candidate": candidate}
    bootstrap = obj["spec"].get("incumbent") or {}
    if bootstrap.get("name") == ctx.args.model and (obj.get("status") or {}).get("incumbent"):
        # spec.incumbent only bootstrapped status.incumbent; rolling that model out again needs it gone.
        patch["incumbent"] = None
    return _request(ctx, obj, Request({"spec": patch}, "CandidateSet", f"candidate set to {ctx.args.model}"))


def cmd_promote(ctx: Context) -> int:
    return _ask(ctx, "promote-full" if ctx.args.full else "promote")


def cmd_pause(ctx: Context) -> int:
    return _ask(ctx, "pause")


def cmd_resume(ctx: Context) -> int:
    return _ask(ctx, "resume")


def cmd_abort(ctx: Context) -> int:
    return _ask(ctx, "abort")


def cmd_retry(ctx: Context) -> int:
    return _ask(ctx, "retry")


def cmd_dashboard(ctx: Context) -> int:
    from controller.cli.dashboard import serve  # only this command needs the web server

    return serve(
        ctx.api,
        namespace=None if ctx.args.all_namespaces else ctx.namespace,
        address=ctx.args.address,
        port=ctx.args.port,
        prometheus=ctx.args.prometheus,
        out=ctx.out,
        allowed_hosts=tuple(ctx.args.allowed_host or ()),
    )


# -- wiring ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: a flag given before the command is not reset by the command's own parser.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="path to the kubeconfig file")
    common.add_argument("--context", default=argparse.SUPPRESS, help="the kubeconfig context to use")
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: the context's)")
    parser = argparse.ArgumentParser(
        prog="kubectl modelrollout",
        description="Inspect and steer ModelRollouts.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"kubectl-modelrollout {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(
        name: str, func: Callable[[Context], int], help_: str, *, named: bool = True, **kw: Any
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common], **kw)
        if named:
            p.add_argument("name", help="the ModelRollout")
        p.set_defaults(func=func)
        return p

    p = command(
        "list",
        cmd_list,
        "every rollout with phase, step, weights, incumbent, candidate, age",
        named=False,
        aliases=["ls"],
    )
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-o", "--output", choices=["json", "yaml", "wide"])
    for name in ("status", "get"):
        p = command(name, cmd_status, "steps, weights, guardrails with evidence, decisions, Events and what comes next")
        p.add_argument("-o", "--output", choices=["json", "yaml", "wide"])
        p.add_argument("-w", "--watch", action="store_true", help="redraw until the rollout ends")
        p.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    p = command(
        "wait",
        cmd_wait,
        "block until a verdict: exit 0 promoted, 1 rolled back (failed), 2 timed out, 3 paused for a human, "
        "4 rolled back inconclusive (no evidence either way)",
    )
    p.add_argument("--timeout", default="30m", help="e.g. 30m, 1h (default 30m)")
    p.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    p = command("set-candidate", cmd_set_candidate, "start a canary of another model (what CI runs)")
    p.add_argument("--model", required=True, help="the candidate model name")
    p.add_argument("--version", dest="model_version", help="free-form version")
    p.add_argument("--service", help="Gateway API: the candidate's Service (default: the model name)")
    p.add_argument("--port", type=int, help="Gateway API: the backendRef port")
    p.add_argument("--storage-uri", help="KServe: the candidate predictor's storageUri")
    p = command("promote", cmd_promote, "advance one step now (or --full: straight to 100%%)")
    p.add_argument("--full", action="store_true")
    command("pause", cmd_pause, "hold the rollout where it is (spec.paused)")
    command("resume", cmd_resume, "continue a paused rollout")
    command("abort", cmd_abort, "roll back now; sticky until the candidate changes or retry")
    command("retry", cmd_retry, "re-run a rolled-back candidate from step 1")
    p = command(
        "dashboard",
        cmd_dashboard,
        "a live web page of the rollouts: steps, each guardrail's evidence over time, Events and the "
        "requests above as buttons (docs/dashboard.md)",
        named=False,
    )
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=9797, help="listen port (default 9797; 0: any free port)")
    p.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="also answer requests whose Host is NAME (or NAME:PORT); repeatable. Others get 403 (DNS rebinding)",
    )
    p.add_argument(
        "--prometheus", help="Prometheus that scrapes the controller: the charts' history (default: what status holds)"
    )
    return parser


def main(argv: list[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stdout)
        return 0
    args.kubeconfig = getattr(args, "kubeconfig", None) or os.environ.get("KUBECONFIG")
    args.context = getattr(args, "context", None)
    args.namespace = getattr(args, "namespace", None)
    ctx = Context(args, out or sys.stdout)
    try:
        code: int = args.func(ctx)
        return code
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KubeError as exc:
        print(f"error from the API server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = ["API_VERSION", "KIND", "CliError", "build_parser", "main"]
