"""Layering: the decision core is pure and imports only core and api; only controller.kube talks to the
kubernetes client; the comparator is a process of its own that the controller never imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "controller"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_no_client_library() -> None:
    for path in (PACKAGE / "core").rglob("*.py"):
        bad = {n for n in imports_of(path) if n.split(".")[0] in ("kubernetes", "httpx", "urllib3", "tenacity")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_core_imports_nothing_of_ours_outside_core_and_api() -> None:
    """The core owns its inputs (e.g. core.observation): adapters depend on it, never the reverse."""
    for path in (PACKAGE / "core").rglob("*.py"):
        ours = {n for n in imports_of(path) if n == "controller" or n.startswith("controller.")}
        bad = {n for n in ours if not n.startswith(("controller.core", "controller.api"))}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_only_controller_kube_imports_kubernetes() -> None:
    for path in PACKAGE.rglob("*.py"):
        if "kube" in path.relative_to(PACKAGE).parts[:1]:
            continue
        bad = {n for n in imports_of(path) if n.split(".")[0] == "kubernetes"}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_controller_never_imports_the_comparator() -> None:
    """The comparator is a process of its own (docs/architecture.md): nothing else imports it."""
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "comparator":
            continue
        bad = {n for n in imports_of(path) if n.startswith("controller.comparator")}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"
