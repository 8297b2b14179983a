"""kubectl-modelrollout: the CLI for SREs and CI pipelines (`kubectl modelrollout ...`)."""

from __future__ import annotations

import argparse
import sys

from controller import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl modelrollout",
        description="Inspect and steer ModelRollouts.",
    )
    parser.add_argument("--version", action="version", version=f"kubectl-modelrollout {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    return 0
