"""`modelrollout-controller` with Python's allocation tracer on, for the soak (`bench.scale --soak
MxC --trace-memory`): where memory that grows over cycles lives.

RSS alone cannot say whether growth is Python objects kept alive (a leak to fix) or the C
allocator's heap not returned to the system (fragmentation, arenas: a cost to bound). This runs
the same `controller.main.main()` with `tracemalloc` started first (FRAMES frames per allocation),
and a thread that answers requests from the bench through files in DIR (the first argument):
for each `<name>.request` that appears it writes `<name>.json` with the traced bytes now and at
their peak and, if the request says `snapshot`, first `<name>.snapshot` (`tracemalloc.Snapshot.dump`,
without the tracer's own frames). The bench compares a snapshot after warm-up with one at the end, by line.

Bench only: tracing makes every allocation slower and adds memory of its own (its traces, about
the size of the traced heap again), so RSS under tracing is not the controller's RSS.

Usage (what the bench runs): python -m bench.traced_controller DIR <the controller's arguments>
"""

from __future__ import annotations

import json
import sys
import threading
import tracemalloc
from pathlib import Path

from controller.main import main

FRAMES = 8
POLL_S = 0.5


def answer(requests: Path, stop: threading.Event) -> None:
    """Write a snapshot for every request file that appears, until `stop`."""
    while not stop.wait(POLL_S):
        for request in sorted(requests.glob("*.request")):
            name = request.stem
            if request.read_text().strip() == "snapshot":
                snapshot = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
                )
                snapshot.dump(str(requests / f"{name}.snapshot"))
            current, peak = tracemalloc.get_traced_memory()
            request.unlink()
            # Written whole, then renamed: the bench never reads half a file.
            (requests / f"{name}.tmp").write_text(json.dumps({"traced": current, "peak": peak}))
            (requests / f"{name}.tmp").rename(requests / f"{name}.json")


def run(argv: list[str]) -> int:
    requests = Path(argv[0])
    requests.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(FRAMES)
    stop = threading.Event()
    threading.Thread(target=answer, args=(requests, stop), daemon=True, name="tracemalloc-snapshots").start()
    try:
        return main(argv[1:])
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
