"""`modelrollout-controller` with a memory census on request, for the soak (`bench.scale --soak
MxC --memory-census`): does memory that grows over cycles live in Python objects or in the C
allocator?

RSS alone cannot say whether growth is Python objects kept alive (a leak to fix) or the C
allocator's heap not given back to the system (fragmentation, arenas: a cost to bound). This runs
the same `controller.main.main()` and a thread that answers requests from the bench through files
in DIR (the first argument): for each `<name>.request` that appears it writes `<name>.json` with
- `blocks`: memory blocks Python's allocator has handed out and not freed (sys.getallocatedblocks);
- `objects`: objects the garbage collector tracks (containers: dicts, lists, class instances);
- glibc's own accounting (mallinfo2): `malloc_in_use` bytes handed out by malloc (Python's arenas
  included), `malloc_free` bytes free inside the heap but not returned, `mmapped` bytes;
and, if the request says `census`, `types`: the 40 commonest types among those objects, counted.

Nothing is traced per allocation: tracemalloc was tried first and made the controller's start-up
alone take minutes (every allocation records its stack), so the soak could not run as measured.
A census walks the objects once, between cycles, holding the GIL for well under a second at
1,000 rollouts.

Usage (what the bench runs): python -m bench.census_controller DIR <the controller's arguments>
"""

from __future__ import annotations

import ctypes
import gc
import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from controller.main import main

POLL_S = 0.5
TOP_TYPES = 40


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def malloc_stats() -> dict[str, int]:
    """glibc's mallinfo2 (glibc 2.33+); {} where there is none."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return {}
    info = libc.mallinfo2()
    return {"malloc_in_use": info.uordblks + info.hblkhd, "malloc_free": info.fordblks, "mmapped": info.hblkhd}


def census(with_types: bool) -> dict[str, Any]:
    objects = gc.get_objects()
    out: dict[str, Any] = {"blocks": sys.getallocatedblocks(), "objects": len(objects), **malloc_stats()}
    if with_types:
        out["types"] = dict(Counter(type(o).__qualname__ for o in objects).most_common(TOP_TYPES))
    del objects
    return out


def answer(requests: Path, stop: threading.Event) -> None:
    """Answer every request file that appears, until `stop`."""
    while not stop.wait(POLL_S):
        for request in sorted(requests.glob("*.request")):
            result = census(request.read_text().strip() == "census")
            request.unlink()
            # Written whole, then renamed: the bench never reads half a file.
            (requests / f"{request.stem}.tmp").write_text(json.dumps(result))
            (requests / f"{request.stem}.tmp").rename(requests / f"{request.stem}.json")


def run(argv: list[str]) -> int:
    requests = Path(argv[0])
    requests.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    threading.Thread(target=answer, args=(requests, stop), daemon=True, name="memory-census").start()
    try:
        return main(argv[1:])
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
