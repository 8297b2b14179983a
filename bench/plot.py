"""Cost per rollout against rollouts, drawn from `bench.scale --json` results as one SVG.

    python -m bench.plot OUT.svg RESULTS.json [RESULTS.json ...]

Two panels, x = rollouts the controller (or the set of shards) holds, log scale: the controller's
CPU per rollout (milliseconds of CPU per rollout per minute, all shards summed, over the steady
window) and its API requests per rollout per minute, progressing and settled apart. One point
per run, labelled with its rollouts, shards and evidence checkpoint (runs of one size differ in
those, so no line joins them); a cost per rollout that stays level as the rollouts grow is a
cost that grows with them and no faster. Plain SVG written by hand, so the bench needs no
plotting library.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from bench.scale import shard_names

W, H, PAD = 360, 260, 48
COLOURS = {"progressing": "#1f77b4", "settled": "#d62728", "all": "#2ca02c"}


def points(results: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float, str]]]]:
    """Per panel, per series: (rollouts held, cost, label) for each bench row."""
    cpu: list[tuple[float, float, str]] = []
    api_progressing: list[tuple[float, float, str]] = []
    api_settled: list[tuple[float, float, str]] = []
    for r in results:
        held = r["n"] + r.get("settled", 0)
        label = (
            f"{r['n']:,}"
            + (f"+{r['settled']:,}" if r.get("settled") else "")
            + (f" ({r['shards']} shards)" if r["shards"] > 1 else "")
            + (
                f", checkpoint {r['evidence_checkpoint']}"
                if r.get("evidence_checkpoint", "0s") not in ("0s", "0", "")
                else ""
            )
        )
        cores = sum((r.get("cpu_share") or {}).get(k, 0.0) for k in shard_names(r["shards"]))
        cpu.append((held, cores * 60_000 / held, label))
        api_progressing.append((held, r["api_per_rollout_min"], label))
        if r.get("settled"):
            api_settled.append((held, r["settled_api_per_rollout_min_beside"], label))
    return {
        "controller CPU, ms per rollout per minute": {"all": cpu},
        "API requests per rollout per minute": {"progressing": api_progressing, "settled": api_settled},
    }


def panel(x0: int, title: str, series: dict[str, list[tuple[float, float, str]]]) -> list[str]:
    every = [p for pts in series.values() for p in pts]
    xs = [p[0] for p in every]
    lo, hi = math.log10(min(xs)) - 0.2, math.log10(max(xs)) + 0.2
    top = max([p[1] for p in every] + [1e-9]) * 1.15

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            x0 + PAD + (math.log10(x) - lo) / (hi - lo) * (W - 2 * PAD),
            H - PAD - y / top * (H - 2 * PAD),
        )

    out = [
        f'<text x="{x0 + W / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>',
        f'<line x1="{x0 + PAD}" y1="{H - PAD}" x2="{x0 + W - PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{x0 + PAD}" y1="{PAD}" x2="{x0 + PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<text x="{x0 + W / 2}" y="{H - 10}" text-anchor="middle" font-size="11">rollouts held (log)</text>',
        f'<text x="{x0 + PAD - 4}" y="{PAD}" text-anchor="end" font-size="10">{top:.3g}</text>',
        f'<text x="{x0 + PAD - 4}" y="{H - PAD}" text-anchor="end" font-size="10">0</text>',
    ]
    for exponent in range(math.ceil(lo), math.floor(hi) + 1):
        x, _ = at(10**exponent, 0)
        out.append(f'<text x="{x}" y="{H - PAD + 14}" text-anchor="middle" font-size="10">{10**exponent:,}</text>')
    for n, (name, pts) in enumerate(series.items()):
        colour = COLOURS[name]
        # Points, not lines: runs of one size differ in shards and checkpoint, not in rollouts.
        placed = [(*at(x, y), text) for x, y, text in sorted(pts)]
        for px, py, text in placed:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"><title>{text}</title></circle>')
            out.append(f'<text x="{px + 4:.1f}" y="{py - 4:.1f}" font-size="9">{text}</text>')
        if len(series) > 1:
            out.append(
                f'<text x="{x0 + W - PAD}" y="{PAD + 12 * n}" text-anchor="end" font-size="10" fill="{colour}">{name}</text>'
            )
    return out


def svg(results: list[dict[str, Any]]) -> str:
    panels = points(results)
    body: list[str] = []
    for i, (title, series) in enumerate(panels.items()):
        body += panel(i * W, title, series)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * len(panels)}" height="{H}" font-family="sans-serif">'
        + "".join(body)
        + "</svg>\n"
    )


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    results = [row for path in argv[1:] for row in json.loads(Path(path).read_text())["scale"]]
    Path(argv[0]).write_text(svg(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
