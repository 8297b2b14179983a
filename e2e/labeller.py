"""A labelling process: the ground truth of each prediction, posted `--delay` seconds after it.

It plays a team's labelling pipeline (a reviewer queue, chargebacks): it reads each model
server's prediction log (`GET /predictions?after=N`: the request ids that model answered), waits
`--delay` seconds after it saw each prediction, looks the truth up by the request's entity (the
dataset row in the id "<row>:<sequence>") and posts it to the model server that made the
prediction (`POST /feedback {"id", "label"}`), which counts `model_feedback_total{model,
outcome}` for itself. Labels are attributed to the model that predicted, never to whichever
model serves when the label arrives (docs/labels.md).

Run as its own process (`python -m e2e.labeller --delay 5 --server http://127.0.0.1:PORT ...`);
`Labeller` starts and stops it for the harness.
"""

from __future__ import annotations

import argparse
import heapq
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

import httpx

from e2e.models import dataset
from tests.support.controlplane import stop_process

POLL = 0.25  # s between reads of each prediction log


def run(servers: list[str], delay: float, stop: threading.Event) -> None:
    target = dataset().target
    cursors = dict.fromkeys(servers, 0)
    due: list[tuple[float, str, str]] = []  # (when, server, request id)
    posted = refused = 0
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            for server in servers:
                try:
                    logged = http.get(f"{server}/predictions", params={"after": cursors[server]}).json()
                except (httpx.HTTPError, ValueError):
                    continue
                seen = time.monotonic()
                for sequence, request_id in logged:
                    cursors[server] = max(cursors[server], int(sequence))
                    heapq.heappush(due, (seen + delay, server, str(request_id)))
            while due and due[0][0] <= time.monotonic():
                _, server, request_id = heapq.heappop(due)
                label = int(target[int(request_id.split(":", 1)[0])])
                try:
                    answer = http.post(f"{server}/feedback", json={"id": request_id, "label": label})
                except httpx.HTTPError:
                    heapq.heappush(due, (time.monotonic() + 1, server, request_id))  # try again
                    continue
                posted, refused = posted + (answer.status_code == 200), refused + (answer.status_code != 200)
            stop.wait(POLL)
    print(f"labelled {posted} predictions, {refused} refused", flush=True)


class Labeller:
    """The labelling process for these model servers, seen from the harness."""

    def __init__(self, servers: list[str], *, delay: float, log_dir: Path | None = None) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="modelrollout-labeller-"))
        argv = [sys.executable, "-m", "e2e.labeller", "--delay", str(delay)]
        for server in servers:
            argv += ["--server", server]
        self.log_path = (log_dir or self._workdir) / "labeller.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=Path(__file__).resolve().parents[1],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._stopper = weakref.finalize(self, stop_process, self.proc)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._workdir, ignore_errors=True)

    def close(self) -> None:
        self._stopper()
        self._cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="post each prediction's ground truth to its model server, late")
    parser.add_argument("--server", action="append", required=True, help="a model server's base URL (repeat)")
    parser.add_argument("--delay", type=float, required=True, help="seconds from a prediction to its label")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run(args.server, args.delay, stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
